// ondemandctl: drives a running ondemand-supervisor over its control socket.
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <iostream>

#include <CLI/CLI.hpp>

#include "config/config.h"
#include "proto/control.h"
#include "proto/channel.h"
#include "tools/ctl/ctl.h"
#include "tools/ctl/doctor.h"
#include "tools/ctl/top.h"

int main(int argc, char** argv) {
  using namespace ondemand;
  CLI::App app{"ondemandctl: talks to ondemand-supervisor over <state_dir>/control.sock.\n"
               "Exit codes: 0 done, 1 the supervisor refused or failed the command,\n"
               "2 usage error, 3 supervisor not reachable."};
  app.require_subcommand(1);
  std::string config_path = ONDEMAND_DEFAULT_CONFIG;
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
  app.add_subcommand("reload", "re-read and validate the config file; if valid, the next worker starts\n"
                               "from it (keys that need a supervisor restart are refused)");
  bool stop_force = false;
  auto* stop = app.add_subcommand("stop", "stop the worker and the supervisor (cachefiles: unbinds the cache, mounts\n"
                                          "die; fanotify: refused while an image is mounted from the cache, since\n"
                                          "its readers would read zeros over unfilled ranges)");
  stop->add_flag("--force", stop_force, "fanotify: stop even with images mounted");
  app.add_subcommand("metrics", "print the supervisor's Prometheus metrics (GET /metrics on\n"
                                "<state_dir>/metrics.sock, exactly what a scrape gets)");
  unsigned top_interval_ms = 1000;
  unsigned top_iterations = 0;
  auto* top = app.add_subcommand("top", "live view once a second: requests/s, MiB/s, in flight, READ p99,\n"
                                        "failovers (from metrics.sock); one line per interval when stdout\n"
                                        "is not a terminal");
  top->add_option("--interval-ms", top_interval_ms, "refresh interval")->capture_default_str()->check(
      CLI::Range(100u, 3600000u));
  top->add_option("-n,--iterations", top_iterations, "stop after this many refreshes (0: until ^C)")
      ->capture_default_str();
  bool top_screen = false, top_lines = false;
  auto* screen_flag = top->add_flag("--screen", top_screen, "redraw a screen even when stdout is not a terminal");
  top->add_flag("--lines", top_lines, "one line per interval even on a terminal")->excludes(screen_flag);
  app.add_subcommand("doctor", "check whether this host can run the daemon natively: kernel options,\n"
                               "/dev/cachefiles, cache_dir's file system (from --config), /dev/shm, root");
  std::string bind_id, bind_registry, bind_repository, bind_digest;
  std::optional<std::uint64_t> bind_size;
  auto* bind = app.add_subcommand("bind", "serve blob id ID from a registry blob (root only; durable in\n"
                                          "<data_dir>/bindings.json; the running worker sees it at once)");
  bind->add_option("ID", bind_id, "blob id (as in the mount's fsid/domain)")->required();
  bind->add_option("--registry", bind_registry, "host[:port], a key of the config's registries")->required();
  bind->add_option("--repository", bind_repository, "repository, e.g. library/busybox")->required();
  bind->add_option("--digest", bind_digest, "sha256:<64 hex>")->required();
  bind->add_option("--size", bind_size, "the blob's size in bytes (default: asked with HEAD)");
  std::string unbind_id;
  auto* unbind = app.add_subcommand("unbind", "remove the binding of blob id ID (root only)");
  unbind->add_option("ID", unbind_id, "blob id")->required();
  auto* list = app.add_subcommand("bindings", "list the blob bindings");
  list->add_flag("--json", json, "print the raw JSON reply");
  std::string mount_point;
  std::vector<std::string> mount_blobs;
  unsigned mount_wait_ms = 60000;
  auto* mount = app.add_subcommand(
      "mount", "frontend fanotify: mount an image file-backed at MOUNTPOINT. BLOB... are blob ids,\n"
               "the metadata blob first, then the data blobs (mkfs.erofs --blobdev); the supervisor\n"
               "makes their cache files, the worker fills the metadata blob whole, and the mount\n"
               "is made once it is (root only). Unmount with umount(8).");
  mount->add_option("MOUNTPOINT", mount_point, "an existing directory")->required();
  mount->add_option("BLOB", mount_blobs, "metadata blob id, then data blob ids")->required();
  mount->add_option("--wait-ms", mount_wait_ms, "how long to wait for the metadata blob")->capture_default_str();
  std::string binary;
  auto* upgrade = app.add_subcommand(
      "upgrade", "rolling upgrade: start a new worker, hand it the open objects, retire the old one;\n"
                 "returns once the new worker serves (exit 0) or the old one still serves (exit 1)");
  upgrade->add_option("--binary", binary, "absolute path of the new worker binary (default: worker_binary)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 says only "A subcommand is required" for a mistyped command:
    // name the word it did not know.
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i];
      if (arg == "--config" || arg == "--state-dir" || arg == "--timeout-ms") {
        ++i;
        continue;
      }
      if (arg.starts_with("-")) continue;
      bool known = false;
      for (const auto* sub : app.get_subcommands({})) known = known || sub->get_name() == arg;
      if (!known) {
        std::fprintf(stderr, "ondemandctl: unknown command \"%s\" (see ondemandctl --help)\n", argv[i]);
        return ctl::USAGE;
      }
      break;
    }
    int rc = app.exit(e);
    return rc == 0 ? ctl::OK : ctl::USAGE;
  }
  if (app.got_subcommand("doctor")) {
    // Needs no supervisor; the config is optional (it names cache_dir).
    std::optional<std::filesystem::path> cache_dir;
    try {
      cache_dir = load_config(config_path).cache_dir;
    } catch (const ConfigError& e) {
      std::fprintf(stderr, "ondemandctl: %s (cache_dir not checked)\n", e.what());
    }
    const auto checks = ctl::run_doctor(ctl::doctor_inputs_of_this_host(cache_dir));
    std::cout << ctl::format_doctor(checks);
    return ctl::doctor_exit_code(checks);
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
  if (cmd == "metrics") {
    // Not a control command: the metrics endpoint is its own socket.
    auto m = ctl::fetch_metrics(dir / std::string(METRICS_SOCKET_NAME), std::chrono::milliseconds(timeout_ms));
    if (m.http_status == 0) {
      std::fprintf(stderr, "ondemandctl: metrics not reachable: %s\n", m.error.c_str());
      return ctl::UNREACHABLE;
    }
    if (m.http_status != 200) {
      std::fprintf(stderr, "ondemandctl: metrics: HTTP %d: %s", m.http_status, m.body.c_str());
      return ctl::REFUSED;
    }
    std::cout << m.body;
    return ctl::OK;
  }
  if (cmd == "top") {
    ctl::TopOptions options;
    options.metrics_socket = dir / std::string(METRICS_SOCKET_NAME);
    options.interval = std::chrono::milliseconds(top_interval_ms);
    options.iterations = top_iterations;
    options.tty = top_screen || (!top_lines && ::isatty(STDOUT_FILENO) == 1);
    options.timeout = std::chrono::milliseconds(timeout_ms);
    return ctl::run_top(options);
  }
  proto::ControlRequest request = proto::control::Status{};
  if (cmd == "restart-worker") request = proto::control::RestartWorker{};
  if (cmd == "stop") request = proto::control::Stop{stop_force};
  if (cmd == "reload") request = proto::control::Reload{};
  if (cmd == "bind")
    request = proto::control::Bind{bind_id, bind_registry, bind_repository, bind_digest, bind_size};
  if (cmd == "unbind") request = proto::control::Unbind{unbind_id};
  if (cmd == "bindings") request = proto::control::ListBindings{};
  if (cmd == "mount") request = proto::control::AddBlobs{mount_blobs};
  if (cmd == "upgrade") {
    proto::control::Upgrade upgrade;
    if (!binary.empty()) {
      std::error_code ec;
      upgrade.binary = std::filesystem::absolute(binary, ec).string();
    }
    request = upgrade;
    timeout_ms = std::max(timeout_ms, 60000u);  // the supervisor bounds an upgrade well below this
  }
  auto result = ctl::call(dir / std::string(proto::CONTROL_SOCKET_NAME), request,
                          std::chrono::milliseconds(timeout_ms));
  if (!result.reply) {
    std::fprintf(stderr, "ondemandctl: %s: %s\n", result.raw.empty() ? "supervisor not reachable" : cmd.c_str(),
                 result.error.c_str());
    return ctl::UNREACHABLE;
  }
  if (const auto* error = std::get_if<proto::control::Error>(&*result.reply)) {
    std::fprintf(stderr, "ondemandctl: %s: %s\n", cmd.c_str(), error->error.c_str());
    if (json) std::cout << result.raw << "\n";
    return ctl::REFUSED;
  }
  if (const auto* files = std::get_if<proto::control::CacheFilesReply>(&*result.reply))
    return ctl::mount_cache_files(files->paths, mount_blobs, mount_point, std::chrono::milliseconds(mount_wait_ms));
  if (json)
    std::cout << result.raw << "\n";
  else if (const auto* status = std::get_if<proto::control::StatusReply>(&*result.reply))
    std::cout << ctl::format_status(*status);
  else if (const auto* upgraded = std::get_if<proto::control::Upgraded>(&*result.reply))
    std::cout << "upgraded: worker pid " << upgraded->pid << ", generation " << upgraded->generation
              << ", version " << upgraded->version << "\n";
  else if (const auto* list = std::get_if<proto::control::BindingsReply>(&*result.reply))
    std::cout << ctl::format_bindings(*list);
  else if (const auto* done = std::get_if<proto::control::Done>(&*result.reply))
    std::cout << done->message << "\n";
  return ctl::OK;
}
