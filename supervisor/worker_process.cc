#include "supervisor/worker_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <stdexcept>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "common/fd_passing.h"
#include "common/sandbox.h"
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

void log_given_back(const std::filesystem::path& state_dir, const std::vector<std::string>& names,
                    const WorkerIdentity& id) {
  if (names.empty()) return;
  spdlog::warn("state_dir {}: gave {} back to the worker's user {} (uid {} gid {}): they were not its own, "
               "which is what systemd's RuntimeDirectory= does at every start (it chowns everything in it to "
               "the unit's user); without it the worker could not reopen or replace them",
               state_dir.string(), fmt::join(names, " and "), id.user, id.uid, id.gid);
}

WorkerLaunch prepare_worker_launch(const Config& config, const std::filesystem::path& config_path,
                                   std::string shm_name) {
  WorkerLaunch out;
  out.shm_name = std::move(shm_name);
  out.sandboxed = config.sandbox_seccomp || config.sandbox_landlock;
  if (!config.sandbox_drop_privileges) return out;
  auto id = resolve_worker_identity(config);
  for (const auto& [key, path] : {std::pair{"blob_dir", config.blob_dir}, std::pair{"--config", config_path}})
    if (path.empty()) continue;  // no file to check (the supervisor writes the worker's config itself)
    else if (auto why = access_problem(std::filesystem::absolute(path), id.uid, id.gid); !why.empty())
      throw ConfigError(fmt::format("{} {}: the worker runs as {} (worker_user) and cannot read it: {}", key,
                                    path.string(), id.user, why));
  try {
    log_given_back(config.state_dir, open_state_dir_to_worker(config.state_dir, id.uid, id.gid), id);
  } catch (const std::runtime_error& e) {
    throw ConfigError(fmt::format("config key \"state_dir\": {}", e.what()));
  }
  out.identity = std::move(id);
  return out;
}

SpawnedWorker spawn_worker(const std::filesystem::path& binary, const std::vector<std::string>& args,
                           const WorkerLaunch& how) {
  auto pair = make_seqpacket_pair();
  if (pair.err) throw std::runtime_error("socketpair: " + sys::errno_name(pair.err));
  LaunchSpec spec;
  spec.binary = binary;
  spec.args = args;
  spec.env = environment_subset(WORKER_ENV);
  std::erase_if(spec.env, [](const std::string& e) { return e.starts_with(fmt::format("{}=", WORKER_SHM_FD_ENV)); });
#if defined(__SANITIZE_ADDRESS__)
  if (how.sandboxed) {
    static std::once_flag said;
    std::call_once(said, [] {
      spdlog::warn("sanitized build: LeakSanitizer is off in sandboxed workers (its exit-time check needs ptrace "
                   "and /proc, which seccomp and Landlock refuse); memory errors and undefined behaviour are still "
                   "reported, to the worker's stderr");
    });
    auto it = std::find_if(spec.env.begin(), spec.env.end(),
                           [](const std::string& e) { return e.starts_with("ASAN_OPTIONS="); });
    if (it == spec.env.end()) spec.env.push_back("ASAN_OPTIONS=detect_leaks=0");
    else *it += " detect_leaks=0";  // the last setting of a flag wins
  }
#endif
  spec.fds = {{proto::WORKER_CHANNEL_FD, pair.b.get()}};
  UniqueFd shm;
  if (!how.shm_name.empty()) {
    const auto path = "/dev/shm/" + how.shm_name;
    shm = UniqueFd{::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW)};
    if (!shm) throw std::runtime_error(fmt::format("open {}: {}", path, sys::errno_name(errno)));
    spec.fds.push_back({WORKER_SHM_FD, shm.get()});
    spec.env.push_back(fmt::format("{}={}", WORKER_SHM_FD_ENV, WORKER_SHM_FD));
  }
  if (how.identity) {
    spec.groups = std::vector<gid_t>{};
    spec.gid = how.identity->gid;
    spec.uid = how.identity->uid;
    spec.drop_capabilities = true;
    spec.no_new_privs = true;
  }
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
