// Rolling upgrade through `ondemandctl upgrade` (issue 9, hole 7): the reply
// says what happened however long the upgrade takes, and the binary it
// upgraded to is what the next crash restarts.
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "tests/harness/harness.h"

using namespace ondemand::harness;
using namespace std::chrono_literals;

TEST_CASE("an upgrade slower than 5 s is reported done, and a crash afterwards restarts the new binary",
          "[harness][upgrade]") {
  // No spare: the crash below must go through a fresh start, which is what
  // forgot the new binary (a spare runs what the serving worker runs).
  SupervisorProcess sv({.config = {{"spare_worker", false}}});
  auto old_worker = sv.wait_serving();
  REQUIRE(old_worker);
  // The "new binary": the same worker, 6 s slow to start, so the upgrade
  // outlasts the control socket's 5 s request deadline.
  const auto new_binary = sv.dir() / "slow-new-worker.sh";
  std::ofstream(new_binary) << fmt::format("#!/bin/sh\nsleep 6\nexec {} \"$@\"\n", sv.binaries().worker.string());
  // 0755: the worker runs unprivileged (worker_user) and must exec it.
  std::filesystem::permissions(new_binary, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                               std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                                               std::filesystem::perms::others_exec);

  const auto start = Clock::now();
  const auto upgrade = sv.ctl({"upgrade", "--binary", new_binary.string()}, 40s);
  const double took_s = std::chrono::duration<double>(Clock::now() - start).count();
  INFO("upgrade took " << took_s << " s and printed: " << upgrade.out);
  CHECK(took_s > 5.0);
  CHECK(upgrade.rc == 0);
  CHECK_THAT(upgrade.out, Catch::Contains("upgraded"));
  auto new_worker = sv.wait_serving(10s, *old_worker);
  REQUIRE(new_worker);
  auto status = sv.status();
  REQUIRE(status);
  CHECK((*status)["worker"].value("binary", "") == new_binary.string());
  CHECK((*status).value("worker_binary", "") == new_binary.string());

  // Crash it: the restart runs the binary it was upgraded to.
  REQUIRE(::kill(*new_worker, SIGKILL) == 0);
  auto restarted = sv.wait_serving(20s, *new_worker);
  REQUIRE(restarted);
  status = sv.status();
  REQUIRE(status);
  CHECK((*status)["worker"].value("binary", "") == new_binary.string());
  CHECK(sv.device().open_missing(1) == -2);
}

// Property: the outgoing worker of an upgrade keeps reading the device until
// its successor answers its hello on the peer socket, which a real successor
// does only once it is set up and sandboxed: a successor slow to get ready
// costs readers nothing (issue 12 point 6, the stall a reader sees during a
// rolling upgrade: before, the outgoing worker stopped reading as soon as
// the successor's handshake with the supervisor was done). Here the
// successor is a fake that reads the outgoing worker's hello and never
// answers; an OPEN injected meanwhile must still be answered, and once the
// fake dies the upgrade is reported failed and the old worker serves on.
TEST_CASE("the outgoing worker serves until its successor answers on the peer socket", "[harness][upgrade]") {
  TempDir scripts;
  // The fake worker runs as worker_user (not root) and marks its progress here.
  std::filesystem::permissions(scripts.path(), std::filesystem::perms::all | std::filesystem::perms::sticky_bit);
  const auto script = scripts.path() / "script";
  std::ofstream(script)
      << R"(send {"type":"hello","role":"worker","proto_min":1,"proto_max":1,"version":"fake","pid":1})" "\n"
      << "recv\nrecv\nrecv keep\npeer-recv\nmark greeted\nhold\n";  // hello, device, handover-peer
  SupervisorProcess sv({.config = {{"spare_worker", false}},
                        .extra_env = {"ONDEMAND_FAKE_WORKER_SCRIPT=" + script.string()}});
  auto old_worker = sv.wait_serving();
  REQUIRE(old_worker);

  SupervisorProcess::CtlResult upgrade;
  std::thread ctl([&] { upgrade = sv.ctl({"upgrade", "--binary", fake_worker_binary().string()}, 30s); });
  const auto greeted = script.string() + ".greeted";
  for (auto deadline = Clock::now() + 10s; !std::filesystem::exists(greeted) && Clock::now() < deadline;)
    std::this_thread::sleep_for(10ms);
  const bool got_hello = std::filesystem::exists(greeted);
  CHECK(got_hello);
  // Well within the outgoing worker's 5 s wait for the answer.
  if (got_hello) CHECK(sv.device().open_missing(1, 2s) == -2);

  pid_t incoming = -1;
  if (auto s = sv.status(); s && (*s)["incoming_worker"].is_object()) incoming = (*s)["incoming_worker"].value("pid", -1);
  REQUIRE(incoming > 0);
  REQUIRE(::kill(incoming, SIGKILL) == 0);
  ctl.join();
  CHECK(upgrade.rc != 0);  // reported failed
  auto still = sv.wait_serving(10s);
  REQUIRE(still);
  CHECK(*still == *old_worker);
  CHECK(sv.device().open_missing(2) == -2);
}
