#include "worker/sandbox.h"

#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "common/sandbox.h"

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

}  // namespace ondemand::worker
