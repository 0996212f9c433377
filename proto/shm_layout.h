// Shared-memory layout between supervisor and workers ("shared state").
//
// Survives worker crashes: the supervisor creates it, every worker attaches.
// Rules (after Envoy's hot_restart_impl.h): fixed layout, a {magic, version,
// size} header checked on attach, lock-free atomics only, one writer per
// field (noted beside each), no allocator and no mutex that a dying process
// could leave locked. Counters are monotonic; readers take differences.
//
// Compatibility rule (two versions share the segment during a rolling
// upgrade, and a restarted supervisor adopts a running worker's):
//   - fields are only ever appended, at the end of SharedState; `size` is
//     the layout size of the supervisor that created the segment;
//   - a reader accepts size >= sizeof(its SharedState) with the same magic
//     and the same `version`, and uses only the fields it knows;
//   - a reader that finds an older, smaller layout (its header's size equal
//     to the segment's length) grows the segment to its own layout in place
//     and sets `size` to it (common/shared_state.cc): the appended fields
//     read as zero, and processes that mapped the shorter segment keep a
//     valid mapping. Without this, an upgrade that appends a field could
//     not roll in either order (the segment outlives every process);
//   - `version` changes only for an incompatible change (a field moved,
//     resized or re-purposed), which rolling upgrades cannot cross.
// The segment is created O_EXCL with mode 0600 and must be owned by the
// attaching process's euid with no group/other bits.
//
// Changelog (version, then appended fields by layout size):
//   1  initial layout.
//      appended (no version bump; a reader accepts a size >= its own), in
//      this order after the 13 counters of the initial layout, which ended
//      the segment: the cull/cache counters of WorkerCounters (cull_passes
//      .. cache_dead), then worker_metrics, supervisor_metrics
//      (proto/metrics.h). WorkerCounters is the last member but for these
//      appended structs: grow it no further; append new structs instead.
//      Then oldest_request (RequestNote). Then fill (FillCounters: answer
//      first, fill ahead after). Then budget (BudgetCounters: the fd budget,
//      max_open_objects). Then failover (FailoverCounters: what the
//      supervisor found of its spare at each failover, and when the worker
//      that took over started serving).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "proto/metrics.h"

namespace ondemand::proto {

inline constexpr std::uint64_t SHM_MAGIC = 0x6f6e64656d616e64ULL;  // "ondemand"
inline constexpr std::uint32_t SHM_VERSION = 1;

using Counter = std::atomic<std::uint64_t>;
static_assert(Counter::is_always_lock_free);

// Written by whichever worker currently serves (exactly one at a time, or
// the outgoing and incoming worker during an upgrade handover, which only
// ever fetch_add). Survive worker deaths.
struct WorkerCounters {
  Counter opens;            // OPEN requests read
  Counter open_refused;     // copen with a negative errno
  Counter reads;            // READ requests read
  Counter read_failed;      // READ completed without its data (reader sees EIO)
  Counter closes;           // CLOSE requests read
  Counter bytes_written;    // bytes pwritten into anonymous fds
  Counter unknown_object;   // READ for an object id not in the table
  Counter bad_messages;     // read() errors and unparsable messages
  Counter restores;         // `restore` written at worker start (one per generation)
  Counter restores_repair;  // `restore` written to recover READs for unknown objects
  Counter inflight;         // requests being served now (gauge, reset by each new worker)
  Counter first_reply_ns;   // CLOCK_MONOTONIC of this generation's first completed request
  Counter prefetched_bytes; // bytes written by background whole-blob prefetch
  // The culler (frontends/cachefiles/cull.h), appended.
  Counter cull_passes;         // passes that found the cache over a limit and culled
  Counter culled_objects;      // cache files removed with `cull`
  Counter culled_bytes;        // their allocated size
  Counter cull_skipped_busy;   // candidates `inuse`/`cull` answered EBUSY (in use)
  Counter cull_skipped_unknown;// candidates whose use could not be told (any other error): never culled
  Counter cache_enobufs;       // cache writes refused with ENOBUFS (cache_dir below the kernel's threshold)
  Counter cache_dead;          // gauge: 1 once the serving worker found the cache dead (CACHEFILES_DEAD)
};

// A histogram in shared memory (proto/metrics.h names it and fixes its
// bounds): one counter per bucket, NOT cumulative (buckets[i] counts the
// observations in (bounds[i-1], bounds[i]], the last one those above every
// bound), so one observation is one fetch_add plus the sum. The exposition
// adds them up; its _count is the sum of the buckets, so count and +Inf
// bucket always agree even though a reader never sees all at one instant.
template <std::size_t BOUNDS>
struct HistogramCounters {
  std::array<Counter, BOUNDS + 1> buckets;
  Counter sum_ns;

