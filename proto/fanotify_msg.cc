#include "proto/fanotify_msg.h"

#include "proto/bytes.h"

#include <cerrno>
#include <cstring>

namespace ondemand::proto::fanotify {
namespace {

template <typename T>
void store(std::string& out, std::size_t offset, T value) {
  std::memcpy(out.data() + offset, &value, sizeof(T));
}

constexpr std::uint64_t FAN_Q_OVERFLOW_MASK = 0x00004000;

// Field offsets of struct fanotify_event_metadata and of the info records.
constexpr std::size_t OFF_EVENT_LEN = 0;
constexpr std::size_t OFF_VERS = 4;
constexpr std::size_t OFF_METADATA_LEN = 6;
constexpr std::size_t OFF_MASK = 8;
constexpr std::size_t OFF_FD = 16;
constexpr std::size_t OFF_PID = 20;
constexpr std::size_t OFF_INFO_TYPE = 0;
constexpr std::size_t OFF_INFO_LEN = 2;
constexpr std::size_t OFF_RANGE_OFFSET = 8;
constexpr std::size_t OFF_RANGE_COUNT = 16;

bool all_zero(std::span<const std::byte> bytes) {
  for (auto b : bytes)
    if (b != std::byte{0}) return false;
  return true;
}

struct Range {
  std::uint64_t offset = 0;
  std::uint64_t count = 0;
};

// Walks the info records of one event (bytes after metadata_len). Returns
// false when a record header is malformed.
bool find_range(std::span<const std::byte> records, bool& found, Range& range) {
  std::size_t pos = 0;
  while (pos < records.size()) {
    if (records.size() - pos < INFO_HEADER_LEN) return false;
    const auto type = load<std::uint8_t>(records, pos + OFF_INFO_TYPE);
    const auto len = load<std::uint16_t>(records, pos + OFF_INFO_LEN);
    if (len < INFO_HEADER_LEN || len > records.size() - pos) return false;
    if (type == INFO_TYPE_RANGE) {
      if (len < RANGE_INFO_LEN) return false;
      if (!found) {
        range.offset = load<std::uint64_t>(records, pos + OFF_RANGE_OFFSET);
        range.count = load<std::uint64_t>(records, pos + OFF_RANGE_COUNT);
        found = true;
      }
    }
    pos += len;
  }
  return true;
}

}  // namespace

ParsedEvents parse_fanotify_events(std::span<const std::byte> bytes) {
  ParsedEvents out;
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    const auto rest = bytes.subspan(pos);
    if (rest.size() < sizeof(std::uint32_t)) {
      if (!all_zero(rest)) out.events.push_back(EventError{EventErrorKind::TRUNCATED_METADATA, pos});
      break;
    }
    const auto event_len = load<std::uint32_t>(rest, OFF_EVENT_LEN);
    if (event_len == 0) break;
    if (rest.size() < METADATA_LEN) {
      out.events.push_back(EventError{EventErrorKind::TRUNCATED_METADATA, pos});
      break;
    }
    const auto vers = load<std::uint8_t>(rest, OFF_VERS);
    const auto metadata_len = load<std::uint16_t>(rest, OFF_METADATA_LEN);
    const auto mask = load<std::uint64_t>(rest, OFF_MASK);
    const auto fd = load<std::int32_t>(rest, OFF_FD);
    const auto pid = load<std::int32_t>(rest, OFF_PID);
    // An fd is handed back only where the v3 layout is trusted: answering a
    // number read from the wrong place could release another reader.
    const bool layout_ok = vers == METADATA_VERSION;
    const std::int32_t owned_fd = layout_ok ? fd : NO_FD;
    if (event_len < METADATA_LEN || event_len > rest.size()) {
      out.events.push_back(EventError{EventErrorKind::BAD_EVENT_LEN, pos, owned_fd});
      break;
    }
    out.consumed = pos + event_len;
    const auto event = rest.first(event_len);
    pos += event_len;
    if (!layout_ok) {
      out.events.push_back(EventError{EventErrorKind::BAD_VERSION, pos - event_len});
      continue;
    }
    const std::size_t at = pos - event_len;
    if (mask & FAN_Q_OVERFLOW_MASK) {
      out.events.push_back(EventError{EventErrorKind::QUEUE_OVERFLOW, at, fd});
      continue;
    }
    if (metadata_len < METADATA_LEN || metadata_len > event_len) {
      out.events.push_back(EventError{EventErrorKind::BAD_METADATA_LEN, at, fd});
      continue;
    }
    bool found = false;
    Range range;
    if (!find_range(event.subspan(metadata_len), found, range)) {
      out.events.push_back(EventError{EventErrorKind::BAD_INFO_RECORD, at, fd});
      continue;
    }
    if (!(mask & FAN_PRE_ACCESS_MASK)) {
      out.events.push_back(EventError{EventErrorKind::NOT_PRE_ACCESS, at, fd});
      continue;
    }
    if (!found) {
      out.events.push_back(EventError{EventErrorKind::NO_RANGE, at, fd});
      continue;
    }
    out.events.push_back(PreAccessEvent{fd, pid, mask, range.offset, range.count});
  }
  return out;
}

