// Opening and binding /dev/cachefiles: the supervisor's one job that nobody
// else may do. The returned fd is the cache: when the last reference to this
// open file goes away the kernel unbinds the cache, fails pending requests
// with EIO and every mount on it dies.
#pragma once

#include <sys/types.h>

#include <stdexcept>

#include "config/config.h"
#include "common/unique_fd.h"

namespace ondemand::supervisor {

struct DeviceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct BoundCache {
  UniqueFd fd;
  dev_t rdev = 0;  // announced to workers so they can check what they got
};

inline constexpr const char* CACHEFILES_DEVICE = "/dev/cachefiles";

// Opens the device, writes `dir`, `tag`, `bind ondemand`. Throws DeviceError
// naming the step and the likely cause.
BoundCache bind_cache(const Config& config, const char* device_path = CACHEFILES_DEVICE);

}  // namespace ondemand::supervisor
