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
#include "common/sys.h"
#include "proto/handoff.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace ondemand::supervisor {

SpawnedWorker spawn_worker(const std::filesystem::path& binary, const std::vector<std::string>& args) {
  auto pair = make_seqpacket_pair();
  if (pair.err) throw std::runtime_error("socketpair: " + sys::errno_name(pair.err));

  // Everything the child needs is prepared before fork.
  std::vector<std::string> argv_storage{binary.string()};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int child_end = pair.b.get();
  sigset_t all;
  sigemptyset(&all);

  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork: " + sys::errno_name(errno));
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    ::sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
    if (child_end == proto::WORKER_CHANNEL_FD) {
      ::fcntl(child_end, F_SETFD, 0);
    } else if (::dup2(child_end, proto::WORKER_CHANNEL_FD) < 0) {
      ::_exit(127);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  pair.b.reset();
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    int err = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw std::runtime_error("pidfd_open: " + sys::errno_name(err));
  }
  ::fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  return {pid, UniqueFd{pidfd}, std::move(pair.a)};
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
