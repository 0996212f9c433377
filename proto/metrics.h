// The metric table: every metric the supervisor exports, spelled once.
//
// metrics/exposition.h renders this table, in order, from a shared-state
// snapshot (proto/shm_layout.h) in the Prometheus text format 0.0.4; the
// table is the only place a metric's name, type, help text and label names
// appear. Naming follows Prometheus' conventions: an `ondemand_` prefix, base
// units (`_seconds`, `_bytes`), `_total` on counters, and label values from
// small closed sets (the enums below), so that no series can multiply
// without bound.
//
// Histograms have fixed buckets: their counters live in shared memory (one
// per upper bound, plus +Inf), so the bounds are part of the layout and a
// change of bounds is a layout change (append a new histogram instead).
//
// Changelog:
//   1  initial table.
//   2  ondemand_budget_closes_total (max_open_objects).
#pragma once

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ondemand::proto {

enum class MetricType { COUNTER, GAUGE, HISTOGRAM };

enum class MetricId {
  BUILD_INFO,
  SUPERVISOR_START_TIME,
  REQUESTS,
  SERVED_BYTES,
  PREFETCHED_BYTES,
  BACKEND_ERRORS,
  CACHE_WRITE_ERRORS,
  PROTOCOL_ERRORS,
  RESTORES,
  INFLIGHT,
  OPEN_OBJECTS,
  WORKER_PID,
  WORKER_GENERATION,
  WORKER_STATE,
  WORKER_PARKED,
  WORKER_RESTARTS,
  HANGS_DETECTED,
  READ_LATENCY,
  FAILOVER_RECOVERY,
  UPGRADE_STALL,
  BUDGET_CLOSES,
};

struct MetricSpec {
  MetricId id;
  std::string_view name;
  MetricType type;
  std::string_view labels;  // label names, comma-separated; empty for none
  std::string_view help;
};

inline constexpr std::array METRICS = {
    MetricSpec{MetricId::BUILD_INFO, "ondemand_build_info", MetricType::GAUGE, "version",
               "Always 1; the supervisor's version is in the label."},
    MetricSpec{MetricId::SUPERVISOR_START_TIME, "ondemand_supervisor_start_time_seconds", MetricType::GAUGE, "",
               "Unix time at which this supervisor started (counters are older: they live in shared memory)."},
    MetricSpec{MetricId::REQUESTS, "ondemand_requests_total", MetricType::COUNTER, "type,result",
               "Kernel requests finished, by type (open, read, close) and result (ok, error)."},
    MetricSpec{MetricId::SERVED_BYTES, "ondemand_served_bytes_total", MetricType::COUNTER, "",
               "Bytes written into the kernel's cache files to answer READ requests."},
    MetricSpec{MetricId::PREFETCHED_BYTES, "ondemand_prefetched_bytes_total", MetricType::COUNTER, "",
               "Bytes written into the cache files by whole-blob prefetch."},
    MetricSpec{MetricId::BACKEND_ERRORS, "ondemand_backend_errors_total", MetricType::COUNTER, "kind",
               "Failed blob backend operations, by kind."},
    MetricSpec{MetricId::CACHE_WRITE_ERRORS, "ondemand_cache_write_errors_total", MetricType::COUNTER, "",
               "Failed writes into a cache file (ENOBUFS: cache_dir full or the object withdrawn)."},
    MetricSpec{MetricId::PROTOCOL_ERRORS, "ondemand_protocol_errors_total", MetricType::COUNTER, "kind",
               "Kernel messages that could not be served as sent, by kind."},
    MetricSpec{MetricId::RESTORES, "ondemand_restores_total", MetricType::COUNTER, "reason",
               "`restore` commands written to the device, by reason (worker start, repair of unknown objects)."},
    MetricSpec{MetricId::INFLIGHT, "ondemand_inflight_requests", MetricType::GAUGE, "",
               "Kernel requests the serving worker has read and not yet answered."},
    MetricSpec{MetricId::OPEN_OBJECTS, "ondemand_open_objects", MetricType::GAUGE, "",
               "Cache objects the serving worker holds open (one anonymous fd each)."},
    MetricSpec{MetricId::WORKER_PID, "ondemand_worker_pid", MetricType::GAUGE, "",
               "Process id of the current worker."},
    MetricSpec{MetricId::WORKER_GENERATION, "ondemand_worker_generation", MetricType::GAUGE, "",
               "Generation of the most recently started worker (one more at every spawn)."},
    MetricSpec{MetricId::WORKER_STATE, "ondemand_worker_state", MetricType::GAUGE, "state",
               "1 for the supervisor's current worker state, 0 for the others."},
    MetricSpec{MetricId::WORKER_PARKED, "ondemand_worker_parked", MetricType::GAUGE, "",
               "1 while the worker is parked (crash loop or configuration error): nothing serves."},
    MetricSpec{MetricId::WORKER_RESTARTS, "ondemand_worker_restarts_total", MetricType::COUNTER, "cause",
               "Workers replaced, by cause."},
    MetricSpec{MetricId::HANGS_DETECTED, "ondemand_hangs_detected_total", MetricType::COUNTER, "",
               "Workers killed by the watchdog (stale heartbeat or a request older than its limit)."},
    MetricSpec{MetricId::READ_LATENCY, "ondemand_read_latency_seconds", MetricType::HISTOGRAM, "",
               "Time from reading a READ request off the device to its READ_COMPLETE."},
    MetricSpec{MetricId::FAILOVER_RECOVERY, "ondemand_failover_recovery_seconds", MetricType::HISTOGRAM, "",
               "Time from a worker's death to the next worker serving."},
    MetricSpec{MetricId::UPGRADE_STALL, "ondemand_upgrade_stall_seconds", MetricType::HISTOGRAM, "",
               "Time during a rolling upgrade from the old worker stopping its reads to the new one serving."},
    MetricSpec{MetricId::BUDGET_CLOSES, "ondemand_budget_closes_total", MetricType::COUNTER, "",
               "Idle objects whose anonymous fd was closed to stay within max_open_objects (the kernel reopens "
               "them at their next READ)."},
};

// ---- label value sets ----

// ondemand_backend_errors_total{kind}.
enum class BackendErrorKind : std::uint8_t { NOT_FOUND, DENIED, OPEN, READ, COUNT };
inline constexpr std::array<std::string_view, static_cast<std::size_t>(BackendErrorKind::COUNT)>
    BACKEND_ERROR_KIND_NAMES = {"not_found", "denied", "open", "read"};

// What open(2)-style errno a backend open failure counts as.
constexpr BackendErrorKind backend_open_error_kind(int err) {
  switch (err) {
    case ENOENT: return BackendErrorKind::NOT_FOUND;
    case EPERM:
    case EACCES: return BackendErrorKind::DENIED;
    default: return BackendErrorKind::OPEN;
  }
}

// ondemand_worker_restarts_total{cause}.
enum class RestartCause : std::uint8_t {
  CRASH,    // died by itself: a signal or a failure exit code
  KILLED,   // SIGKILL the supervisor did not send (operator, chaos test, OOM killer)
  HANG,     // killed by the supervisor: watchdog, request limit, no handshake in time
  CONFIG,   // exited with the configuration exit code
  EXIT,     // exited cleanly (ondemandctl restart-worker, a stop)
  UPGRADE,  // replaced by a rolling upgrade
  COUNT
};
inline constexpr std::array<std::string_view, static_cast<std::size_t>(RestartCause::COUNT)>
    RESTART_CAUSE_NAMES = {"crash", "killed", "hang", "config", "exit", "upgrade"};

// ---- histogram buckets (upper bounds, nanoseconds) ----

// A READ is a kernel round trip plus a fill_window of backend I/O: from
// ~100 us (warm local disk) to seconds (a registry).
inline constexpr std::array<std::uint64_t, 16> READ_LATENCY_BOUNDS_NS = {
    100'000,     250'000,     500'000,       1'000'000,     2'500'000,     5'000'000,
    10'000'000,  25'000'000,  50'000'000,    100'000'000,   250'000'000,   500'000'000,
    1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};

// Failover and upgrade stall: ~10 ms with a warm spare, ~100 ms with a
// process start, seconds in a crash loop, minutes while parked.
inline constexpr std::array<std::uint64_t, 15> RECOVERY_BOUNDS_NS = {
    1'000'000,     2'500'000,     5'000'000,      10'000'000,     25'000'000,
    50'000'000,    100'000'000,   250'000'000,    500'000'000,    1'000'000'000,
    2'500'000'000, 5'000'000'000, 10'000'000'000, 30'000'000'000, 60'000'000'000};

// The bucket index (0..BOUNDS.size(), the last being +Inf) an observation
// of `ns` falls in: the first bound >= ns.
template <std::size_t N>
constexpr std::size_t bucket_index(const std::array<std::uint64_t, N>& bounds, std::uint64_t ns) {
  std::size_t i = 0;
  while (i < N && ns > bounds[i]) ++i;
  return i;
}

}  // namespace ondemand::proto
