// A client of one OCI distribution registry: blob sizes (HEAD) and blob
// ranges (GET with Range), blocking, for the worker's I/O pool threads.
//
// Contract of read(): on success `out` holds exactly the bytes
// [off, off + out.size()) of the blob. A ranged answer is trusted only as a
// 206 whose Content-Range is exactly that range and whose body has exactly
// that many bytes. A server that ignores Range (200 with the whole blob) is
// detected: when its Content-Length is the blob's size, the asked slice is
// cut out of the stream (bytes before it are discarded as they arrive, the
// transfer is stopped right after it: never the whole blob in memory);
// otherwise it is a PROTOCOL error. A short body is never returned.
//
// Failures are retried (connection errors, broken or stalled transfers, 429
// honouring Retry-After, 5xx) with capped exponential backoff and full
// jitter until the caller's deadline; then the error is TIMEOUT (or the last
// definite one). 404 is NOT_FOUND naming the digest, refused credentials are
// PERMISSION naming the registry. Nothing here logs a header value.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backends/registry/auth.h"
#include "backends/registry/error.h"
#include "backends/registry/http.h"

namespace ondemand::registry {

struct RegistryOptions {
  std::string registry;          // "host[:port]", no scheme
  bool insecure_http = false;    // plain http; only when the entry says so
  std::string ca_file;           // https: verify against this CA bundle
  std::filesystem::path credentials_file;  // basic credentials; empty: none
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds stall_timeout{5000};
  std::chrono::milliseconds backoff_initial{50};
  std::chrono::milliseconds backoff_max{2000};
  int max_redirects = 5;
};

struct BlobRef {
  std::string repository;  // "library/busybox"
  std::string digest;      // "sha256:<64 hex>"
};

// "" when valid, else why not (the distribution spec's name grammar; a
// digest of algorithm:hex with a sha256/sha512 hex length check).
std::string validate_repository(std::string_view repository);
std::string validate_digest(std::string_view digest);

// The URL a RegistryClient for `registry` ("host[:port]") builds its
// requests on: "https://host[:port]/", or http:// with insecure_http; ""
// when `registry` is not host[:port] (the client refuses it).
std::string registry_base_url(const std::string& registry, bool insecure_http);

// Parses `bytes first-last/total` (total may be `*`); nullopt when malformed.
struct ContentRange {
  std::uint64_t first = 0, last = 0;
  std::optional<std::uint64_t> total;
};
std::optional<ContentRange> parse_content_range(std::string_view value);

struct SizeResult {
  std::uint64_t size = 0;
  Error error;
};

struct ClientStats {
  std::uint64_t http_requests = 0;   // every exchange, token fetches included
  std::uint64_t token_fetches = 0;
  std::uint64_t coalesced_reads = 0;  // reads served by another read's fetch
  std::uint64_t retries = 0;
  std::uint64_t redirects_followed = 0;
  std::uint64_t redirects_dropped = 0;  // remembered targets that failed
};

class RegistryClient {
 public:
  // Throws std::invalid_argument naming the bad option (registry host,
  // missing CA file).
  explicit RegistryClient(RegistryOptions options);
  ~RegistryClient();

  SizeResult blob_size(const BlobRef& blob, Clock::time_point deadline);
  // `size_hint`: the blob's size when known (lets a Range-ignoring 200 be
  // cut down to the slice); 0 when unknown.
  Error read(const BlobRef& blob, std::uint64_t off, std::span<std::byte> out,
             Clock::time_point deadline, std::uint64_t size_hint = 0);

  const std::string& registry() const { return options_.registry; }
  ClientStats stats() const;

 private:
  class Exchange;
  struct Flight;

  Error fetch_range(const BlobRef& blob, std::uint64_t off, std::span<std::byte> out,
                    Clock::time_point deadline, std::uint64_t size_hint);
  std::string origin_url(const BlobRef& blob) const;
  std::optional<std::string> remembered_redirect(const std::string& blob_key);
  void remember_redirect(const std::string& blob_key, const std::string& url);
  void drop_redirect(const std::string& blob_key);

  RegistryOptions options_;
  std::string scheme_;
  std::string origin_;  // url_origin() of the registry
  HttpClient http_;
  TokenCache tokens_;
  std::unique_ptr<CredentialsFile> credentials_;

  std::mutex mutex_;
  std::map<std::string, Challenge> challenges_;  // by repository, from 401s
  std::map<std::string, std::string> redirects_;  // by repository@digest
  std::map<std::string, std::shared_ptr<Flight>> flights_;  // by blob and range

  std::atomic<std::uint64_t> coalesced_{0}, retries_{0}, redirects_followed_{0},
      redirects_dropped_{0};
};

}  // namespace ondemand::registry
