#include "supervisor/worker_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <fmt/format.h>

#include "common/fd_passing.h"
#include "common/spawn.h"
#include "common/sys.h"
#include "proto/channel.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace ondemand::supervisor {

namespace {
// What a worker may see of the supervisor's environment: its own settings
// and the locale/time basics, never NOTIFY_SOCKET or LISTEN_* (systemd talks
// to the supervisor only) nor anything else the supervisor happened to get.
// JOURNAL_STREAM: the worker inherits our stderr, systemd's journal stream,
// and logs to the journal with fields as we do (common/log.h).
constexpr std::string_view WORKER_ENV[] = {"ONDEMAND_*", "PATH", "TZ", "LANG", "LC_*", "JOURNAL_STREAM",
                                            "ASAN_OPTIONS", "TSAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"};
}  // namespace

SpawnedWorker spawn_worker(const std::filesystem::path& binary, const std::vector<std::string>& args) {
  auto pair = make_seqpacket_pair();
  if (pair.err) throw std::runtime_error("socketpair: " + sys::errno_name(pair.err));
  LaunchSpec spec;
  spec.binary = binary;
  spec.args = args;
  spec.env = environment_subset(WORKER_ENV);
  spec.fds = {{proto::WORKER_CHANNEL_FD, pair.b.get()}};
  auto child = launch(spec);
  return {child.pid, std::move(child.pidfd), std::move(pair.a)};
}

std::optional<ExitStatus> try_reap(int pidfd) {
  siginfo_t info{};
  for (;;) {
    int rc = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED | WNOHANG);
    if (rc == 0) break;
    if (errno == EINTR) continue;
    // ECHILD: not our child (adopted from a previous supervisor). The
    // caller saw the pidfd readable, so the process has exited.
    return ExitStatus{false, 0, false};
  }
  if (info.si_pid == 0) return std::nullopt;
  if (info.si_code == CLD_EXITED) return ExitStatus{true, info.si_status};
  return ExitStatus{false, info.si_status};
}

UniqueFd open_pidfd(pid_t pid) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) throw std::runtime_error(fmt::format("pidfd_open({}): {}", pid, sys::errno_name(errno)));
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return UniqueFd{fd};
}

std::size_t count_open_fds() {
  std::size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)entry;
    ++n;
  }
  return n - 1;  // the iterator's own directory fd
}

}  // namespace ondemand::supervisor
