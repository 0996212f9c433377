// metrics-render-sample: prints render() of a shared state with every
// counter, gauge and histogram non-zero, for `promtool check metrics`
// (ctest metrics_promtool). Not installed.
#include <cstdio>
#include <memory>

#include "metrics/exposition.h"

int main() {
  using namespace ondemand;
  auto s = std::make_unique<proto::SharedState>();
  std::uint64_t next = 1;
  auto fill = [&](proto::Counter& c) { c.store(next++); };
  fill(s->generation);
  fill(s->worker_pid);
  fill(s->restarts);
  fill(s->hangs_detected);
  s->worker_state = static_cast<std::uint64_t>(proto::WorkerState::RUNNING);
  auto& c = s->counters;
  for (auto* counter : {&c.opens, &c.open_refused, &c.reads, &c.read_failed, &c.closes, &c.bytes_written,
                        &c.unknown_object, &c.bad_messages, &c.restores, &c.restores_repair, &c.inflight,
                        &c.prefetched_bytes})
    fill(*counter);
  auto& w = s->worker_metrics;
  fill(w.opens_ok);
  fill(w.reads_ok);
  for (auto& e : w.backend_errors) fill(e);
  fill(w.cache_write_errors);
  fill(w.invalid_blob_ids);
  fill(w.open_objects);
  fill(s->budget.objects_closed);
  auto& sv = s->supervisor_metrics;
  for (auto& r : sv.restarts) fill(r);
  for (std::uint64_t ns = 50'000; ns < 100'000'000'000; ns = ns * 3 + 7) {
    w.read_latency.observe(proto::READ_LATENCY_BOUNDS_NS, ns);
    sv.failover_recovery.observe(proto::RECOVERY_BOUNDS_NS, ns);
    sv.upgrade_stall.observe(proto::RECOVERY_BOUNDS_NS, ns * 2);
  }
  std::string error;
  const auto text = metrics::render(*s, {"0.0.0-sample \"quoted\\\"", 1700000000.25}, &error);
  if (!error.empty()) {
    std::fprintf(stderr, "metrics-render-sample: %s\n", error.c_str());
    return 1;
  }
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}
