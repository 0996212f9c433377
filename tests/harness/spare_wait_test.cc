// A failover that finds its spare still starting (spawned, no handshake
// yet) waits for it and promotes it, instead of starting a second process
// beside it (issue 12, recovery time): the spare is part-way through the
// start a fresh worker would begin from nothing.
//
// The spare is held in its start deterministically: worker_binary is a
// script that waits while a "hold" file exists, then execs the real worker.
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "tests/harness/harness.h"

using namespace ondemand::harness;

namespace {

struct HeldWorker {
  TempDir dir;
  std::filesystem::path script = dir.path() / "worker";
  std::filesystem::path hold = dir.path() / "hold";

  HeldWorker() {
    std::ofstream(script) << "#!/bin/sh\nwhile [ -e " << hold.string() << " ]; do /bin/sleep 0.02; done\nexec "
                          << find_binaries().worker.string() << " \"$@\"\n";
    REQUIRE(::chmod(script.c_str(), 0755) == 0);
  }
  void hold_starts() { std::ofstream(hold) << "held\n"; }
  void release_starts() { std::filesystem::remove(hold); }
};

// The spare that is not `not_pid`, as soon as the supervisor has spawned
// it (before its handshake, unlike wait_spare).
std::optional<pid_t> wait_spawned_spare(SupervisorProcess& sv, pid_t not_pid) {
  const auto deadline = Clock::now() + 10s;
  while (Clock::now() < deadline) {
    if (auto s = sv.status()) {
      const auto& w = (*s)["spare_worker"];
      if (w.is_object() && w.value("pid", -1) != not_pid) return w.value("pid", -1);
    }
    std::this_thread::sleep_for(20ms);
  }
  return std::nullopt;
}

bool log_has(SupervisorProcess& sv, const std::string& what, Clock::duration timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (sv.log().find(what) != std::string::npos) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

// Serving worker and spare ready, then the spare promoted by a kill while
// starts are held: returns {serving worker, spare still starting}.
std::pair<pid_t, pid_t> serving_with_held_spare(SupervisorProcess& sv, HeldWorker& held) {
  auto first = sv.wait_serving();
  REQUIRE(first);
  auto ready = sv.wait_spare();
  REQUIRE(ready);
  held.hold_starts();
  REQUIRE(::kill(*first, SIGKILL) == 0);
  auto promoted = sv.wait_serving(10s, *first);
  REQUIRE(promoted);
  CHECK(*promoted == *ready);
  auto starting = wait_spawned_spare(sv, *ready);
  REQUIRE(starting);
  return {*promoted, *starting};
}

// The serving worker killed while the spare is held in its start, and the
// failover seen waiting for that spare: returns {dead worker, spare}.
std::pair<pid_t, pid_t> failover_waiting_for_spare(SupervisorProcess& sv, HeldWorker& held) {
  const auto [serving, starting] = serving_with_held_spare(sv, held);
  REQUIRE(::kill(serving, SIGKILL) == 0);
  INFO(sv.log());
  REQUIRE(log_has(sv, fmt::format("spare worker pid={} is still starting", starting), 10s));
  return {serving, starting};
}

// Starts may go on: a fresh worker, not the awaited spare, serves after
// `dead`, with one more restore (first start, the promotion, this one).
void fresh_worker_serves(SupervisorProcess& sv, HeldWorker& held, pid_t dead, pid_t spare) {
  held.release_starts();
  auto next = sv.wait_serving(10s, dead);
  INFO(sv.log());
  REQUIRE(next);
  CHECK(*next != spare);
  CHECK(sv.device().wait_restores(3, 5s));
}

}  // namespace

// Property: the serving worker dies while the spare is still starting; the
// spare, once its handshake completes, is the next worker to serve, with
// exactly one `restore` for the failover, and no fresh worker was started.
// Before: a fresh worker was started at once and served instead.
TEST_CASE("a failover waits for a spare still in its start and promotes it", "[harness][spare-wait]") {
  HeldWorker held;
  SupervisorProcess sv({.config = {{"worker_binary", held.script.string()}}});
  const auto [serving, starting] = serving_with_held_spare(sv, held);
  REQUIRE(::kill(serving, SIGKILL) == 0);
  // The supervisor has handled the death once the dead worker leaves its
  // status; then the held starts may go on.
  const auto deadline = Clock::now() + 10s;
  for (;;) {
    auto s = sv.status();
    REQUIRE(s);
    if (!(*s)["worker"].is_object() || (*s)["worker"].value("pid", -1) != serving) break;
    REQUIRE(Clock::now() < deadline);
    std::this_thread::sleep_for(20ms);
  }
  std::this_thread::sleep_for(200ms);
  held.release_starts();
  auto next = sv.wait_serving(10s, serving);
  INFO(sv.log());
  REQUIRE(next);
  CHECK(*next == starting);
  CHECK(sv.device().wait_restores(3, 5s));  // first start, two takeovers
  std::this_thread::sleep_for(200ms);
  CHECK(sv.device().restores() == 3);
  CHECK(sv.log().find(fmt::format("spare worker pid={} is still starting", starting)) != std::string::npos);
  CHECK(sv.log().find("starting a fresh worker") == std::string::npos);
}

// Property: if the spare a failover waits for dies, a fresh worker starts
// at once and serves (the wait never leaves the device unread).
TEST_CASE("a failover whose awaited spare dies starts a fresh worker", "[harness][spare-wait]") {
  HeldWorker held;
  SupervisorProcess sv({.config = {{"worker_binary", held.script.string()}}});
  const auto [serving, starting] = failover_waiting_for_spare(sv, held);
  REQUIRE(::kill(starting, SIGKILL) == 0);
  INFO(sv.log());
  REQUIRE(log_has(sv, "the spare a failover was waiting for died: starting a fresh worker", 10s));
  fresh_worker_serves(sv, held, serving, starting);
}

// Property: `ondemandctl reload` while a failover waits for a starting
// spare retires that spare (it was started from the old config) and ends
// the wait: a fresh worker starts at once and serves. Before: the wait stayed
// armed with nothing to wait for, and the fresh worker started only when
// SPARE_AWAIT ran out (readers waited those 2 s).
TEST_CASE("a reload during a failover's wait for its spare starts a fresh worker at once",
          "[harness][spare-wait][reload]") {
  HeldWorker held;
  SupervisorProcess sv({.config = {{"worker_binary", held.script.string()}}});
  const auto [serving, starting] = failover_waiting_for_spare(sv, held);
  const auto r = sv.ctl({"reload"});
  INFO(sv.log());
  REQUIRE(r.rc == 0);
  REQUIRE(log_has(sv, "was started from the old config: starting a fresh worker", 10s));
  fresh_worker_serves(sv, held, serving, starting);
  // The wait ended with the reload, so its timer never fired.
  CHECK(sv.log().find("has no handshake after") == std::string::npos);
}
