// ondemandctl's logic: one request over the control socket, one reply,
// printed for humans or as JSON. Exit codes: 0 done, 1 the supervisor
// refused or failed the command, 2 usage, 3 supervisor not reachable.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace ondemand::ctl {

enum Exit { OK = 0, REFUSED = 1, USAGE = 2, UNREACHABLE = 3 };

struct CallResult {
  nlohmann::json reply;  // null when unreachable
  std::string error;     // why unreachable
};

CallResult call(const std::filesystem::path& socket_path, const nlohmann::json& request,
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
std::string format_status(const nlohmann::json& status);

}  // namespace ondemand::ctl
