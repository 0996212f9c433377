// The fanotify front end's fills, done by the request engine: each cache
// file is an engine Target (its blob, opened through the configured backend,
// and a duplicate of the file's writer fd), and each fill is one engine
// fill on its pool, widened to the fill window (worker::fill_range, as for
// cachefiles) and resuming over what the file already holds: an event on a
// filled window costs a SEEK_HOLE, not a copy.
//
// A blob that cannot be opened, or whose size is not its cache file's, is
// logged once by name and every fill of that file fails with EIO (the reader
// gets an error, never bytes from the wrong blob). A fill fails exactly when
// it ends short of the asked range: one that fails further on, in the rest
// of its window, still allows the read (its bytes are there).
//
// Construct and fill on the engine's event-loop thread; completions come on
// pool threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "frontends/fanotify/filler.h"
#include "proto/blob_ref.h"

namespace ondemand::fanotify {

struct FillOptions {
  std::uint64_t window = 4 << 20;  // bytes; rounded to pages by the engine
  // A fill fails once it has landed nothing for this long.
  std::chrono::milliseconds stall_timeout{60'000};
};

class EngineFiller final : public RangeFiller {
 public:
  // refs[i] is the blob of the cache file with index i. Opens every blob
  // now, blocking (before the worker reads any event).
  EngineFiller(worker::Engine& engine, CacheFileSet& files, const std::vector<proto::BlobRef>& refs,
               FillOptions options);
  // One more cache file (or a file's blob again): opens its blob now,
  // blocking. A failure is logged by name; that file's fills fail with EIO.
  void add(const CacheFile& file, const proto::BlobRef& ref);
  void fill(CacheFile& file, std::uint64_t offset, std::uint64_t len, Done done) override;

 private:
  worker::Engine& engine_;
  FillOptions options_;
  std::vector<std::shared_ptr<worker::Target>> targets_;  // by cache-file index; null: unusable
};

}  // namespace ondemand::fanotify
