// ondemand-chaos: kill -9 the worker at random while readers verify every
// byte; see tools/chaos/chaos.h. Usable on any node running
// ondemand-supervisor, not only in the VM tests.
#include <cstdio>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "common/log.h"
#include "proto/exit_codes.h"
#include "proto/channel.h"
#include "tools/chaos/chaos.h"

namespace {
constexpr int EXIT_FAILED = 1;
constexpr int EXIT_SETUP = 2;
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ondemand-chaos: mounts images through the daemon under fresh fsids, verifies\n"
               "the SHA-256 of every file with N readers while kill -9-ing the worker at\n"
               "random, and proves every failover (new pid, one more restore). The last line\n"
               "printed is a JSON report.\n"
               "Exit codes: 0 0 read errors, 0 mismatches and every kill proven; 1 a reader saw\n"
               "an error or a failover was not proven; 2 setup failed (no supervisor, bad\n"
               "manifest...); 64 usage.\n"
               "  ondemand-chaos manifest DIR > IMAGE.manifest   writes the manifest of a tree"};
  app.option_defaults()->always_capture_default();
  app.set_version_flag("--version", std::string(ondemand::proto::VERSION));
  ondemand::chaos::Options o;
  std::vector<std::string> images;
  std::string kill_ms = "5-200";
  app.add_option("--config", o.config, "the supervisor's configuration file");
  app.add_option("--image", images, "NAME=MANIFEST: blob NAME in blob_dir and its manifest (repeatable)");
  std::vector<std::string> registry_images;
  app.add_option("--registry-image", registry_images,
                 "NAME=MANIFEST,REGISTRY,REPOSITORY,DIGEST: an image served from a registry; each round binds\n"
                 "a fresh id NAME.c<round> to it over the control socket and unbinds it after (repeatable)");
  app.add_option("--mount-root", o.mount_root, "where rounds mount their images");
  app.add_option("--rounds", o.rounds, "minimum number of rounds");
  app.add_option("--min-kills", o.min_kills, "keep running rounds until this many kills");
  app.add_option("--readers", o.readers, "reader threads");
  app.add_option("--kill-interval-ms", kill_ms, "MIN-MAX delay before each kill, after the worker serves");
  app.add_flag("!--no-kill", o.kill, "verify only, kill nothing (baseline)");
  app.add_flag("--missing-blob", o.missing_blob, "also mount a missing blob each round; it must fail");
  app.add_option("--seed", o.seed, "random seed");
  app.add_option("--max-seconds", o.max_seconds, "stop starting rounds after this");
  app.add_option("--until-file", o.until_file, "after --rounds, keep starting rounds until this file exists");
  app.add_option("--stall-log", o.stall_log, "log read gaps >= --stall-log-ms as \"<boottime s> <gap ms>\"");
  app.add_option("--stall-log-ms", o.stall_log_ms, "threshold for --stall-log");
  bool summary = false;
  app.add_flag("--summary", summary, "before the JSON line, print the report for a person (a table with units)");

  // `manifest DIR`: the manifest of an image's tree (gen-tree.py's format).
  auto* manifest = app.add_subcommand("manifest", "print the manifest of directory DIR (e.g. an image's source "
                                                  "tree or a mounted image) for --image");
  std::string manifest_dir;
  manifest->add_option("DIR", manifest_dir, "the tree")->required();

  try {
    app.parse(argc, argv);
    if (!*manifest) {
      if (o.config.empty()) throw CLI::RequiredError("--config");
      if (images.empty() && registry_images.empty()) throw CLI::RequiredError("--image or --registry-image");
    }
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : static_cast<int>(ondemand::proto::ExitCode::USAGE);
  }
  if (!ondemand::init_logging("chaos").empty()) return static_cast<int>(ondemand::proto::ExitCode::USAGE);
  try {
    if (*manifest) {
      std::fputs(ondemand::chaos::make_manifest(manifest_dir).c_str(), stdout);
      return 0;
    }
    for (const auto& spec : images) {
      auto eq = spec.find('=');
      if (eq == std::string::npos) throw std::runtime_error("--image wants NAME=MANIFEST, got " + spec);
      o.images.push_back({spec.substr(0, eq), spec.substr(eq + 1), std::nullopt});
    }
    for (const auto& spec : registry_images) o.images.push_back(ondemand::chaos::parse_registry_image(spec));
    if (std::sscanf(kill_ms.c_str(), "%u-%u", &o.kill_min_ms, &o.kill_max_ms) != 2 || o.kill_min_ms > o.kill_max_ms)
      throw std::runtime_error("--kill-interval-ms wants MIN-MAX, got " + kill_ms);
    auto report = ondemand::chaos::run(o);
    const bool ok = ondemand::chaos::report_ok(report, o);
    if (summary) std::printf("%s\n", ondemand::chaos::format_report(report).c_str());
    std::printf("%s\n", report.dump().c_str());
    return ok ? 0 : EXIT_FAILED;
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return EXIT_SETUP;
  }
}
