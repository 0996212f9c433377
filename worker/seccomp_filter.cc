#include "worker/seccomp_filter.h"

#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>

#include <fmt/format.h>

namespace ondemand::worker {
namespace {

std::runtime_error failed(std::string_view step, int rc) {
  // libseccomp returns -errno.
  return std::runtime_error(fmt::format("seccomp: {}: {}", step, std::strerror(-rc)));
}

}  // namespace

const std::vector<std::string_view>& seccomp_allowed_syscalls() {
  static const std::vector<std::string_view> names = {
      // Reading, writing, the device, blobs, cache files (anonymous fds).
      "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
      "lseek", "ioctl", "fcntl", "close", "close_range", "dup", "dup2", "dup3", "pipe2", "flock", "ftruncate",
      "fsync", "fdatasync", "fallocate",
      // Files and directories: blobs (openat2 with RESOLVE_BENEATH, openat as
      // the fallback), serving.lock, worker.sock, the culler's walk as root.
      "openat", "openat2", "open", "newfstatat", "fstat", "stat", "lstat", "statx", "statfs", "fstatfs",
      "getdents64", "fchdir", "chdir", "getcwd", "readlink", "readlinkat", "access", "faccessat", "faccessat2",
      "unlink", "unlinkat", "rmdir", "rename", "renameat", "renameat2", "umask",
      // Sockets: the channel and worker.sock (SOCK_SEQPACKET with
      // SCM_RIGHTS), the journal (a datagram socket, a memfd for a large
      // entry), libcurl and name resolution for the registry backend.
      "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect", "shutdown", "sendmsg", "recvmsg",
      "sendto", "recvfrom", "sendmmsg", "recvmmsg", "getsockopt", "setsockopt", "getsockname", "getpeername",
      "memfd_create",
      // Asio's reactor and timers, poll for libcurl.
      "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd2", "timerfd_create",
      "timerfd_settime", "timerfd_gettime", "poll", "ppoll", "select", "pselect6",
      // Time and sleeping.
      "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
      // Threads (the I/O pool, the culler's scan thread) and their locks.
      "clone", "clone3", "futex", "set_robust_list", "get_robust_list", "rseq", "set_tid_address", "sched_yield",
      "sched_getaffinity", "membarrier", "gettid", "exit", "exit_group", "restart_syscall",
      // Memory.
      "mmap", "munmap", "mprotect", "mremap", "madvise", "brk",
      // Signals: asio's signal_set (SIGTERM/SIGINT), abort() on a broken
      // invariant (tgkill of itself), sigaltstack of the runtime.
      "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "tgkill",
      // Who am I, limits, randomness.
      "getpid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid", "getresgid",
      "uname", "prlimit64", "getrlimit", "getrandom", "sysinfo", "prctl",
      // fanotify front end: removing the mark of a cache file once complete
      // (reading events and answering them are read and write).
      "fanotify_mark",
  };
  return names;
}

void apply_seccomp_filter(bool network) {
  // The kernel refuses a filter from an unprivileged process without it; the
  // supervisor set it already for a sandboxed worker (common/spawn.h).
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
    throw std::runtime_error(fmt::format("seccomp: PR_SET_NO_NEW_PRIVS: {}", std::strerror(errno)));
  std::unique_ptr<void, decltype(&seccomp_release)> ctx(seccomp_init(SCMP_ACT_KILL_PROCESS), &seccomp_release);
  if (!ctx) throw std::runtime_error("seccomp: seccomp_init failed");
  // Every thread: the pool threads of a library we link could exist already.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_TSYNC, 1); rc < 0) throw failed("TSYNC", rc);
  // A call through another ABI (int 0x80, x32) is refused like any other,
  // for the whole process: libseccomp's default kills only the thread.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS); rc < 0)
    throw failed("bad-architecture action", rc);
  for (const std::string_view name : seccomp_allowed_syscalls()) {
    const std::string n(name);
    const int nr = seccomp_syscall_resolve_name(n.c_str());
    if (nr == __NR_SCMP_ERROR)
      throw std::runtime_error(fmt::format("seccomp: system call {} is unknown on this architecture", n));
    // A negative number is a call this architecture does not have (e.g.
    // `open` elsewhere than x86): libseccomp skips it.
    const int rc = name == "socket" && !network
                       ? seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, AF_UNIX))
                       : seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, nr, 0);
    if (rc < 0) throw failed(fmt::format("allowing {}", n), rc);
  }
  if (int rc = seccomp_load(ctx.get()); rc < 0) throw failed("loading the filter", rc);
}

}  // namespace ondemand::worker
