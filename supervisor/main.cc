// ondemand-supervisor: binds /dev/cachefiles in on-demand mode, holds that
// fd for its whole life, and keeps an ondemand-worker serving from it.
#include <signal.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "config/config.h"
#include "common/log.h"
#include "common/shared_state.h"
#include "proto/exit_codes.h"
#include "proto/channel.h"
#include "common/systemd.h"
#include "supervisor/adopt.h"
#include "supervisor/cache_device.h"
#include "supervisor/serving_guard.h"
#include "supervisor/supervisor.h"

int main(int argc, char** argv) {
  using ondemand::proto::ExitCode;
  CLI::App app{"ondemand-supervisor: binds /dev/cachefiles (cachefiles on-demand mode), holds the\n"
               "fd for its whole life and keeps an ondemand-worker serving from it, restarting\n"
               "it when it dies or hangs. Runs in the foreground and logs to stderr.\n"
               "With config frontend \"fanotify\" it holds a fanotify pre-content group and the\n"
               "cache files instead (Linux 6.14+; mounts are made by ondemandctl mount).\n"
               "At start it adopts a worker that outlived a previous supervisor (found through\n"
               "<state_dir>/worker.sock), else takes the bound device from systemd's fd store,\n"
               "else opens and binds /dev/cachefiles.\n"
               "Exit codes: 0 stopped by SIGTERM/SIGINT or ondemandctl stop, 64 usage,\n"
               "69 a running worker refused adoption (another supervisor?) or reads the device\n"
               "but does not answer on worker.sock, 70 internal error,\n"
               "74 cannot open or bind /dev/cachefiles (or, with frontend fanotify, create the\n"
               "fanotify group or a cache file), 78 configuration (or an unusable\n"
               "/dev/shm/ondemand-<tag>)."};
  std::string config_path;
  app.add_option("--config", config_path, "configuration file (JSON); see deploy/ondemand.json")
      ->required();
  app.set_version_flag("--version", std::string(ondemand::proto::VERSION));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : static_cast<int>(ExitCode::USAGE);
  }
  if (!ondemand::init_logging("supervisor").empty()) return static_cast<int>(ExitCode::USAGE);
  // SIGHUP (a closed terminal, `kill -HUP` out of habit) must not take the
  // cache down. There is nothing to reload in place; `ondemandctl
  // restart-worker` applies a new configuration. Workers get SIG_DFL back
  // at spawn.
  ::signal(SIGHUP, SIG_IGN);
  try {
    auto config = ondemand::load_config(config_path);
    spdlog::info("ondemand-supervisor {} starting with {}", ondemand::proto::VERSION, config_path);
    namespace sv = ondemand::supervisor;
    auto policy = sv::policy_options_from(config);
    // Claim what systemd passed (fd store) before anything else, even when a
    // worker is adopted below: otherwise fd 3 stays open and inheritable next
    // to the adopted copy, and LISTEN_* leak into every worker's environment.
    auto stored = ondemand::systemd::take_listen_fd("cachefiles");
    const bool fanotify = config.frontend == ondemand::Frontend::FANOTIFY;
    if (fanotify) {
      // 1. A fanotify worker that outlived its supervisor holds the group,
      // the record and the cache files: adopt it and take them back.
      // Nothing goes to the fd store: a group nobody can recover from is
      // no better held there (README: choosing a front end).
      stored.reset();
      if (auto adopted = sv::try_adopt(config.state_dir)) {
        if (!adopted->fanotify)
          throw sv::AdoptError("the running worker serves /dev/cachefiles but config key \"frontend\" is "
                               "\"fanotify\": stop it (or restore the config) first");
        sv::Supervisor supervisor(std::move(config), config_path, std::move(*adopted), policy);
        return supervisor.run();
      }
      std::optional<gid_t> worker_gid;
      if (config.sandbox_drop_privileges) worker_gid = ondemand::resolve_worker_identity(config).gid;
      auto group = sv::FanotifyCache::create(config, worker_gid);
      sv::Supervisor supervisor(std::move(config), config_path, std::move(group), policy);
      return supervisor.run();
    }
    // 1. A worker that outlived its supervisor holds the device: adopt it.
    // One that holds serving.lock but did not answer (handing over, its
    // worker.sock gone or unbindable) is retried, never run beside.
    auto adopted = sv::try_adopt(config.state_dir);
    if (!adopted) adopted = sv::adopt_serving_worker(config.state_dir);
    if (adopted && adopted->fanotify)
      throw sv::AdoptError("the running worker serves fanotify but config key \"frontend\" is \"cachefiles\": "
                           "stop it (or restore the config) first");
    if (adopted) {
      stored.reset();  // the same device; systemd keeps its own copy
      sv::Supervisor supervisor(std::move(config), config_path, std::move(*adopted), policy);
      return supervisor.run();
    }
    // 2. Under systemd the bound device may wait in the fd store.
    if (stored) {
      struct stat st{};
      if (::fstat(stored->get(), &st) == 0 && S_ISCHR(st.st_mode)) {
        spdlog::info("cache still bound: /dev/cachefiles fd came back from systemd's fd store");
        sv::Supervisor supervisor(std::move(config), config_path, sv::BoundCache{std::move(*stored), st.st_rdev},
                                  policy);
        return supervisor.run();
      }
      spdlog::warn("fd store entry \"cachefiles\" is not a character device; binding afresh");
    }
    // 3. Fresh start.
    auto cache = sv::bind_cache(config);
    sv::Supervisor supervisor(std::move(config), config_path, std::move(cache), policy);
    return supervisor.run();
  } catch (const ondemand::ConfigError& e) {
    spdlog::critical("{}", e.what());
    return static_cast<int>(ExitCode::CONFIG);
  } catch (const ondemand::SharedStateError& e) {
    // Someone else's, or an incompatible, segment under our name: restarting
    // will not help, and replacing it could cut off a live worker.
    spdlog::critical("{}", e.what());
    return static_cast<int>(ExitCode::CONFIG);
  } catch (const ondemand::supervisor::AdoptError& e) {
    spdlog::critical("{}", e.what());
    return static_cast<int>(ExitCode::HANDOFF_FAILED);
  } catch (const ondemand::supervisor::FanotifyError& e) {
    spdlog::critical("{}", e.what());
    return static_cast<int>(ExitCode::DEVICE_LOST);
  } catch (const ondemand::supervisor::DeviceError& e) {
    spdlog::critical("{}", e.what());
    return static_cast<int>(ExitCode::DEVICE_LOST);
  } catch (const std::exception& e) {
    spdlog::critical("internal error: {}", e.what());
    return static_cast<int>(ExitCode::INTERNAL);
  }
}
