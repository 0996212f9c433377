#include "worker/sandbox.h"

#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "common/sandbox.h"
#include "worker/landlock.h"
#include "worker/seccomp_filter.h"

namespace ondemand::worker {

SharedStateMapping attach_worker_shm(const std::string& name) {
  const char* text = std::getenv(std::string(WORKER_SHM_FD_ENV).c_str());
  if (text == nullptr) return SharedStateMapping::attach(name);
  int fd = -1;
  const auto [end, ec] = std::from_chars(text, text + std::strlen(text), fd);
  if (ec != std::errc() || *end != '\0' || fd < 0)
    throw SharedStateError(fmt::format("{}={} is not an fd number", WORKER_SHM_FD_ENV, text));
  auto mapping = SharedStateMapping::attach_fd(fd, name);
  ::close(fd);  // the mapping holds the segment; a spare fd is one more to leak
  return mapping;
}

bool culling_possible(const Config& config) {
  if (::geteuid() == 0) return true;
  if (config.cache_cull)
    spdlog::warn("culler off: the worker runs as uid {} and cannot walk cache_dir {} (cachefiles makes its "
                 "directories 0700 root); cache_dir is culled only by a worker with sandbox_drop_privileges false",
                 ::geteuid(), config.cache_dir.string());
  return false;
}

void lock_down(const Config& config) {
  if (config.sandbox_landlock) {
    // Only a root worker enters cache_dir (culling_possible); one that culls
    // also deletes what the kernel buried in its graveyard.
    const bool culls = config.cache_cull && ::geteuid() == 0;
    LandlockRules rules{.read_only = {config.blob_dir}, .read_write = {config.state_dir}, .read_remove = {}};
    (culls ? rules.read_remove : rules.read_only).push_back(config.cache_dir);
    LandlockOutcome landlock;
    try {
      landlock = restrict_file_access(rules);
    } catch (const std::runtime_error& e) {
      throw ConfigError(fmt::format("config key \"sandbox_landlock\": {} (false runs the worker without it)",
                                    e.what()));
    }
    if (landlock.applied)
      spdlog::info("sandbox: Landlock ABI {}: files only in blob_dir {} (read), cache_dir {} ({}), state_dir {} "
                   "(read/write)",
                   landlock.abi, config.blob_dir.string(), config.cache_dir.string(),
                   culls ? "read, remove: the culler empties its graveyard" : "read", config.state_dir.string());
    else
      spdlog::warn("sandbox: Landlock not applied, file access is not restricted: {}", landlock.why_not);
  }
  if (config.sandbox_seccomp) {
    try {
      apply_seccomp_filter();
    } catch (const std::runtime_error& e) {
      throw ConfigError(fmt::format("config key \"sandbox_seccomp\": {} (false runs the worker without it)",
                                    e.what()));
    }
    spdlog::info("sandbox: seccomp filter on: {} system calls allowed, any other kills the worker (SIGSYS)",
                 seccomp_allowed_syscalls().size());
  }
}

}  // namespace ondemand::worker