  void observe(const std::array<std::uint64_t, BOUNDS>& bounds, std::uint64_t ns) {
    buckets[bucket_index(bounds, ns)].fetch_add(1, std::memory_order_relaxed);
    sum_ns.fetch_add(ns, std::memory_order_relaxed);
  }
};

// Appended for the metrics (proto/metrics.h). Written by whichever worker
// serves, like WorkerCounters.
struct WorkerMetrics {
  Counter opens_ok;   // copen with the blob's size
  Counter reads_ok;   // READ completed with the requested range written
  std::array<Counter, static_cast<std::size_t>(BackendErrorKind::COUNT)> backend_errors;
  Counter cache_write_errors;  // pwrite into an anonymous fd failed
  Counter invalid_blob_ids;    // OPEN refused: the cookie key is not a valid blob id
  Counter open_objects;        // gauge: the serving worker's object table, set every heartbeat
  HistogramCounters<READ_LATENCY_BOUNDS_NS.size()> read_latency;
};

// Appended for the metrics. Supervisor-written.
struct SupervisorMetrics {
  std::array<Counter, static_cast<std::size_t>(RestartCause::COUNT)> restarts;
  HistogramCounters<RECOVERY_BOUNDS_NS.size()> failover_recovery;
  HistogramCounters<RECOVERY_BOUNDS_NS.size()> upgrade_stall;
};

// What the oldest in-flight request is, in words ("READ msg_id=7
// object_id=3 blob=... off=... len=..."), NUL-terminated, written by the
// serving worker's heartbeat beside oldest_request_ns. Plain bytes, not
// atomics: the supervisor reads them only once the worker is dead (a dead
// writer cannot tear them), to name the request a worker died with, and
// trusts nothing in them (it stops at the first NUL or at the end, and
// escapes what it logs).
struct RequestNote {
  char text[240];
};

// Appended for answer-first fills (engine/engine.h): how READs were
// answered and what the fill-ahead behind them did. Written by whichever
// worker serves, like WorkerCounters (fetch_add), except the gauge.
struct FillCounters {
  Counter reads_early;         // requests answered while their fill still had the rest of its range to write
  Counter reads_joined;        // requests answered by fills that other requests started (no copy of their own)
  Counter fill_ahead_stopped;  // fills stopped before the end of their range (CLOSE, handover, stop)
  Counter fill_ahead_running;  // gauge: fills writing that no request waits on, stored by the worker that changed it
};

// Appended for the fd budget (config max_open_objects): objects the
// serving worker closed to stay within it. Worker-written (fetch_add).
struct BudgetCounters {
  Counter objects_closed;  // idle objects whose anonymous fd was closed (the kernel reopens them at their next READ)
};

// Appended for recovery time (issue 12): how each failover went, so
// ondemand-chaos can split its timings by it. A failover is one death of
// the serving worker that the restart policy answered with an immediate
// restart; exactly one of the three spare_* counters grows per failover,
// and exactly one of promoted / fresh_starts once a worker is chosen.
struct FailoverCounters {
  Counter spare_ready;     // supervisor: a spare had its handshake done at the death
  Counter spare_starting;  // supervisor: a spare existed but was still starting (before its handshake)
  Counter no_spare;        // supervisor: no spare at all (none yet, or spare_worker off)
  Counter promoted;        // supervisor: a spare took over
  Counter fresh_starts;    // supervisor: a new worker process was started instead
  Counter serving_ns;      // worker: CLOCK_MONOTONIC when the worker that serves now started reading (before
                           // its `restore`); written just before serving_generation
};

struct SharedState {
  // Header: written once by the supervisor before any worker attaches.
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t size;

  // Supervisor-written.
  Counter generation;        // incremented at every worker spawn
  Counter worker_pid;
  Counter restarts;          // worker restarts after a death
  Counter hangs_detected;    // watchdog kills
  Counter worker_state;      // WorkerState below

  // Worker-written.
  Counter heartbeat_ns;      // CLOCK_MONOTONIC, from the worker's event loop
  Counter serving_generation;// generation of the worker that last said "serving"
  Counter oldest_request_ns; // CLOCK_MONOTONIC start of the oldest in-flight request, 0 if none
  WorkerCounters counters;

  // ---- appended after layout 1 shipped; only ever append below ----
  WorkerMetrics worker_metrics;          // worker-written
  SupervisorMetrics supervisor_metrics;  // supervisor-written
  RequestNote oldest_request;            // worker-written (the serving worker's heartbeat)
  FillCounters fill;                     // worker-written (the serving worker's engine)
  BudgetCounters budget;                 // worker-written (the serving worker's front end)
  FailoverCounters failover;             // supervisor-written but for serving_ns (the serving worker)
};

enum class WorkerState : std::uint64_t { STARTING = 0, RUNNING = 1, UPGRADING = 2, PARKED = 3, STOPPED = 4 };

}  // namespace ondemand::proto
