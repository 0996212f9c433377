// The supervisor's metrics endpoint: a minimal HTTP/1.0 responder for
// `GET /metrics` (Prometheus text format, metrics/exposition.h), on
// <state_dir>/metrics.sock (always; `curl --unix-socket`) and on the
// config's metrics_listen (a loopback TCP address or another Unix socket).
//
// It runs on the supervisor's event loop and must never stall it: a request
// is at most max_request_bytes (else 431), each connection has a deadline
// (then it is closed), and past max_connections a new connection gets 503
// at once. One request per connection; the reply closes it. Rendering is a
// read of the shared memory, so an answer costs no other process anything.
//
// The supervisor outlives its workers and the counters live in shared
// memory, so a scrape never sees them reset by a failover.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "config/config.h"

namespace ondemand::supervisor {

struct MetricsServerOptions {
  std::filesystem::path unix_path;             // usually <state_dir>/metrics.sock
  std::optional<ListenAddress> listen;         // config key metrics_listen
  std::size_t max_connections = 16;
  std::chrono::milliseconds deadline{5000};    // per connection, request and reply
  std::size_t max_request_bytes = 8192;
};

MetricsServerOptions metrics_options_from(const Config& config);

// The whole HTTP/1.0 reply to a request head (request line and headers up
// to the blank line): 200 with the exposition for GET /metrics (a query
// string is ignored), 404 for another path, 405 for another method, 400 for
// anything unparsable. Pure; `render` is called only for a 200.
std::string http_reply(std::string_view head, const std::function<std::string()>& render);
// A reply with `status` ("431 Request Header Fields Too Large", ...) and a
// one-line text body.
std::string http_error(std::string_view status, std::string_view body);
// True once `buffered` holds a complete request head.
bool head_complete(std::string_view buffered);

class MetricsServer {
 public:
  using Render = std::function<std::string()>;
  // Binds every endpoint it can; one that fails is logged and skipped (the
  // supervisor keeps the cache whatever happens to its metrics).
  MetricsServer(boost::asio::io_context& loop, MetricsServerOptions options, Render render);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Endpoints actually listening ("unix:/run/ondemand/metrics.sock",
  // "tcp:127.0.0.1:9464"), for logs and tests.
  const std::vector<std::string>& endpoints() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;  // handlers hold weak references
};

}  // namespace ondemand::supervisor
