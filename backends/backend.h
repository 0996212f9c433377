// Where blob bytes come from. Both operations are blocking and thread-safe:
// the engine calls them only from its I/O pool, never from the event loop,
// so a slow backend (an HTTP registry) costs pool threads, not latency of
// other requests.
//
// Every call carries a deadline. A backend that can wait (network) gives up
// by then with Kind::TIMEOUT; one that cannot be interrupted (a local pread)
// may ignore it: the engine also checks the deadline between its chunks. A
// timeout fails the one request it belongs to, never the worker.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "proto/blob_ref.h"

namespace ondemand::worker {

using Deadline = std::chrono::steady_clock::time_point;
inline constexpr Deadline NO_DEADLINE = Deadline::max();

struct BackendError {
  enum class Kind {
    NOT_FOUND,  // no such blob (or not bound here)
    ACCESS,     // the backend refused us (permissions, credentials)
    IO,         // reading failed (disk, network, a short file)
    TIMEOUT,    // the deadline passed
    INTEGRITY,  // bytes do not match what the reference promises (digest)
    PROTOCOL,   // the backend answered something we cannot use
    INVALID,    // the reference itself is refused (hostile id)
  };
  Kind kind = Kind::IO;
  int err = EIO;  // the errno a kernel reply carries (copen -err, FAN_DENY)
  std::string message;
};

std::string_view to_string(BackendError::Kind kind);
// ENOENT -> NOT_FOUND, EACCES/EPERM -> ACCESS, ETIMEDOUT -> TIMEOUT,
// EINVAL -> INVALID, anything else IO; `err` kept as given.
BackendError error_from_errno(int err, std::string message);
BackendError timeout_error(std::string message);

class Blob {
 public:
  virtual ~Blob() = default;
  virtual std::uint64_t size() const = 0;
  // Fills `out` from offset `off`; bytes past the end of the blob are zero.
  virtual std::optional<BackendError> read(std::uint64_t off, std::span<std::byte> out,
                                           Deadline deadline) = 0;
  // How many bytes one read() should ask for when the range is that long:
  // the engine copies a fill in pieces of this size (rounded to pages, 1 MiB
  // to 16 MiB). A local file reads well in 1 MiB pieces; a remote blob pays
  // a round trip per read, so it asks for more.
  virtual std::size_t read_unit() const { return std::size_t{1} << 20; }
};

struct OpenResult {
  std::shared_ptr<Blob> blob;         // null exactly when error is set
  std::optional<BackendError> error;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // `ref` has already passed proto::validate_blob_ref().
  virtual OpenResult open(const proto::BlobRef& ref, Deadline deadline) = 0;
  virtual std::string describe() const = 0;
};

}  // namespace ondemand::worker
