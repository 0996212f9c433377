// What the fanotify front end needs from the engine, and nothing more:
// "fill [offset, offset+len) of cache file `index`", one result per call.
// The engine being made front-end neutral will offer exactly that (fill a
// range of a target fd from blob B, one completion per fill); until then
// LocalBlobFiller does it with pread/pwrite from a local blob file, so the
// two can be swapped without touching the event loop.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "frontends/fanotify/cache_file.h"

namespace ondemand::fanotify {

class RangeFiller {
 public:
  virtual ~RangeFiller() = default;
  // Returns 0 when every byte of the range (clipped to the file) is in the
  // cache file, else an errno for FAN_DENY. Idempotent: filling a range
  // twice writes the same bytes (recovery relies on that).
  virtual int fill(CacheFile& file, std::uint64_t offset, std::uint64_t len) = 0;
};

// Reads blob `index` from sources[index] (a local file of the blob's bytes)
// and writes it through the cache file's writer fd. The range is widened to
// `window`-aligned boundaries (fill-ahead: a sequential reader costs one
// event per window) and clipped to the file size.
class LocalBlobFiller final : public RangeFiller {
 public:
  LocalBlobFiller(std::vector<UniqueFd> sources, std::uint64_t window);
  int fill(CacheFile& file, std::uint64_t offset, std::uint64_t len) override;

 private:
  std::vector<UniqueFd> sources_;
  std::uint64_t window_;
};

struct AlignedRange {
  std::uint64_t start = 0;
  std::uint64_t end = 0;  // exclusive
};
// [offset, offset+len) widened to `window` and clipped to `size`. Pure.
AlignedRange widen(std::uint64_t offset, std::uint64_t len, std::uint64_t size, std::uint64_t window);

}  // namespace ondemand::fanotify
