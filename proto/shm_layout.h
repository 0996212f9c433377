// Shared-memory layout between supervisor and workers ("shared state").
//
// Survives worker crashes: the supervisor creates it, every worker attaches.
// Rules (after Envoy's hot_restart_impl.h): fixed layout, a {magic, version,
// size} header checked on attach, lock-free atomics only, one writer per
// field (noted beside each), no allocator and no mutex that a dying process
// could leave locked. Counters are monotonic; readers take differences.
//
// Changelog:
//   1  initial layout.
#pragma once

#include <atomic>
#include <cstdint>

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
};

enum class WorkerState : std::uint64_t { STARTING = 0, RUNNING = 1, UPGRADING = 2, PARKED = 3, STOPPED = 4 };

}  // namespace ondemand::proto
