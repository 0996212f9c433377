#include "common/spawn.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <grp.h>
#include <linux/capability.h>

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

#include "common/sys.h"

extern char** environ;

namespace ondemand {
namespace {

// Closes [first, last] in the child. close_range(2) is Linux 5.9+; the loop
// is the fallback for older kernels (both async-signal-safe).
void close_fds(unsigned first, unsigned last) {
  if (first > last) return;
  if (::syscall(SYS_close_range, first, last, 0) == 0) return;
  rlimit lim{};
  unsigned top = last;
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur - 1 < top)
    top = static_cast<unsigned>(lim.rlim_cur - 1);
  for (unsigned fd = first; fd <= top; ++fd) ::close(static_cast<int>(fd));
}

// The bounding set limits what any later exec can gain (file capabilities,
// a setuid-root binary); the ambient set what an exec keeps. Capabilities
// are numbered 0..CAP_LAST_CAP of the running kernel, which may know more
// than our headers: PR_CAPBSET_READ fails (EINVAL) past its last one.
bool drop_bounding_and_ambient() {
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) return false;
  for (unsigned long cap = 0; cap < 64; ++cap) {
    if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0) break;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) return false;
  }
  return true;
}

// capset(2) with every set empty (version 3: 64-bit sets, two words).
bool clear_capability_sets() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
  return ::syscall(SYS_capset, &header, data) == 0;
}

// Everything between fork and exec. Returns only on failure.
[[noreturn]] void exec_child(const LaunchSpec& spec, char* const* argv, char* const* envp,
                             const std::vector<FdMapping>& sorted, int floor) {
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);

  // Two passes, so a mapping whose source is another mapping's target is
  // not clobbered: first every source moves above all targets, then each
  // lands on its number (dup2 clears close-on-exec there).
  int moved[256];
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    moved[i] = ::fcntl(sorted[i].parent_fd, F_DUPFD_CLOEXEC, floor);
    if (moved[i] < 0) ::_exit(127);
  }
  for (std::size_t i = 0; i < sorted.size(); ++i)
    if (::dup2(moved[i], sorted[i].child_fd) < 0) ::_exit(127);

  // Close every fd >= 3 that is not a target, including the moved copies.
  unsigned next = 3;
  for (const auto& m : sorted) {
    const auto target = static_cast<unsigned>(m.child_fd);
    if (target < next) continue;
    if (target > next) close_fds(next, target - 1);
    next = target + 1;
  }
  close_fds(next, ~0U);

  if (spec.drop_capabilities && !drop_bounding_and_ambient()) ::_exit(127);
  if (spec.groups && ::setgroups(spec.groups->size(), spec.groups->data()) < 0) ::_exit(127);
  if (spec.gid && ::setresgid(*spec.gid, *spec.gid, *spec.gid) < 0) ::_exit(127);
  if (spec.uid && ::setresuid(*spec.uid, *spec.uid, *spec.uid) < 0) ::_exit(127);
  if (spec.drop_capabilities && !clear_capability_sets()) ::_exit(127);
  if (spec.no_new_privs && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) ::_exit(127);

  ::execve(argv[0], argv, envp);
  ::_exit(127);
}

}  // namespace

Launched launch(const LaunchSpec& spec) {
  // Everything the child needs is prepared before fork: no allocation after.
  auto sorted = spec.fds;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.child_fd < b.child_fd; });
  if (sorted.size() > 256) throw std::runtime_error(fmt::format("launch {}: too many fds", spec.binary.string()));
  int floor = 3;
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i].child_fd < 0 || sorted[i].parent_fd < 0 || (i > 0 && sorted[i].child_fd == sorted[i - 1].child_fd))
      throw std::runtime_error(fmt::format("launch {}: bad fd mapping {} -> {}", spec.binary.string(),
                                           sorted[i].parent_fd, sorted[i].child_fd));
    floor = std::max(floor, sorted[i].child_fd + 1);
  }
  std::vector<std::string> argv_storage{spec.binary.string()};
  argv_storage.insert(argv_storage.end(), spec.args.begin(), spec.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_storage = spec.env;
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);

  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(fmt::format("launch {}: fork: {}", spec.binary.string(), sys::errno_name(errno)));
  if (pid == 0) exec_child(spec, argv.data(), envp.data(), sorted, floor);

  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    const int err = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw std::runtime_error(fmt::format("launch {}: pidfd_open: {}", spec.binary.string(), sys::errno_name(err)));
  }
  // pidfd_open sets O_CLOEXEC on the new fd (Linux 5.3+, always).
  return {pid, UniqueFd{pidfd}};
}

std::vector<std::string> environment_subset(std::span<const std::string_view> names) {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) {
    const std::string_view entry{*e};
    const auto eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    const auto name = entry.substr(0, eq);
    for (auto want : names) {
      const bool prefix = !want.empty() && want.back() == '*';
      if (prefix ? name.starts_with(want.substr(0, want.size() - 1)) : name == want) {
        out.emplace_back(entry);
        break;
      }
    }
  }
  return out;
}

}  // namespace ondemand
