// The fanotify pre-content ABI (FAN_CLASS_PRE_CONTENT groups, Linux 6.14+),
// parsed from bytes into values and responses encoded to bytes. Pure: no I/O.
//
// read() on a pre-content group returns one or more events back to back:
//   struct fanotify_event_metadata {u32 event_len; u8 vers; u8 reserved;
//                                   u16 metadata_len; u64 mask; s32 fd; s32 pid;}
// followed, for FAN_PRE_ACCESS, by one info record
//   struct fanotify_event_info_range {u8 info_type; u8 pad; u16 len; u32 pad;
//                                     u64 offset; u64 count;}
// (48 bytes in all on 6.18). parse_fanotify_events() checks every length
// before touching a field: a lying event_len, a short record or an unknown
// record becomes an EventError, never an out-of-bounds access. A kernel
// event_len of 0 never happens, so 0 ends the list: that lets a zeroed
// buffer that read() only partly overwrote be parsed without its length
// (the crash-safe pending record, frontends/fanotify/pending_record.h).
//
// Every permission event the kernel hands out holds a reader asleep until
// someone writes a response for its fd. So every event that carries an fd,
// even a malformed one, comes back to the caller with that fd: it must be
// answered and closed.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace ondemand::proto::fanotify {

// Debian 12's linux-libc-dev (6.1) has <linux/fanotify.h> without the
// pre-content constants. Spelled here once, from include/uapi/linux/fanotify.h
// of Linux 6.14 (unchanged through 6.18): FAN_PRE_ACCESS, the range info
// record (FAN_EVENT_INFO_TYPE_RANGE, struct fanotify_event_info_range) and
// FAN_DENY_ERRNO (FAN_ERRNO_BITS 8, FAN_ERRNO_SHIFT 24).
inline constexpr std::uint64_t FAN_PRE_ACCESS_MASK = 0x00100000;
inline constexpr std::uint8_t INFO_TYPE_RANGE = 6;
inline constexpr std::uint8_t METADATA_VERSION = 3;  // FANOTIFY_METADATA_VERSION
inline constexpr std::size_t METADATA_LEN = 24;      // sizeof(fanotify_event_metadata)
inline constexpr std::size_t RANGE_INFO_LEN = 24;    // sizeof(fanotify_event_info_range)
inline constexpr std::size_t INFO_HEADER_LEN = 4;    // sizeof(fanotify_event_info_header)
inline constexpr std::size_t PRE_ACCESS_EVENT_LEN = METADATA_LEN + RANGE_INFO_LEN;
inline constexpr std::int32_t NO_FD = -1;  // FAN_NOFD

inline constexpr std::uint32_t RESPONSE_ALLOW = 0x01;  // FAN_ALLOW
inline constexpr std::uint32_t RESPONSE_DENY = 0x02;   // FAN_DENY
inline constexpr unsigned ERRNO_SHIFT = 24;            // FAN_ERRNO_SHIFT
inline constexpr std::uint32_t ERRNO_MASK = 0xff;      // FAN_ERRNO_MASK

// One FAN_PRE_ACCESS event: a reader wants [offset, offset+count) of the
// file behind `fd` (an fd the kernel installed in the reading process).
struct PreAccessEvent {
  std::int32_t fd;
  std::int32_t pid;
  std::uint64_t mask;
  std::uint64_t offset;
  std::uint64_t count;
};

enum class EventErrorKind {
  TRUNCATED_METADATA,  // fewer bytes left than fanotify_event_metadata
  BAD_EVENT_LEN,       // event_len < metadata_len, or past the bytes read
  BAD_VERSION,         // vers != FANOTIFY_METADATA_VERSION
  BAD_METADATA_LEN,    // metadata_len < 24 or > event_len
  BAD_INFO_RECORD,     // an info record header whose len is < 4, unaligned or overruns
  NO_RANGE,            // a FAN_PRE_ACCESS event without a range record
  NOT_PRE_ACCESS,      // a mask without FAN_PRE_ACCESS (we mark nothing else)
  QUEUE_OVERFLOW,      // FAN_Q_OVERFLOW (fd is FAN_NOFD)
};

struct EventError {
  EventErrorKind kind;
  std::size_t at = 0;  // byte offset of the event in the buffer
  // The fd the event carries when its metadata was readable, FAN_NOFD
  // otherwise. The caller must answer (deny) and close it.
  std::int32_t fd = NO_FD;
};

using ParsedEvent = std::variant<PreAccessEvent, EventError>;

struct ParsedEvents {
  std::vector<ParsedEvent> events;
  // Bytes covered by whole events. Parsing stops at an event_len of 0, at
  // the end of the buffer, or at an event whose length cannot be trusted
  // (the rest of the buffer cannot be framed: that error is the last entry).
  std::size_t consumed = 0;
};

ParsedEvents parse_fanotify_events(std::span<const std::byte> bytes);

std::string_view to_string(EventErrorKind kind);

// The response written back to the group fd: struct fanotify_response
// {s32 fd; u32 response;}.
std::array<std::byte, 8> encode_response(std::int32_t fd, std::uint32_t response);

// FAN_DENY with an errno (FAN_DENY_ERRNO). The kernel accepts only the
// errnos that open/read/write of a regular file may return
// (process_access_response, fs/notify/fanotify/fanotify_user.c, 6.14+:
// EIO, EPERM, EBUSY, ETXTBSY, EAGAIN, ENOSPC, EDQUOT; anything else is
// EINVAL and the event stays pending). Others become EIO here.
std::uint32_t deny_with_errno(int err);
bool deny_errno_accepted(int err);

// Test and fuzz helper: one event the way the kernel lays it out.
std::string encode_pre_access_event(std::int32_t fd, std::int32_t pid, std::uint64_t offset,
                                    std::uint64_t count);

}  // namespace ondemand::proto::fanotify
