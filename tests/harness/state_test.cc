// Faults around the supervisor's state, outside the protocol (issue 9):
//   hole 5  a restarted supervisor that cannot reach the running worker
//           through worker.sock must not start a second reader of the device;
//   hole 12 losing state_dir while running must not end the supervisor.
// "Reader": a worker that was handed the device writes `restore` before its
// first read(); the harness sees every restore, so a second reader shows as
// one more restore (and as one more ondemand-worker on our config).
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "tests/harness/harness.h"

using namespace ondemand::harness;
namespace fs = std::filesystem;

namespace {

// Live ondemand-worker processes started for this supervisor's config.
std::set<pid_t> workers_of(SupervisorProcess& sv) {
  std::set<pid_t> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const auto name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline");
    std::stringstream s;
    s << in.rdbuf();
    const auto cmdline = s.str();
    const pid_t pid = std::stoi(name);
    if (cmdline.find("ondemand-worker") != std::string::npos &&
        cmdline.find(sv.config_path().string()) != std::string::npos && process_alive(pid))
      out.insert(pid);
  }
  return out;
}

// Watches for `span`: fails on any worker other than `only` or on any new
// restore.
void expect_single_reader(SupervisorProcess& sv, pid_t only, std::size_t restores, Clock::duration span) {
  const auto until = Clock::now() + span;
  while (Clock::now() < until) {
    const auto workers = workers_of(sv);
    INFO(fmt::format("restores: {}, device log:\n{}", sv.device().restores(), sv.device().written()));
    REQUIRE(sv.device().restores() == restores);
    for (pid_t w : workers) REQUIRE(w == only);
    std::this_thread::sleep_for(50ms);
  }
}

// One worker only: a spare holds the device too and would blur "who reads".
SupervisorOptions no_spare() {
  SupervisorOptions options;
  options.config = {{"spare_worker", false}};
  return options;
}

}  // namespace

// Property: with the serving worker unreachable on worker.sock (its socket
// file removed), a supervisor restarted through the fd-store path starts no
// worker of its own: it retries adoption for a bound, then exits 69 naming
// the worker that holds serving.lock. The old worker goes on serving alone.
TEST_CASE("a restarted supervisor refuses to start a second reader beside an unreachable worker",
          "[harness][state][hole5]") {
  SupervisorProcess sv(no_spare());
  auto serving = sv.wait_serving();
  REQUIRE(serving);
  REQUIRE(sv.device().wait_restores(1, 5s));
  const auto restores = sv.device().restores();
  REQUIRE(fs::remove(sv.state_dir() / "worker.sock"));

  sv.kill_and_restart();
  // The bound is 10 s (SERVING_WORKER_WAIT); watch through all of it.
  expect_single_reader(sv, *serving, restores, 11s);
  auto code = sv.wait_exit(10s);
  INFO(sv.log());
  REQUIRE(code);
  CHECK(*code == 69);
  CHECK_THAT(sv.log(), Catch::Contains("refusing to start a second reader") &&
                           Catch::Contains(fmt::format("pid {}", *serving)));
  REQUIRE(process_alive(*serving));
  CHECK(sv.device().open_missing(7) == -2);  // still served, by the old worker
  CHECK(sv.device().restores() == restores);
  ::kill(*serving, SIGKILL);
}

// Property: when worker.sock answers again within the bound (a handover that
// ends, a socket put back), the restarted supervisor adopts the running
// worker instead of starting one.
TEST_CASE("a restarted supervisor adopts a worker whose worker.sock comes back within the bound",
          "[harness][state][hole5]") {
  SupervisorProcess sv(no_spare());
  auto serving = sv.wait_serving();
  REQUIRE(serving);
  REQUIRE(sv.device().wait_restores(1, 5s));
  const auto restores = sv.device().restores();
  const auto sock = sv.state_dir() / "worker.sock";
  const auto away = sv.state_dir() / "worker.sock.away";
  fs::rename(sock, away);

  sv.kill_and_restart();
  expect_single_reader(sv, *serving, restores, 2s);
  fs::rename(away, sock);
  auto adopted = sv.wait_serving(15s);
  INFO(sv.log());
  REQUIRE(adopted);
  CHECK(*adopted == *serving);
  CHECK_THAT(sv.log(), Catch::Contains("adopted running worker"));
  expect_single_reader(sv, *serving, restores, 500ms);
  CHECK(sv.device().open_missing(8) == -2);
}

// Property (hole 12): state_dir removed while running. The supervisor stays
// up, recreates it and its control socket, and a worker death afterwards
// (which writes worker.pid there) is survived like any other.
TEST_CASE("losing state_dir does not end the supervisor; it recreates the dir and its control socket",
          "[harness][state][hole12]") {
  SupervisorProcess sv(no_spare());
  auto serving = sv.wait_serving();
  REQUIRE(serving);
  fs::remove_all(sv.state_dir());
  REQUIRE(::kill(*serving, SIGKILL) == 0);
  auto next = sv.wait_serving(10s, *serving);  // needs control.sock back
  INFO(sv.log());
  REQUIRE(sv.alive());
  REQUIRE(next);
  CHECK(fs::is_socket(sv.state_dir() / "control.sock"));
  CHECK(sv.device().open_missing(9) == -2);
  CHECK_THAT(sv.log(), Catch::Contains("recreated it and rebound the control socket"));
  std::this_thread::sleep_for(1500ms);  // no crash loop behind it
  REQUIRE(sv.alive());
}
