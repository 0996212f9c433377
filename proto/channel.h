// The supervisor <-> worker channel ("handoff protocol"), typed.
//
// Transport: an AF_UNIX SOCK_SEQPACKET socketpair created by the supervisor;
// the worker inherits its end as fd 3 (--channel-fd). One datagram is one
// message: a JSON object of at most MAX_MESSAGE_BYTES, never more (encode()
// refuses a larger one: a receiver would see it truncated). A message that
// carries descriptors (SCM_RIGHTS) announces how many in its "fds" field, and
// decode() refuses a datagram whose descriptor count differs from that or
// from what its type carries.
//
// Every message is one struct below; every wire field name is spelled only in
// channel.cc. decode() never throws: a datagram that is not JSON, has no
// string "type", misses a required field, has a field of another type or out
// of range, or carries the wrong number of fds is a DecodeError naming the
// type and the field. Unknown fields are ignored (a newer peer may add some);
// an unknown type is a DecodeError with known_type = false.
//
// Conversation, start of a worker (version 1):
//   S->W  Hello{role "supervisor"}        W->S  Hello{role "worker", pid}
//   S->W  Device{generation, rdev, shm, restore, standby, spare} + the device fd
//   W->S  Serving{generation}
//   S->W  Stop                             (graceful stop; drain and exit 0)
//
// Warm spare: a worker started with standby and spare set holds the device
// without reading it. When the serving worker dies and is reaped,
//   S->W  Takeover{generation}  the spare writes `restore` and serves as
//                               generation G (assigned now)
// A spare whose supervisor dies exits: only a supervisor can promote it.
//
// Rolling upgrade, old worker A, new worker B (started with standby set: it
// holds the device but does not read it). The supervisor creates a
// socketpair and gives one end to each:
//   S->B  HandoverPeer                   + B's end
//   S->A  Handover{drain_ms}             + A's end
//   on the peer socket:
//   A->B  Hello    B->A  Hello
//   A keeps reading until B's hello, which B sends from its event loop,
//   once set up and sandboxed: the device goes unread only for the drain
//   and the table, not for B's start (B answers within 5 s, or A calls the
//   handover off and serves on). Then A stops reading, finishes its
//   in-flight requests (within drain_ms) and sends its table, releasing the
//   serving lock just before ObjectsDone (B reads as soon as it has the
//   table, not once A has exited):
//   A->B  Objects{[{object_id, blob_id}...]} + one anonymous fd per object,
//         repeated: split_objects() cuts the table into batches of at most
//         MAX_FDS_PER_MESSAGE fds and MAX_MESSAGE_BYTES encoded
//   A->B  ObjectsDone{count}
//   A->S  HandedOver{objects}; A exits 0.
//   B starts reading (no restore: nothing was left in flight) and says
//   Serving. If A fails to drain in time the supervisor kills it, reaps it,
//   and only then sends
//   S->B  Takeover{}           B writes `restore`, then reads and serves.
//   If B dies first, the supervisor sends A Resume and A reads again.
//
// Supervisor restart: the worker listens on <state_dir>/worker.sock. A new
// supervisor connects there and, after Hello both ways, if the worker's
// channel to its old supervisor is closed, gets
//   W->S  Adopt{pid, generation, rdev, version, serving} + its device fd
// and that connection becomes its channel. A worker that still has a live
// supervisor answers Refused{why}; one in the middle of a handover answers
// Busy{why, retry_ms}: ask again later.
//
// fanotify front end (config frontend = "fanotify"), instead of Device:
//   S->W  CacheFiles{[{blob_id, domain, size, whole}...]} + one writer fd
//         per entry (batches of at most MAX_FDS_PER_MESSAGE), each file
//         appended to the worker's table in order (its index is its place)
//   S->W  FanotifyGroup{generation, shm, standby, spare} + the group fd and
//         the pending-event record's fd
//   W->S  Serving{generation}
// and at run time, when `ondemandctl mount` adds blobs:
//   S->W  CacheFiles{...} + fds        W->S  CacheFilesAdded{count}
// (count: the files the worker now has). A worker always recovers the
// record before its first read (frontends/fanotify/server.h). A fanotify
// worker whose supervisor died is adopted like a cachefiles one, handing
// back what the supervisor held:
//   W->S  CacheFiles{...} + writer fds (every file, in index order)
//   W->S  AdoptFanotify{pid, generation, version, serving} + the group fd
//         and the pending-event record's fd
//
// Both sides answer a message they do not understand with
// Unrecognized{what} and carry on: an unknown message is never fatal.
//
// Changelog:
//   1  initial: hello, device (standby, spare), serving, stop, handover,
//      handover-peer, objects, objects-done, handed-over, takeover, resume,
//      adopt, refused, unrecognized. Typed (this header) without a wire
//      change; fanotify-group, cache-files, cache-files-added and
//      adopt-fanotify added for the fanotify front end (a worker that predates them cannot serve
//      that mode and answers unrecognized, failing its handshake);
//      busy added (a version-1 peer that does not know it answers
//      unrecognized, which an adopter treats as a refusal).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

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
// <state_dir>/<this>: a serving worker listens here for a new supervisor to
// adopt it (the supervisor's channel gone).
inline constexpr std::string_view WORKER_SOCKET_NAME = "worker.sock";

