// ondemand-supervisor: binds /dev/cachefiles in on-demand mode, holds that
// fd for its whole life, and keeps an ondemand-worker serving from it.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "common/config.h"
#include "common/log.h"
#include "common/shared_state.h"
#include "proto/exit_codes.h"
#include "proto/handoff.h"
#include "supervisor/cache_device.h"
#include "supervisor/supervisor.h"

int main(int argc, char** argv) {
  using ondemand::proto::ExitCode;
  CLI::App app{"ondemand-supervisor: binds /dev/cachefiles (cachefiles on-demand mode), holds the\n"
               "fd for its whole life and keeps an ondemand-worker serving from it, restarting\n"
               "it when it dies or hangs. Runs in the foreground and logs to stderr.\n"
               "Exit codes: 0 stopped by SIGTERM/SIGINT, 64 usage, 78 configuration,\n"
               "74 cannot open or bind /dev/cachefiles, 70 internal error."};
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
  ondemand::init_logging("supervisor");
  try {
    auto config = ondemand::load_config(config_path);
    spdlog::info("ondemand-supervisor {} starting with {}", ondemand::proto::VERSION, config_path);
    auto cache = ondemand::supervisor::bind_cache(config);
    auto policy = ondemand::supervisor::policy_options_from(config);
    ondemand::supervisor::Supervisor supervisor(std::move(config), config_path, std::move(cache), policy);
    return supervisor.run();
  } catch (const ondemand::ConfigError& e) {
    spdlog::critical("{}", e.what());
    return static_cast<int>(ExitCode::CONFIG);
  } catch (const ondemand::supervisor::DeviceError& e) {
    spdlog::critical("{}", e.what());
    return static_cast<int>(ExitCode::DEVICE_LOST);
  } catch (const std::exception& e) {
    spdlog::critical("internal error: {}", e.what());
    return static_cast<int>(ExitCode::INTERNAL);
  }
}
