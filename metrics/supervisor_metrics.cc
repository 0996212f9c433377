#include "metrics/supervisor_metrics.h"

namespace ondemand::metrics {
namespace {
std::uint64_t ns_between(std::chrono::steady_clock::time_point from, std::chrono::steady_clock::time_point to) {
  const auto d = std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count();
  return d > 0 ? static_cast<std::uint64_t>(d) : 0;
}
}  // namespace

proto::RestartCause restart_cause(proto::ExitClass how, bool killed_by_us, bool killed_from_outside) {
  if (killed_from_outside) return proto::RestartCause::KILLED;
  if (killed_by_us) return proto::RestartCause::HANG;
  switch (how) {
    case proto::ExitClass::STOPPED: return proto::RestartCause::EXIT;
    case proto::ExitClass::FATAL_CONFIG: return proto::RestartCause::CONFIG;
    case proto::ExitClass::CRASHED: break;
    // A dead cache parks the worker and is its own state (status, metrics
    // worker_state); as a restart cause it is a crash.
    case proto::ExitClass::CACHE_DEAD: break;
  }
  return proto::RestartCause::CRASH;
}

void SupervisorRecorder::worker_died(proto::SharedState& state, proto::RestartCause cause, Clock::time_point now) {
  state.supervisor_metrics.restarts[static_cast<std::size_t>(cause)].fetch_add(1, std::memory_order_relaxed);
  if (!died_) died_ = now;
}

void SupervisorRecorder::worker_serving(proto::SharedState& state, Clock::time_point now) {
  if (!died_) return;
  state.supervisor_metrics.failover_recovery.observe(proto::RECOVERY_BOUNDS_NS, ns_between(*died_, now));
  died_.reset();
}

void SupervisorRecorder::handover_started(Clock::time_point now) { handover_ = now; }

void SupervisorRecorder::upgrade_serving(proto::SharedState& state, Clock::time_point now) {
  auto& sv = state.supervisor_metrics;
  sv.restarts[static_cast<std::size_t>(proto::RestartCause::UPGRADE)].fetch_add(1, std::memory_order_relaxed);
  if (handover_) sv.upgrade_stall.observe(proto::RECOVERY_BOUNDS_NS, ns_between(*handover_, now));
  handover_.reset();
}

}  // namespace ondemand::metrics
