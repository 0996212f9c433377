// ondemandctl: drives a running ondemand-supervisor over its control socket.
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "common/config.h"
#include "proto/control.h"
#include "proto/handoff.h"
#include "supervisor/ctl.h"

int main(int argc, char** argv) {
  using namespace ondemand;
  CLI::App app{"ondemandctl: talks to ondemand-supervisor over <state_dir>/control.sock.\n"
               "Exit codes: 0 done, 1 the supervisor refused or failed the command,\n"
               "2 usage error, 3 supervisor not reachable."};
  app.require_subcommand(1);
  std::string config_path = "/etc/ondemand/ondemand.json";
  std::string state_dir;
  unsigned timeout_ms = 10000;
  app.add_option("--config", config_path, "configuration file, to find state_dir")->capture_default_str();
  app.add_option("--state-dir", state_dir, "state_dir, instead of reading --config");
  app.add_option("--timeout-ms", timeout_ms, "how long to wait for the reply")->capture_default_str();
  app.set_version_flag("--version", std::string(proto::VERSION));

  bool json = false;
  auto* status = app.add_subcommand("status", "show worker, state and counters");
  status->add_flag("--json", json, "print the raw JSON reply");
  app.add_subcommand("restart-worker", "gracefully restart the worker (also leaves the parked state)");
  app.add_subcommand("stop", "stop the worker and the supervisor (unbinds the cache: mounts die)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? ctl::OK : ctl::USAGE;
  }
  std::filesystem::path dir = state_dir;
  if (dir.empty()) {
    try {
      dir = load_config(config_path).state_dir;
    } catch (const ConfigError& e) {
      std::fprintf(stderr, "ondemandctl: %s\n", e.what());
      return ctl::USAGE;
    }
  }
  const std::string cmd = app.get_subcommands().front()->get_name();
  auto result = ctl::call(dir / std::string(proto::CONTROL_SOCKET_NAME),
                          {{"v", proto::CONTROL_VERSION}, {"cmd", cmd}},
                          std::chrono::milliseconds(timeout_ms));
  if (result.reply.is_null()) {
    std::fprintf(stderr, "ondemandctl: supervisor not reachable: %s\n", result.error.c_str());
    return ctl::UNREACHABLE;
  }
  if (!result.reply.value("ok", false)) {
    std::fprintf(stderr, "ondemandctl: %s: %s\n", cmd.c_str(), result.reply.value("error", "failed").c_str());
    if (json) std::cout << result.reply.dump() << "\n";
    return ctl::REFUSED;
  }
  if (cmd == "status" && !json)
    std::cout << ctl::format_status(result.reply);
  else if (json)
    std::cout << result.reply.dump() << "\n";
  else
    std::cout << result.reply.value("message", "ok") << "\n";
  return ctl::OK;
}