std::string_view to_string(EventErrorKind kind) {
  switch (kind) {
    case EventErrorKind::TRUNCATED_METADATA: return "truncated fanotify_event_metadata";
    case EventErrorKind::BAD_EVENT_LEN: return "event_len outside the bytes read";
    case EventErrorKind::BAD_VERSION: return "unknown fanotify metadata version";
    case EventErrorKind::BAD_METADATA_LEN: return "metadata_len outside the event";
    case EventErrorKind::BAD_INFO_RECORD: return "malformed info record";
    case EventErrorKind::NO_RANGE: return "FAN_PRE_ACCESS without a range record";
    case EventErrorKind::NOT_PRE_ACCESS: return "event is not FAN_PRE_ACCESS";
    case EventErrorKind::QUEUE_OVERFLOW: return "FAN_Q_OVERFLOW";
  }
  return "?";
}

std::array<std::byte, 8> encode_response(std::int32_t fd, std::uint32_t response) {
  std::array<std::byte, 8> out{};
  std::memcpy(out.data(), &fd, sizeof fd);
  std::memcpy(out.data() + sizeof fd, &response, sizeof response);
  return out;
}

bool deny_errno_accepted(int err) {
  switch (err) {
    case EIO: case EPERM: case EBUSY: case ETXTBSY: case EAGAIN: case ENOSPC: case EDQUOT:
      return true;
    default:
      return false;
  }
}

std::uint32_t deny_with_errno(int err) {
  if (!deny_errno_accepted(err)) err = EIO;
  return RESPONSE_DENY | ((static_cast<std::uint32_t>(err) & ERRNO_MASK) << ERRNO_SHIFT);
}

std::string encode_pre_access_event(std::int32_t fd, std::int32_t pid, std::uint64_t offset,
                                    std::uint64_t count) {
  std::string out(PRE_ACCESS_EVENT_LEN, '\0');
  store<std::uint32_t>(out, OFF_EVENT_LEN, PRE_ACCESS_EVENT_LEN);
  store<std::uint8_t>(out, OFF_VERS, METADATA_VERSION);
  store<std::uint16_t>(out, OFF_METADATA_LEN, METADATA_LEN);
  store<std::uint64_t>(out, OFF_MASK, FAN_PRE_ACCESS_MASK);
  store<std::int32_t>(out, OFF_FD, fd);
  store<std::int32_t>(out, OFF_PID, pid);
  store<std::uint8_t>(out, METADATA_LEN + OFF_INFO_TYPE, INFO_TYPE_RANGE);
  store<std::uint16_t>(out, METADATA_LEN + OFF_INFO_LEN, RANGE_INFO_LEN);
  store<std::uint64_t>(out, METADATA_LEN + OFF_RANGE_OFFSET, offset);
  store<std::uint64_t>(out, METADATA_LEN + OFF_RANGE_COUNT, count);
  return out;
}

}  // namespace ondemand::proto::fanotify
