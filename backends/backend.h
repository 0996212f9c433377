// Where blob bytes come from. Two operations, both blocking and thread-safe:
// the engine calls them only from its I/O pool, never from the event loop,
// so a slow backend (an HTTP registry) costs pool threads, not latency of
// other requests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace ondemand::worker {

class Blob {
 public:
  virtual ~Blob() = default;
  virtual std::uint64_t size() const = 0;
  // Fills `out` from offset `off`; bytes past the end of the blob are zero.
  // Returns 0 or an errno.
  virtual int read(std::uint64_t off, std::span<std::byte> out) = 0;
};

struct OpenedBlob {
  std::shared_ptr<Blob> blob;  // null on error
  int err = 0;                 // errno: ENOENT missing, EACCES unreadable, ...
};

class Backend {
 public:
  virtual ~Backend() = default;
  // `id` has already passed validate_blob_id().
  virtual OpenedBlob open(std::string_view id) = 0;
  virtual std::string describe() const = 0;
};

}  // namespace ondemand::worker
