// ondemand-chaos: proves that kill -9 of the worker breaks no reader.
//
// Each round mounts every image under a fresh fsid <image>.c<round> (a hard
// link of the blob in blob_dir or, for a registry image, a binding of that id
// made through the control socket and removed after the round), so every
// read is a cache miss; it lets N reader
// threads SHA-256 every file against the image's manifest, and unmounts.
// Meanwhile a killer waits for a serving worker, sleeps a random interval
// and kill -9s it, then proves the failover happened: a new pid, a new
// generation, and exactly one more start-time `restore` in the shared state.
// Recovery time is measured from the kill to the first request the new
// worker completed (shared state first_reply_ns), and split in two at the
// moment the new worker started reading the device (failover.serving_ns):
// getting a worker there (a spare's takeover, or a process start), then
// what it takes to the first reply (`restore`, the kernel re-sending, the
// re-OPENs of objects whose fds died with the worker, fills). Every timing
// is also reported by what the supervisor found of its spare at the kill.
//
// The last line printed is the JSON report.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ondemand::chaos {

struct ManifestEntry {
  enum Kind { FILE, SYMLINK, DIR } kind;
  std::string path;
  std::string sha256_or_target;  // hex digest for files, target for symlinks
};

// Parses tests/vm/gen-tree.py's manifest format; throws std::runtime_error
// naming the line on a malformed entry.
std::vector<ManifestEntry> parse_manifest(const std::string& text);

// The manifest of a directory tree (e.g. an image's source tree, or a mounted
// image), in that format: what `ondemand-chaos manifest DIR` prints. Throws
// std::runtime_error naming a path the format cannot hold (whitespace).
std::string make_manifest(const std::filesystem::path& root);

// Where a registry image's rounds bind their fresh ids (ondemandctl bind).
struct RegistrySource {
  std::string registry;    // a key of the config's "registries"
  std::string repository;
  std::string digest;      // "sha256:<64 hex>"
};

struct Image {
  std::string name;               // blob id in blob_dir (unused for a registry image)
  std::filesystem::path manifest;
  std::optional<RegistrySource> registry;
};

// "NAME=MANIFEST,REGISTRY,REPOSITORY,DIGEST" (--registry-image); throws
// std::runtime_error naming what is missing.
Image parse_registry_image(const std::string& spec);

struct Options {
  std::filesystem::path config;   // the supervisor's config (state_dir, blob_dir, tag)
  std::vector<Image> images;
  std::filesystem::path mount_root = "/mnt/chaos";
  unsigned rounds = 20;
  unsigned min_kills = 0;         // keep running rounds until this many kills
  unsigned readers = 4;
  unsigned kill_min_ms = 5;
  unsigned kill_max_ms = 200;
  bool kill = true;
  bool missing_blob = false;      // also mount a missing blob each round; it must fail
  std::uint64_t seed = 1;
  unsigned max_seconds = 1800;    // stop starting rounds after this
  // Keep starting rounds (beyond `rounds`) until this file exists: lets a
  // scenario keep reads going while it upgrades or restarts things.
  std::filesystem::path until_file;
  // Every gap between two completed read() calls of one reader that is at
  // least stall_log_ms long is logged here as "<CLOCK_BOOTTIME s> <gap ms>",
  // so a scenario can attribute stalls to its own events (/proc/uptime is
  // CLOCK_BOOTTIME too).
  std::filesystem::path stall_log;
  unsigned stall_log_ms = 20;
};

// What the supervisor found of its spare at one failover, told by which of
// the shared state's failover counters (proto/shm_layout.h
// FailoverCounters) grew between just before the kill and the next worker
// serving: exactly one grows by one per failover. UNKNOWN otherwise (a
// supervisor without these counters, or more than one failover).
enum class SpareAtKill { READY, STARTING, NONE, UNKNOWN };
struct FailoverSnapshot {
  std::uint64_t spare_ready = 0, spare_starting = 0, no_spare = 0, promoted = 0;
};
SpareAtKill classify_failover(const FailoverSnapshot& before, const FailoverSnapshot& after);
// "ready", "starting", "none", "unknown": the report's keys.
const char* to_string(SpareAtKill s);

// Runs the whole thing; returns the report. Throws on setup errors.
nlohmann::json run(const Options& options);

// True when the report shows no reader-visible failure and a proven
// failover for every kill.
bool report_ok(const nlohmann::json& report, const Options& options);

// The report for a person: counts, then a table of the two failover
// timings with units and what each one measures. Pure; a report missing a
// field shows "-" there rather than throwing.
std::string format_report(const nlohmann::json& report);

}  // namespace ondemand::chaos
