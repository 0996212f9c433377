// Reading fixed-width fields out of a kernel buffer whose alignment is not
// guaranteed: memcpy, never a cast. Callers check the bounds first.
#pragma once

#include <cstddef>
#include <cstring>
#include <span>

namespace ondemand::proto {

template <typename T>
T load(std::span<const std::byte> bytes, std::size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

}  // namespace ondemand::proto