// What `--version` and the handoff hello report: the project version plus
// ONDEMAND_VERSION_SUFFIX (proto/version.cc, the one file built with it, so
// a build with another suffix recompiles only that file).
extern const std::string_view VERSION;

namespace msg {

struct Hello {
  std::string role;  // "supervisor" or "worker"
  std::uint32_t proto_min = 0;
  std::uint32_t proto_max = 0;
  std::string version;
  std::int64_t pid = 0;
};
// + the device fd.
struct Device {
  std::uint64_t generation = 0;
  std::uint64_t rdev = 0;
  std::string shm;       // shared memory name
  bool restore = false;  // write `restore` before reading
  bool standby = false;  // hold the device, do not read it yet
  bool spare = false;    // standby kept for the next failover
};
struct Serving {
  std::uint64_t generation = 0;
};
struct Stop {};
struct Takeover {
  std::optional<std::uint64_t> generation;  // a spare's new generation; none after an upgrade
};
// + A's end of the peer socketpair.
struct Handover {
  std::uint64_t drain_ms = 0;
};
// + B's end of the peer socketpair.
struct HandoverPeer {};
struct ObjectEntry {
  std::uint32_t object_id = 0;
  std::string blob_id;
  // The blob reference's domain (proto/blob_ref.h). Optional on the wire:
  // an entry from a worker that predates it decodes with "".
  std::string domain;
  friend bool operator==(const ObjectEntry&, const ObjectEntry&) = default;
};
// + one anonymous fd per entry, in order.
struct Objects {
  std::vector<ObjectEntry> objects;
};
struct ObjectsDone {
  std::uint64_t count = 0;
};
struct HandedOver {
  std::uint64_t objects = 0;
};
struct Resume {};
// + the worker's device fd.
struct Adopt {
  std::int64_t pid = 0;
  std::uint64_t generation = 0;
  std::uint64_t rdev = 0;
  std::string version;
  bool serving = false;
};
// fanotify front end, after the worker's CacheFiles: + the group fd, then
// the pending-event record's fd.
struct AdoptFanotify {
  std::int64_t pid = 0;
  std::uint64_t generation = 0;
  std::string version;
  bool serving = false;
};
struct Refused {
  std::string why;
};
struct Busy {
  std::string why;
  std::uint64_t retry_ms = 0;
};
struct Unrecognized {
  std::string what;
};
// + the fanotify group fd, then the pending-event record's fd.
struct FanotifyGroup {
  std::uint64_t generation = 0;
  std::string shm;       // shared memory name (counters, heartbeat)
  bool standby = false;  // hold the group, do not read it yet
  bool spare = false;    // standby kept for the next failover
};
struct CacheFileEntry {
  std::string blob_id;
  std::string domain;  // proto/blob_ref.h
  std::uint64_t size = 0;
  bool whole = false;  // a metadata blob: filled whole before any mount reads it
  friend bool operator==(const CacheFileEntry&, const CacheFileEntry&) = default;
};
// + one writer fd (O_RDWR, opened before the mark) per entry, in order.
struct CacheFiles {
  std::vector<CacheFileEntry> files;
};
struct CacheFilesAdded {
  std::uint64_t count = 0;
};

}  // namespace msg

using Message = std::variant<msg::Hello, msg::Device, msg::Serving, msg::Stop, msg::Takeover, msg::Handover,
                             msg::HandoverPeer, msg::Objects, msg::ObjectsDone, msg::HandedOver, msg::Resume,
                             msg::Adopt, msg::Refused, msg::Busy, msg::Unrecognized, msg::FanotifyGroup,
                             msg::CacheFiles, msg::CacheFilesAdded, msg::AdoptFanotify>;

struct DecodeError {
  std::string what;         // for logs and for the peer's Unrecognized
  std::string type;         // the "type" field when it could be read
  bool known_type = false;  // `type` names a message of this protocol
};

std::variant<Message, DecodeError> decode(std::string_view bytes, std::size_t fds_received);

// The datagram for `m`. Never throws; a message that would exceed
// MAX_MESSAGE_BYTES encodes to "" (callers treat that as a send failure).
std::string encode(const Message& m);

// How many fds travel with `m` (the "fds" field it announces).
std::size_t fds_of(const Message& m);
// Its wire "type", for logs.
std::string_view type_of(const Message& m);

msg::Hello make_hello(std::string_view role, std::int64_t pid);

// Highest version both ranges contain, or nullopt when they are disjoint.
std::optional<std::uint32_t> negotiate(std::uint32_t our_min, std::uint32_t our_max,
                                       std::uint32_t peer_min, std::uint32_t peer_max);

// Cuts a handover's object table into Objects batches that each fit one
// datagram: at most MAX_FDS_PER_MESSAGE entries and MAX_MESSAGE_BYTES
// encoded. Returns the batch sizes, in order, summing to objects.size();
// nullopt if one entry cannot fit a datagram on its own (a blob id near
// 64 KiB, which validate_blob_id never lets through).
std::optional<std::vector<std::size_t>> split_objects(const std::vector<msg::ObjectEntry>& objects);

}  // namespace ondemand::proto
