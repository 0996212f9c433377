// render(): proto::METRICS, in order, filled from the shared state.
#include <vector>

#include "metrics/exposition.h"

namespace ondemand::metrics {
namespace {
using proto::MetricId;

template <std::size_t N, std::size_t B>
void write_histogram(TextWriter& out, const std::array<std::uint64_t, N>& bounds,
                     const proto::HistogramCounters<B>& h) {
  static_assert(B == N);
  std::array<std::uint64_t, N + 1> buckets{};
  for (std::size_t i = 0; i < buckets.size(); ++i) buckets[i] = h.buckets[i].load(std::memory_order_relaxed);
  out.histogram(bounds, buckets, h.sum_ns.load(std::memory_order_relaxed));
}

constexpr std::array<std::pair<proto::WorkerState, std::string_view>, 5> WORKER_STATES = {{
    {proto::WorkerState::STARTING, "starting"},
    {proto::WorkerState::RUNNING, "running"},
    {proto::WorkerState::UPGRADING, "upgrading"},
    {proto::WorkerState::PARKED, "parked"},
    {proto::WorkerState::STOPPED, "stopped"},
}};

void write_metric(TextWriter& out, const proto::MetricSpec& spec, const proto::SharedState& s,
                  const RenderInfo& info) {
  const auto& c = s.counters;
  const auto& w = s.worker_metrics;
  const auto& sv = s.supervisor_metrics;
  const auto get = [](const proto::Counter& counter) { return counter.load(std::memory_order_relaxed); };
  switch (spec.id) {
    case MetricId::BUILD_INFO:
      return out.sample({info.version}, std::uint64_t{1});
    case MetricId::SUPERVISOR_START_TIME:
      return out.sample({}, info.start_time_seconds);
    case MetricId::REQUESTS:
      out.sample({"open", "ok"}, get(w.opens_ok));
      out.sample({"open", "error"}, get(c.open_refused));
      out.sample({"read", "ok"}, get(w.reads_ok));
      out.sample({"read", "error"}, get(c.read_failed));
      return out.sample({"close", "ok"}, get(c.closes));  // a CLOSE has no reply, so no error
    case MetricId::SERVED_BYTES:
      return out.sample({}, get(c.bytes_written));
    case MetricId::PREFETCHED_BYTES:
      return out.sample({}, get(c.prefetched_bytes));
    case MetricId::BACKEND_ERRORS:
      for (std::size_t i = 0; i < proto::BACKEND_ERROR_KIND_NAMES.size(); ++i)
        out.sample({proto::BACKEND_ERROR_KIND_NAMES[i]}, get(w.backend_errors[i]));
      return;
    case MetricId::CACHE_WRITE_ERRORS:
      return out.sample({}, get(w.cache_write_errors));
    case MetricId::PROTOCOL_ERRORS:
      out.sample({"unknown_object"}, get(c.unknown_object));
      out.sample({"bad_message"}, get(c.bad_messages));
      return out.sample({"invalid_blob_id"}, get(w.invalid_blob_ids));
    case MetricId::RESTORES:
      out.sample({"worker_start"}, get(c.restores));
      return out.sample({"repair"}, get(c.restores_repair));
    case MetricId::INFLIGHT:
      return out.sample({}, get(c.inflight));
    case MetricId::OPEN_OBJECTS:
      return out.sample({}, get(w.open_objects));
    case MetricId::WORKER_PID:
      return out.sample({}, get(s.worker_pid));
    case MetricId::WORKER_GENERATION:
      return out.sample({}, get(s.generation));
    case MetricId::WORKER_STATE: {
      const auto state = get(s.worker_state);
      for (const auto& [value, name] : WORKER_STATES)
        out.sample({name}, std::uint64_t{state == static_cast<std::uint64_t>(value)});
      return;
    }
    case MetricId::WORKER_PARKED:
      return out.sample({}, std::uint64_t{get(s.worker_state) == static_cast<std::uint64_t>(proto::WorkerState::PARKED)});
    case MetricId::WORKER_RESTARTS:
      for (std::size_t i = 0; i < proto::RESTART_CAUSE_NAMES.size(); ++i)
        out.sample({proto::RESTART_CAUSE_NAMES[i]}, get(sv.restarts[i]));
      return;
    case MetricId::HANGS_DETECTED:
      return out.sample({}, get(s.hangs_detected));
    case MetricId::READ_LATENCY:
      return write_histogram(out, proto::READ_LATENCY_BOUNDS_NS, w.read_latency);
    case MetricId::FAILOVER_RECOVERY:
      return write_histogram(out, proto::RECOVERY_BOUNDS_NS, sv.failover_recovery);
    case MetricId::UPGRADE_STALL:
      return write_histogram(out, proto::RECOVERY_BOUNDS_NS, sv.upgrade_stall);
    case MetricId::BUDGET_CLOSES:
      return out.sample({}, get(s.budget.objects_closed));
  }
}

}  // namespace

std::string render(const proto::SharedState& state, const RenderInfo& info, std::string* error) {
  TextWriter out;
  for (const auto& spec : proto::METRICS) {
    out.family(spec);
    write_metric(out, spec, state, info);
  }
  if (error) *error = out.error();
  return out.text();
}

}  // namespace ondemand::metrics
