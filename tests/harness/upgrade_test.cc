// Rolling upgrade through `ondemandctl upgrade` (issue 9, hole 7): the reply
// says what happened however long the upgrade takes, and the binary it
// upgraded to is what the next crash restarts.
#include <signal.h>
#include <unistd.h>

#include <fstream>

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
