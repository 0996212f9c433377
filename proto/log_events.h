// Journal MESSAGE_IDs of the events an operator looks for: each names one
// kind of event for good (`journalctl -u ondemand MESSAGE_ID=<id>` finds
// every failover of a node's history). Spelled only here; never reuse an id
// for another meaning. Generated with `systemd-id128 new`.
#pragma once

#include <string_view>

namespace ondemand::proto::log_event {

// A serving (or starting) worker ended: the first half of a failover.
// Fields: WORKER_PID, WORKER_GENERATION, EXIT (how it ended).
inline constexpr std::string_view WORKER_DIED = "22f72b8707814e68bf823557e21875a8";
// The next worker serves after a death: the failover is complete.
// Fields: WORKER_PID, WORKER_GENERATION, RECOVERY_MS.
inline constexpr std::string_view FAILOVER_SERVING = "cb3a9d6495e94c88a76d3aed761ee803";
// The supervisor killed a worker (watchdog, request limit, handshake).
// Fields: WORKER_PID, WORKER_GENERATION, REASON.
inline constexpr std::string_view WORKER_KILLED = "3ccd4231b1a143a6ad1efdfe00318df8";
// Parked: nothing serves until a retry succeeds or an operator acts.
// Fields: REASON, RETRY_MS.
inline constexpr std::string_view PARKED = "9e6c252a59894691b26229b4d956e527";
// A rolling upgrade ended. Fields: RESULT (done, failed), WORKER_PID.
inline constexpr std::string_view UPGRADE = "5afbb926ba3444e99ffa90f42c52c578";

// A worker that died on its own (crash, watchdog kill) had a request in
// flight. Fields: REQUEST (the request in words), REPEATS (consecutive
// such deaths with the same request: 2 and more, a likely poison request).
inline constexpr std::string_view DEATH_REQUEST = "7c4b698efad0448a9edff36ed69b22bf";

}  // namespace ondemand::proto::log_event
