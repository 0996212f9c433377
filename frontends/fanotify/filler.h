// What the fanotify front end needs from the engine, and nothing more:
// "fill [offset, offset+len) of cache file `index`", one completion per call.
// EngineFiller (engine_filler.h) is the real one: the request engine's
// fills, on its pool, from any backend. LocalBlobFiller is the minimal
// pread/pwrite from local blob files, completing inline; the event loop
// cannot tell them apart.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "frontends/fanotify/cache_file.h"

namespace ondemand::fanotify {

class RangeFiller {
 public:
  // 0 when every byte of the range (clipped to the file) is in the cache
  // file, else an errno for FAN_DENY.
  using Done = std::function<void(int err)>;
  virtual ~RangeFiller() = default;
  // Calls `done` exactly once, on any thread (inline, or a pool thread).
  // Idempotent: filling a range twice writes the same bytes (recovery relies
  // on that). `file` must outlive the call's completion.
  virtual void fill(CacheFile& file, std::uint64_t offset, std::uint64_t len, Done done) = 0;
};

// fill(), waiting for its completion on the calling thread (recovery, which
// finishes before the event loop runs). The filler must not complete on
// this thread's event loop.
int fill_now(RangeFiller& filler, CacheFile& file, std::uint64_t offset, std::uint64_t len);

// Reads blob `index` from sources[index] (a local file of the blob's bytes)
// and writes it through the cache file's writer fd. The range is widened to
// `window`-aligned boundaries (fill-ahead: a sequential reader costs one
// event per window) and clipped to the file size. Completes inline.
class LocalBlobFiller final : public RangeFiller {
 public:
  LocalBlobFiller(std::vector<UniqueFd> sources, std::uint64_t window);
  void fill(CacheFile& file, std::uint64_t offset, std::uint64_t len, Done done) override;

 private:
  int fill_sync(CacheFile& file, std::uint64_t offset, std::uint64_t len);
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
