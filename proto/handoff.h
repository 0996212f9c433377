// The supervisor <-> worker channel ("handoff protocol").
//
// Transport: an AF_UNIX SOCK_SEQPACKET socketpair created by the supervisor;
// the worker inherits its end as fd 3 (--channel-fd). One datagram is one
// message: a JSON object of at most MAX_MESSAGE_BYTES. A message that carries
// descriptors (SCM_RIGHTS) announces how many in its "fds" field; the
// receiver rejects a datagram whose descriptor count differs.
//
// Conversation, start of a worker (version 1):
//   S->W  {"type":"hello","role":"supervisor","proto_min":1,"proto_max":1,"version":"..."}
//   W->S  {"type":"hello","role":"worker","proto_min":1,"proto_max":1,"version":"...","pid":N}
//   S->W  {"type":"device","fds":1,"generation":G,"rdev":R,"shm":"name","restore":true,"standby":false}
//                                                + the /dev/cachefiles fd
//   W->S  {"type":"serving","generation":G}
//   S->W  {"type":"stop"}              (graceful stop; the worker drains and exits 0)
//
// Warm spare: a worker started with "standby":true,"spare":true holds the
// device without reading it. When the serving worker dies and is reaped,
//   S->W  {"type":"takeover","generation":G}  the spare writes `restore` and
//                                      serves as generation G (assigned now)
// (milliseconds, where starting a process takes tens to hundreds). A spare
// whose supervisor dies exits: only a supervisor can promote it.
//
// Rolling upgrade, old worker A, new worker B (started with "standby":true:
// it holds the device but does not read it). The supervisor creates a
// socketpair and gives one end to each:
//   S->B  {"type":"handover-peer","fds":1}           + B's end
//   S->A  {"type":"handover","fds":1,"drain_ms":D}   + A's end
//   A stops reading the device, finishes its in-flight requests (within D),
//   then on the peer socket:
//   A->B  {"type":"hello",...}  B->A {"type":"hello",...}
//   A->B  {"type":"objects","fds":n,"objects":[{"object_id":I,"blob_id":"..."},...]}
//                                 + n anonymous fds, n <= 253, repeated
//   A->B  {"type":"objects-done","count":N}
//   A->S  {"type":"handed-over","objects":N}; A exits 0.
//   B starts reading (no restore: nothing was left in flight) and says
//   "serving". If A fails to drain in time the supervisor kills it, reaps it,
//   and only then sends
//   S->B  {"type":"takeover"}   B writes `restore`, then reads and serves.
//   If B dies first, the supervisor sends A {"type":"resume"} and A reads again.
//
// Supervisor restart: the worker listens on <state_dir>/worker.sock. A new
// supervisor connects there; if the worker's channel to its old supervisor
// is closed it answers
//   W->S  {"type":"adopt","fds":1,"pid":N,"generation":G,"rdev":R,"version":"..."}
//                                                + its /dev/cachefiles fd
// after the usual hello both ways, and that connection becomes its channel.
// A worker that still has a live supervisor refuses:
//   W->S  {"type":"refused","why":"..."}
//
// Both sides answer a message they do not understand with
//   {"type":"unrecognized","what":"<type or parse error>"}
// and carry on: an unknown message is never fatal.
//
// Changelog:
//   1  initial: hello, device (standby, spare), serving, stop, handover,
//      handover-peer, objects, objects-done, handed-over, takeover, resume,
//      adopt, refused, unrecognized.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

namespace ondemand::proto {

inline constexpr std::uint32_t HANDOFF_PROTO_MIN = 1;
#ifdef ONDEMAND_HANDOFF_VERSION_OVERRIDE
inline constexpr std::uint32_t HANDOFF_PROTO_MAX = ONDEMAND_HANDOFF_VERSION_OVERRIDE;
#else
inline constexpr std::uint32_t HANDOFF_PROTO_MAX = 1;
#endif
inline constexpr std::size_t MAX_MESSAGE_BYTES = 64 * 1024;
// SCM_MAX_FD in the kernel: one sendmsg carries at most this many fds.
inline constexpr std::size_t MAX_FDS_PER_MESSAGE = 253;
// The worker finds its end of the channel here (set up by the supervisor
// between fork and exec).
inline constexpr int WORKER_CHANNEL_FD = 3;

inline constexpr std::string_view VERSION = ONDEMAND_VERSION;

struct DecodedMessage {
  std::string type;
  nlohmann::json body;
  std::size_t announced_fds = 0;
};

// Returns the message, or an error text naming what was wrong. Never throws.
struct DecodeError { std::string what; };
std::variant<DecodedMessage, DecodeError> decode_message(std::string_view bytes);

std::string encode_message(const nlohmann::json& body);

nlohmann::json make_hello(std::string_view role, std::int64_t pid);
nlohmann::json make_unrecognized(std::string_view what);

// Highest version both ranges contain, or nullopt when they are disjoint.
std::optional<std::uint32_t> negotiate(std::uint32_t our_min, std::uint32_t our_max,
                                       std::uint32_t peer_min, std::uint32_t peer_max);

}  // namespace ondemand::proto
