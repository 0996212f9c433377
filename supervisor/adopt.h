// Finding a worker that outlived its supervisor: it listens on
// <state_dir>/worker.sock and, once its old supervisor's channel is closed,
// hands a new supervisor its /dev/cachefiles fd (proto/channel.h, "adopt"),
// or, a fanotify worker, the group, the record and the cache files
// ("adopt-fanotify").
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "proto/channel.h"

namespace ondemand::supervisor {

// What a fanotify worker hands back: what the supervisor held for it.
struct AdoptedFanotify {
  UniqueFd group;
  UniqueFd record;
  std::vector<proto::msg::CacheFileEntry> entries;
  std::vector<UniqueFd> writers;  // one per entry
};

struct AdoptedWorker {
  pid_t pid = -1;
  UniqueFd pidfd;
  UniqueFd channel;
  UniqueFd device;                           // cachefiles
  std::optional<AdoptedFanotify> fanotify;   // or fanotify
  dev_t rdev = 0;
  std::uint64_t generation = 0;
  std::string version;
  bool serving = false;
};

struct AdoptError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// nullopt when no worker listens (no socket, or nobody behind it). Throws
// AdoptError when a worker answers but cannot be adopted (it still has a
// supervisor: starting a second one would be a mistake).
std::optional<AdoptedWorker> try_adopt(const std::filesystem::path& state_dir);

}  // namespace ondemand::supervisor
