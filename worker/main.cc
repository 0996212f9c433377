// ondemand-worker: serves cachefiles on-demand requests. Started by
// ondemand-supervisor, which hands it /dev/cachefiles over fd 3.
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "config/config.h"
#include "common/log.h"
#include "proto/exit_codes.h"
#include "proto/channel.h"
#include "worker/fanotify_worker.h"
#include "worker/worker.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(ONDEMAND_TEST_TRIGGER)
// Test-only build (ondemand-worker-trigger, never installed): SIGUSR2 makes
// the worker call ptrace(2), which its seccomp filter does not allow, so
// the sandbox's kill path can be shown on a serving worker under readers
// (tests/fanotify/processes.sh "seccomp"). A raw system call is
// async-signal-safe, and the filter covers every thread (TSYNC).
#include <csignal>
#include <sys/syscall.h>
namespace {
void forbidden_call(int) { ::syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0); }
}  // namespace
#endif

int main(int argc, char** argv) {
#if defined(__SANITIZE_ADDRESS__)
  // A sanitized worker runs as worker_user inside Landlock: it can neither
  // create nor open the report files of log_path ("ERROR: Can't open file",
  // EACCES), so its report would be lost. Its stderr is the supervisor's
  // log, which the sanitizer gates scan (asan_harness, asan_vm_chaos).
  __sanitizer_set_report_fd(reinterpret_cast<void*>(static_cast<std::uintptr_t>(STDERR_FILENO)));
#endif
#if defined(ONDEMAND_TEST_TRIGGER)
  ::signal(SIGUSR2, forbidden_call);
#endif
  using ondemand::proto::ExitCode;
  CLI::App app{"ondemand-worker: serves Linux cachefiles on-demand requests (EROFS over fscache),\n"
               "or, with config frontend \"fanotify\", fanotify pre-content events on cache files.\n"
               "Normally started by ondemand-supervisor, which passes /dev/cachefiles over the\n"
               "channel fd. Exit codes: 0 stopped, 64 usage, 69 handoff failed, 70 internal,\n"
               "74 device I/O, 75 temporary, 78 configuration."};
  std::string config_path;
  int channel_fd = ondemand::proto::WORKER_CHANNEL_FD;
  app.add_option("--config", config_path, "configuration file (JSON)")->required();
  app.add_option("--channel-fd", channel_fd, "inherited supervisor channel (SOCK_SEQPACKET)");
  app.set_version_flag("--version", std::string(ondemand::proto::VERSION));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : static_cast<int>(ExitCode::USAGE);
  }
  if (!ondemand::init_logging("worker").empty()) return static_cast<int>(ExitCode::USAGE);
  // Each open object holds two fds (its anonymous fd and its blob's): take
  // the whole hard limit for them (a shell's soft limit is often 1024; the
  // systemd unit sets LimitNOFILE), before the sandbox. Past it, OPENs are
  // refused (EMFILE) unless max_open_objects keeps the worker below it.
  if (rlimit lim{}; ::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    const auto soft = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0)
      spdlog::warn("cannot raise the open-file limit from {}: {}", soft, std::strerror(errno));
  }
  try {
    auto config = ondemand::load_config(config_path);
    if (config.frontend == ondemand::Frontend::FANOTIFY) {
      ondemand::worker::FanotifyWorker worker(std::move(config), ondemand::UniqueFd{channel_fd});
      return static_cast<int>(worker.run());
    }
    ondemand::worker::Worker worker(std::move(config), ondemand::UniqueFd{channel_fd});
    return static_cast<int>(worker.run());
  } catch (const ondemand::ConfigError& e) {
    spdlog::critical("{}", e.what());
    return static_cast<int>(ExitCode::CONFIG);
  } catch (const std::exception& e) {
    spdlog::critical("internal error: {}", e.what());
    return static_cast<int>(ExitCode::INTERNAL);
  }
}
