// What the supervisor records into SupervisorMetrics (proto/shm_layout.h):
// restarts by cause, failover recovery time (a worker's death to the next
// worker serving) and upgrade stall (the outgoing worker told to stop
// reading to the incoming one serving). Pure but for the atomics: the
// supervisor passes the clock, tests pass made-up times.
#pragma once

#include <chrono>
#include <optional>

#include "proto/exit_codes.h"
#include "proto/metrics.h"
#include "proto/shm_layout.h"

namespace ondemand::metrics {

// Why the current worker ended. `killed_by_us`: the supervisor sent the
// SIGKILL (it only does that to a worker that hangs or fails its
// handshake); `killed_from_outside`: a SIGKILL it did not send.
proto::RestartCause restart_cause(proto::ExitClass how, bool killed_by_us, bool killed_from_outside);

class SupervisorRecorder {
 public:
  using Clock = std::chrono::steady_clock;

  // The current worker ended and will be replaced. A failover already
  // open (its replacement died before serving) keeps its start: recovery
  // is measured from the first death readers waited on.
  void worker_died(proto::SharedState& state, proto::RestartCause cause, Clock::time_point now);
  // The current worker reports serving: closes the open failover, if any.
  void worker_serving(proto::SharedState& state, Clock::time_point now);
  // Upgrade: the outgoing worker was told to stop reading and hand over.
  void handover_started(Clock::time_point now);
  // Upgrade: the incoming worker serves. Counts an "upgrade" restart and,
  // when a handover was started, observes the stall.
  void upgrade_serving(proto::SharedState& state, Clock::time_point now);

 private:
  std::optional<Clock::time_point> died_;
  std::optional<Clock::time_point> handover_;
};

}  // namespace ondemand::metrics
