// One HTTP exchange at a time per call, on libcurl easy handles taken from a
// small per-origin pool (so connections, and TLS sessions through a share
// handle, are reused), from any thread. Redirects are NOT followed here: the
// registry client follows them by hand so it decides which host gets which
// header. Every exchange is bounded: connect timeout, stall timeout (no byte
// for that long) and the caller's absolute deadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace ondemand::registry {

using Clock = std::chrono::steady_clock;

// Response header names lower-cased; a repeated header keeps its first value
// (WWW-Authenticate: the first challenge is the one we answer).
using Headers = std::map<std::string, std::string>;

// Receives the body of one response. begin() is called once, before the
// first body byte (or at the end when there is none); returning false from
// either aborts the transfer, which the caller then judges by its own state.
class BodySink {
 public:
  virtual ~BodySink() = default;
  virtual bool begin(long status, const Headers& headers) = 0;
  virtual bool write(std::span<const char> data) = 0;
};

struct HttpRequest {
  std::string method = "GET";  // GET or HEAD
  std::string url;
  // Full header lines, "Name: value". Never logged: they may carry secrets.
  std::vector<std::string> headers;
  Clock::time_point deadline;
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds stall_timeout{5000};
  std::string ca_file;  // empty: the system bundle
  BodySink* sink = nullptr;  // null: the body is kept (up to 1 MiB) in `body`
};

enum class Transport : std::uint8_t {
  ok,
  aborted_by_sink,  // the sink said stop; it knows whether that is success
  connect_failed,   // refused, unreachable, connect timeout
  tls_failed,       // certificate verification or handshake: never retried
  stalled,          // no byte for stall_timeout
  deadline,         // the request's deadline passed mid-transfer
  broken,           // reset, closed early, short body (Content-Length unmet)
  other,
};

struct HttpResponse {
  Transport transport = Transport::other;
  std::string transport_message;  // libcurl's text, no header values in it
  long status = 0;
  Headers headers;
  std::string body;             // only when the request had no sink
  std::int64_t content_length = -1;  // -1 when unknown
};

class HttpClient {
 public:
  HttpClient();
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  HttpResponse perform(const HttpRequest& request);

  // Number of exchanges performed, for tests and the bench.
  std::uint64_t requests() const;

 private:
  struct Pool;
  std::unique_ptr<Pool> pool_;
};

// "scheme://host:port" of an absolute URL, lower-cased; "" when unparsable.
std::string url_origin(const std::string& url);
// `location` resolved against `base` (absolute or relative); "" when invalid.
std::string resolve_url(const std::string& base, const std::string& location);
// The TCP port libcurl connects to for an absolute URL: the one it names,
// else its scheme's default (443, 80); 0 when unparsable.
std::uint16_t url_port(const std::string& url);

// Where libcurl looks for CA certificates when a request names no ca_file:
// the bundle and the hashed directory it was built with (CURLINFO_CAINFO,
// CURLINFO_CAPATH; libcurl 7.84+). Either is empty when it has none. With a
// ca_file, OpenSSL still consults `dir` for an issuer the file lacks.
struct CaStore {
  std::string file;
  std::string dir;
};
CaStore default_ca_store();

}  // namespace ondemand::registry
