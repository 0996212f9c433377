// The control protocol: ondemandctl (or any operator tool) <-> supervisor.
//
// Transport: AF_UNIX SOCK_SEQPACKET at <state_dir>/control.sock, mode 0600.
// The supervisor checks the peer with SO_PEERCRED: uid 0, or a uid listed in
// the config key control_uids. One request per connection, one reply.
//
// Request: {"v": 1, "cmd": "<command>", ...arguments}
// Reply:   {"v": 1, "ok": true, ...}  or  {"v": 1, "ok": false, "error": "..."}
// A malformed or unknown request gets ok=false naming the problem; it never
// affects the supervisor.
//
// Commands (version 1):
//   status          -> worker, state, counters (see make_status in supervisor)
//   restart-worker  -> graceful stop of the worker, then a fresh one (unparks)
//   stop            -> supervisor stops its worker and exits (unbinds the cache)
//   upgrade [binary] -> rolling upgrade to `binary` (absolute path; default the
//                      configured worker); replies once the new worker serves,
//                      or with ok=false once the old one is serving again
//
// Changelog:
//   1  status, restart-worker, stop, upgrade.
#pragma once

#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

namespace ondemand::proto {

inline constexpr int CONTROL_VERSION = 1;
inline constexpr std::string_view CONTROL_SOCKET_NAME = "control.sock";
inline constexpr std::size_t CONTROL_MAX_BYTES = 64 * 1024;

struct ControlRequest {
  std::string cmd;
  nlohmann::json body;
};

// Validates envelope and command name; the error text goes back to the peer.
std::variant<ControlRequest, std::string> parse_control_request(std::string_view bytes);

nlohmann::json control_ok(nlohmann::json fields = nlohmann::json::object());
nlohmann::json control_error(std::string_view message);

}  // namespace ondemand::proto
