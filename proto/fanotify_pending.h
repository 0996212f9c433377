// Shared-memory layout of the fanotify front end's crash-safe pending-event
// record. Fixed layout, atomics only, no locks; {magic, version, size}
// checked on attach; grows append-only (a reader accepts size >= its own).
//
// The record exists so that a worker killed at any instant never lets a
// reader through over a hole (see frontends/fanotify/README.md for every
// window and its kernel reference). The worker read()s the group fd
// STRAIGHT INTO an inbox here: the kernel's copy_to_user writes each event
// (fd number and range) into shared memory inside the read() syscall, so no
// instant exists after read() at which the worker holds an event the record
// does not. Per event position the worker then publishes:
//   file[k]     1 + the index of the cache file the event's fd resolves to;
//               0 (FILE_UNKNOWN) until fstat resolved it: a successor then
//               fills the range in every cache file, which is always
//               correct, only slower. Zero means unknown so that memory
//               nobody wrote (a fresh record) can never name a file.
//   answered[k] set right after the response write(), BEFORE the event fd
//               is closed. While the fd is open its number cannot be handed
//               to another event, so a stale entry never names a live one.
// An inbox is cleared (bytes first, then flags) only when all its events are
// answered, and read() only goes into a cleared inbox.
//
// Single writer: the live worker. A successor takes over only after the
// predecessor is reaped.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace ondemand::proto::fanotify {

inline constexpr std::uint32_t PENDING_MAGIC = 0x464e4f50;  // "PONF"
inline constexpr std::uint32_t PENDING_VERSION = 1;
inline constexpr std::size_t INBOX_BYTES = 4096;
// An event is at least its 24-byte metadata (48 with the range record).
inline constexpr std::size_t INBOX_MAX_EVENTS = INBOX_BYTES / 24;
inline constexpr std::size_t INBOX_COUNT = 4;
inline constexpr std::uint32_t FILE_UNKNOWN = 0;
inline constexpr std::uint32_t file_slot(std::uint32_t index) { return index + 1; }
// The cache-file index in a slot; only for slot != FILE_UNKNOWN.
inline constexpr std::uint32_t file_index(std::uint32_t slot) { return slot - 1; }

struct PendingInbox {
  // INBOX_EMPTY: bytes are all zero, read() may target it.
  // INBOX_FILLED: a read() may have written events into `bytes`.
  std::atomic<std::uint32_t> state;
  std::atomic<std::uint32_t> bytes_read;  // read()'s return, 0 if not yet known
  std::atomic<std::uint32_t> file[INBOX_MAX_EVENTS];
  std::atomic<std::uint32_t> answered[INBOX_MAX_EVENTS];
  alignas(64) std::byte bytes[INBOX_BYTES];
};
inline constexpr std::uint32_t INBOX_EMPTY = 0;
inline constexpr std::uint32_t INBOX_FILLED = 1;

struct PendingHeader {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint64_t size;
};

struct PendingRecordLayout {
  PendingHeader header;
  std::atomic<std::uint64_t> worker_generation;  // bumped by each worker at start
  // Recovery figures for the chaos tests: monotonic ns of the last recovery
  // start and of its first response, events recovered in all.
  std::atomic<std::uint64_t> recovery_start_ns;
  std::atomic<std::uint64_t> recovery_first_answer_ns;
  std::atomic<std::uint64_t> events_recovered;
  std::atomic<std::uint64_t> events_answered;
  std::atomic<std::uint64_t> events_denied;
  std::atomic<std::uint64_t> stale_answers;  // ENOENT: the dead worker had answered
  std::atomic<std::uint64_t> unknown_file_fills;
  PendingInbox inbox[INBOX_COUNT];
  // Monotonic ns of the current worker's first response that released a
  // reader (recovered or new event); 0 until then. Zeroed by each worker at
  // start: with the kill time, it gives kill-to-first-answer.
  std::atomic<std::uint64_t> first_answer_ns;
  // Graceful hand-overs (upgrades), and those that began with events read
  // and still being filled (the hand-over answered them before exiting).
  std::atomic<std::uint64_t> hand_overs;
  std::atomic<std::uint64_t> hand_overs_in_flight;
  // Monotonic ns, written by the serving worker's event loop every
  // HEARTBEAT_PERIOD_MS: a supervisor that sees it stale kills the worker
  // (its readers wait forever otherwise; the kernel only warns) and the
  // successor recovers its events.
  std::atomic<std::uint64_t> heartbeat_ns;
};

static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

}  // namespace ondemand::proto::fanotify
