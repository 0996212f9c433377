// The monotonic clock in seconds, for the VM benchmark tools.
#pragma once

#include <time.h>

namespace vt {

inline double now_s() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace vt
