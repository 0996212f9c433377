// What a worker holds: exactly what it was given (stdio, its channel, the
// device) and what it opens itself (event loop, timers, signal pipe, the
// worker.sock listener, shared memory, blob_dir). Never a pidfd (it could
// signal or wait for its siblings) and never a socket or pipe the supervisor
// holds (a leaked supervisor-side channel end of another worker keeps that
// channel open after the supervisor dies, and lets a worker speak for a
// sibling). Checked at every way a worker comes to life: first start, warm
// spare, spare promotion, and an upgrade whose new worker is killed.
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <regex>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "tests/harness/harness.h"

using namespace ondemand::harness;

namespace {

// Kinds of fd a worker may hold besides 0..2; anything else was leaked to
// it. Sockets and pipes are allowed only when the supervisor does not hold
// the same one.
bool allowed_kind(const SupervisorProcess& sv, const std::string& link) {
  static const std::regex own(R"(^(socket|pipe):\[\d+\]$|^anon_inode:\[(eventpoll|eventfd|timerfd|signalfd|io_uring)\]$|^anon_inode:inotify$)");
  if (std::regex_match(link, own)) return true;
  if (link == "/dev/ptmx" || link == "/dev/pts/ptmx") return true;  // the device
  if (link == "/dev/shm/ondemand-" + sv.tag()) return true;
  if (link == (sv.state_dir() / "serving.lock").string()) return true;  // common/serving_lock.h
  for (const auto& dir : {sv.blob_dir(), sv.state_dir(), sv.dir() / "cache"})
    if (link == dir.string()) return true;
  return false;
}

// The culler keeps the worker's starting directory open to fchdir back to
// after each `cull` (frontends/cachefiles/cull.cc): that is the worker's own
// cwd, which it inherits from the supervisor.
bool own_cwd(pid_t worker, const std::string& link) {
  std::error_code ec;
  return link == std::filesystem::read_symlink(fmt::format("/proc/{}/cwd", worker), ec).string();
}

// Checks one process that the supervisor spawned (a worker, or a stand-in
// binary of an upgrade). `full`: also require that every fd is of a kind a
// worker has a reason to hold (false for stand-ins that are not workers).
void check_worker_fds(SupervisorProcess& sv, pid_t worker, const char* role, bool full = true) {
  const auto table = fd_table(worker);
  const auto supervisor_table = fd_table(sv.pid());
  std::set<std::uint64_t> supervisor_inodes;
  for (const auto& [fd, link] : supervisor_table)
    if (auto inode = socket_or_pipe_inode(link)) supervisor_inodes.insert(*inode);
  INFO(fmt::format("{} pid={} fds:\n{}supervisor pid={} fds:\n{}", role, worker, describe(table), sv.pid(),
                   describe(supervisor_table)));
  REQUIRE(!table.empty());
  std::vector<std::string> problems;
  if (!table.count(3)) problems.push_back("no channel on fd 3");
  for (const auto& [fd, link] : table) {
    if (link == "anon_inode:[pidfd]") {
      problems.push_back(fmt::format("fd {} is a pidfd", fd));
      continue;
    }
    if (fd <= 2) continue;  // stdio is the supervisor's to share (it may be one pipe)
    if (auto inode = socket_or_pipe_inode(link); inode && supervisor_inodes.count(*inode))
      problems.push_back(fmt::format("fd {} ({}) is also held by the supervisor", fd, link));
    else if (full && !allowed_kind(sv, link) && !own_cwd(worker, link))
      problems.push_back(fmt::format("fd {} ({}) is nothing a worker opens or is given", fd, link));
  }
  CHECK(problems == std::vector<std::string>{});
}

}  // namespace

// Property: the first worker, the warm spare and a promoted spare hold no
// pidfd and no supervisor-side socket/pipe (issue 8, fd leak into spares).
TEST_CASE("workers hold only their own fds: first start, spare, promoted spare", "[harness][fds][fixed-by-lead]") {
  SupervisorProcess sv;
  auto serving = sv.wait_serving();
  REQUIRE(serving);
  auto spare = sv.wait_spare();
  REQUIRE(spare);
  check_worker_fds(sv, *serving, "serving worker");
  check_worker_fds(sv, *spare, "spare worker");

  // Failover: the spare is promoted, and a new spare starts beside it.
  REQUIRE(::kill(*serving, SIGKILL) == 0);
  auto promoted = sv.wait_serving(10s, *serving);
  REQUIRE(promoted);
  CHECK(*promoted == *spare);
  auto next_spare = sv.wait_spare(10s, *spare);
  REQUIRE(next_spare);
  check_worker_fds(sv, *promoted, "promoted spare");
  check_worker_fds(sv, *next_spare, "spare spawned after the promotion");
  CHECK(sv.device().open_missing(1) == -2);
}

// Property: an upgrade's incoming worker gets no pidfd and no
// supervisor-side fd, and after it is killed mid-upgrade the old worker
// serves on and the next spare is clean too (issue 8, fd leak into upgrade
// workers).
TEST_CASE("an interrupted upgrade leaks no fd into the incoming worker or the next spare",
          "[harness][fds][upgrade][fixed-by-lead]") {
  SupervisorProcess sv;
  auto serving = sv.wait_serving();
  REQUIRE(serving);
  REQUIRE(sv.wait_spare());
  // The "new binary" never says hello: it just holds what it was given, so
  // its fd table is exactly what the supervisor handed it at exec.
  const auto stand_in = sv.dir() / "stuck-worker.sh";
  std::ofstream(stand_in) << "#!/bin/sh\nexec sleep 1000\n";
  // 0755: the worker user (worker_user, not root) execs it.
  std::filesystem::permissions(stand_in, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                             std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                                             std::filesystem::perms::others_exec);

  std::thread upgrade([&] { sv.ctl({"upgrade", "--binary", stand_in.string()}, 30s); });
  pid_t incoming = -1;
  const auto deadline = Clock::now() + 10s;
  while (incoming < 0 && Clock::now() < deadline) {
    if (auto s = sv.status(); s && (*s)["incoming_worker"].is_object()) incoming = (*s)["incoming_worker"].value("pid", -1);
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE(incoming > 0);
  // Wait for exec to complete (sleep runs), so the table is the inherited one.
  for (int i = 0; i < 200; ++i) {
    std::ifstream comm(fmt::format("/proc/{}/comm", incoming));
    std::string name;
    comm >> name;
    if (name == "sleep") break;
    std::this_thread::sleep_for(10ms);
  }
  check_worker_fds(sv, incoming, "incoming worker of an upgrade", /*full=*/false);
  REQUIRE(::kill(incoming, SIGKILL) == 0);
  upgrade.join();

  auto still = sv.wait_serving(10s);
  REQUIRE(still);
  CHECK(*still == *serving);
  CHECK(sv.device().open_missing(1) == -2);
  auto spare = sv.wait_spare(15s);
  REQUIRE(spare);
  check_worker_fds(sv, *serving, "worker that served through the failed upgrade");
  check_worker_fds(sv, *spare, "spare spawned after the failed upgrade");
}
