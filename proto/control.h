// The control protocol: ondemandctl (or any operator tool) <-> supervisor,
// typed.
//
// Transport: AF_UNIX SOCK_SEQPACKET at <state_dir>/control.sock, mode 0600.
// The supervisor checks the peer with SO_PEERCRED: uid 0, or a uid listed in
// the config key control_uids. One request per connection, one reply, each
// one datagram of at most CONTROL_MAX_BYTES.
//
// Request: {"v": 1, "cmd": "<command>", ...arguments}
// Reply:   {"v": 1, "ok": true, ...}  or  {"v": 1, "ok": false, "error": "..."}
//
// Every request and reply is a struct below; every wire field name is
// spelled only in control.cc. decode_request() and decode_reply() never
// throw: bytes that are not a JSON object, a missing or mistyped "v", "cmd"
// or "ok", another protocol version, an unknown command, a missing required
// field, a field of another type or out of range are an error string naming
// the command and the field. Unknown fields are ignored (a newer peer may
// add some). The supervisor answers a request it cannot decode with an
// Error reply naming the problem; it never affects the supervisor.
//
// Commands (version 1) and the reply each gets when it succeeds:
//   status          -> StatusReply: supervisor, worker(s), state, counters
//   restart-worker  -> Done: graceful stop of the worker, then a fresh one
//                      (also leaves the parked state)
//   stop            -> Done: the supervisor stops its worker and exits
//                      (unbinds the cache)
//   upgrade [binary] -> Upgraded: rolling upgrade to `binary` (absolute
//                      path; default the configured worker); replies once
//                      the new worker serves, or with an Error once the old
//                      one is serving again
//   reload          -> Done: the supervisor re-reads and validates its config
//                      file and, if valid, makes it the snapshot the next
//                      worker starts from; an invalid file or a change to a
//                      key only a supervisor restart applies is an Error
//                      naming the key, and the old config stays
//   bind id registry repository digest [size]
//                   -> Done: blob id `id` is served from that registry blob
//                      (durable in <data_dir>/bindings.json; the running
//                      worker sees it at its next open of the id). Root only.
//   unbind id       -> Done: the binding is gone (blob_dir serves the id
//                      again). Root only.
//   bindings        -> BindingsReply: every binding, sorted by id
// Any command may get Error{error} instead.
// `ondemandctl metrics` and `top` are not control commands: they read the
// metrics endpoint (<state_dir>/metrics.sock, HTTP).
//
// Changelog:
//   1  status, restart-worker, stop, upgrade. Typed (this header) without a
//      wire change; reload added (an older supervisor answers it
//      "unrecognized command"). bind, unbind, bindings added the same way.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace ondemand::proto {

inline constexpr int CONTROL_VERSION = 1;
inline constexpr std::string_view CONTROL_SOCKET_NAME = "control.sock";
inline constexpr std::size_t CONTROL_MAX_BYTES = 64 * 1024;
// Longest worker binary path an upgrade accepts (PATH_MAX).
inline constexpr std::size_t CONTROL_MAX_PATH = 4096;

namespace control {

// ---- requests ----
struct Status {};
struct RestartWorker {};
// With the fanotify front end a stop while images are mounted from the
// cache lets their readers read zeros over unfilled ranges (the group
// closes): refused unless `force`.
struct Stop {
  bool force = false;
};
struct Upgrade {
  std::optional<std::string> binary;  // absolute path; none: the configured worker_binary
};
struct Reload {};
struct Bind {
  std::string id;
  std::string registry;
  std::string repository;
  std::string digest;
  std::optional<std::uint64_t> size;
};
struct Unbind {
  std::string id;
};
struct ListBindings {};
// fanotify front end: make the cache files of one mount's blobs (blobs[0]
// the metadata blob) and have the serving worker take them; `ondemandctl
// mount` then mounts the returned paths. Root only.
struct AddBlobs {
  std::vector<std::string> blobs;
};
inline constexpr std::size_t MAX_BLOBS_PER_MOUNT = 64;

// ---- replies ----
struct WorkerInfo {
  std::int64_t pid = 0;
  std::uint64_t generation = 0;
  std::string version;
  std::string binary;
  bool serving = false;
  bool adopted = false;
  double uptime_s = 0;
  std::optional<double> killed_s_ago;  // set once the supervisor SIGKILLed it (not yet reaped)
};
struct StatusReply {
  std::int64_t supervisor_pid = 0;
  std::string version;
  double uptime_s = 0;
  std::string state;  // starting, running, upgrading, parked, stopped
  std::optional<WorkerInfo> worker;
  std::optional<WorkerInfo> incoming_worker;
  std::optional<WorkerInfo> spare_worker;
  std::string worker_binary;
  std::uint64_t generation = 0;
  std::uint64_t restarts = 0;
  std::uint64_t hangs_detected = 0;
  std::uint64_t inflight = 0;
  // The worker counters (common/shared_state.h counters_json) by name.
  std::map<std::string, std::uint64_t> counters;
  std::uint64_t counter(const std::string& name) const {
    auto it = counters.find(name);
    return it == counters.end() ? 0 : it->second;
  }
};
// restart-worker, stop, reload.
struct Done {
  std::string message;
};
struct Upgraded {
  std::string message;
  std::int64_t pid = 0;
  std::uint64_t generation = 0;
  std::string version;
};
struct Error {
  std::string error;
};
struct BindingInfo {
  std::string id;
  std::string registry;
  std::string repository;
  std::string digest;
  std::optional<std::uint64_t> size;
};
struct BindingsReply {
  std::vector<BindingInfo> bindings;
};
// add-blobs: each blob's cache file, in the request's order.
struct CacheFilesReply {
  std::vector<std::string> paths;
};

}  // namespace control

using ControlRequest =
    std::variant<control::Status, control::RestartWorker, control::Stop, control::Upgrade, control::Reload,
                 control::Bind, control::Unbind, control::ListBindings, control::AddBlobs>;
using ControlReply =
    std::variant<control::Error, control::Done, control::Upgraded, control::StatusReply, control::BindingsReply,
                 control::CacheFilesReply>;

// The wire "cmd" of a request.
std::string_view command_of(const ControlRequest& request);

// Never throws; a request that would exceed CONTROL_MAX_BYTES encodes to "".
std::string encode_request(const ControlRequest& request);
std::variant<ControlRequest, std::string> decode_request(std::string_view bytes);

// Never throws; a reply that would exceed CONTROL_MAX_BYTES encodes to ""
// (the server then sends an Error saying so).
std::string encode_reply(const ControlReply& reply);
// The reply to `answered`: Error when ok is false, otherwise the reply type
// that command gets (see above); anything else is an error string.
std::variant<ControlReply, std::string> decode_reply(std::string_view bytes, const ControlRequest& answered);

}  // namespace ondemand::proto
