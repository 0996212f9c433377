// ondemandctl's logic: one request over the control socket, one reply,
// printed for humans or as JSON. Exit codes: 0 done, 1 the supervisor
// refused or failed the command, 2 usage, 3 supervisor not reachable.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <optional>

#include "proto/control.h"

namespace ondemand::ctl {

enum Exit { OK = 0, REFUSED = 1, USAGE = 2, UNREACHABLE = 3 };

// One datagram out, one back, untyped: `bytes` is the reply, or empty with
// `error` saying why there is none.
struct RawResult {
  std::string bytes;
  std::string error;
};
RawResult call_raw(const std::filesystem::path& socket_path, std::string_view request,
                   std::chrono::milliseconds timeout);

// `request` and its decoded reply. `raw` is what the supervisor sent (for
// --json); `reply` is empty when it was unreachable or its reply could not
// be decoded, and `error` says which.
struct CallResult {
  std::optional<proto::ControlReply> reply;
  std::string raw;
  std::string error;
};
CallResult call(const std::filesystem::path& socket_path, const proto::ControlRequest& request,
                std::chrono::milliseconds timeout);

// `ondemandctl metrics`: GET /metrics over <state_dir>/metrics.sock (the
// supervisor's metrics endpoint, not the control socket), so it prints
// exactly what Prometheus scrapes.
struct MetricsResult {
  int http_status = 0;  // 0 when unreachable
  std::string body;     // the exposition (200) or the server's reason
  std::string error;    // why unreachable or unparsable
};
MetricsResult fetch_metrics(const std::filesystem::path& socket_path, std::chrono::milliseconds timeout);

// Splits an HTTP/1.x reply into status and body. Pure.
MetricsResult parse_http_reply(std::string_view reply);

// The `status` reply as an aligned table.
std::string format_status(const proto::control::StatusReply& status);

// The `bindings` reply, one line per binding (ID REGISTRY REPOSITORY DIGEST SIZE).
std::string format_bindings(const proto::control::BindingsReply& reply);

// `ondemandctl mount`'s second half, once the supervisor made the cache
// files (`paths`, in `blobs` order): wait until the metadata blob's cache
// file (paths[0]) has no hole, then mount it file-backed at `mount_point`
// with the others as `device=`. Prints what it did; returns an exit code.
int mount_cache_files(const std::vector<std::string>& paths, const std::vector<std::string>& blobs,
                      const std::string& mount_point, std::chrono::milliseconds wait);

}  // namespace ondemand::ctl
