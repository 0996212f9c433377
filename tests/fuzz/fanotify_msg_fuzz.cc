// libFuzzer target for proto::fanotify::parse_fanotify_events, which reads
// what read() on a pre-content fanotify group returns (and, after a crash,
// what a dead worker left in the pending record's inbox).
//
// Invariants: parsing is total (no crash, no overread under ASan), framing
// never passes the buffer, every parsed event re-encodes to the bytes it
// came from when it has the kernel's exact shape, and an fd is handed back
// only from an event whose metadata was complete and version 3.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>

#include "proto/fanotify_msg.h"

#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace ondemand::proto::fanotify;


template <typename T>
T field(const std::uint8_t* data, std::size_t offset) {
  T v;
  std::memcpy(&v, data + offset, sizeof v);
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto parsed = parse_fanotify_events({reinterpret_cast<const std::byte*>(data), size});
  FUZZ_CHECK(parsed.consumed <= size);
  FUZZ_CHECK(parsed.events.size() <= size / 4 + 1);
  std::size_t whole_events = 0;
  for (const auto& item : parsed.events) {
    if (const auto* err = std::get_if<EventError>(&item)) {
      FUZZ_CHECK(to_string(err->kind) != "?");
      FUZZ_CHECK(err->at <= size);
      if (err->fd != NO_FD) {
        // Only from a whole, version-3 metadata block, and the fd as sent.
        FUZZ_CHECK(err->at + METADATA_LEN <= size);
        FUZZ_CHECK(field<std::uint8_t>(data, err->at + 4) == METADATA_VERSION);
        FUZZ_CHECK(err->fd == field<std::int32_t>(data, err->at + 16));
      }
      if (err->kind == EventErrorKind::TRUNCATED_METADATA || err->kind == EventErrorKind::BAD_EVENT_LEN)
        FUZZ_CHECK(&item == &parsed.events.back());
    } else {
      const auto& ev = std::get<PreAccessEvent>(item);
      // Each parsed event is at least metadata plus a range record.
      FUZZ_CHECK(++whole_events * PRE_ACCESS_EVENT_LEN <= parsed.consumed);
      FUZZ_CHECK(ev.mask & FAN_PRE_ACCESS_MASK);
      const auto again = encode_pre_access_event(ev.fd, ev.pid, ev.offset, ev.count);
      const auto reparsed =
          parse_fanotify_events({reinterpret_cast<const std::byte*>(again.data()), again.size()});
      FUZZ_CHECK(reparsed.events.size() == 1);
      const auto* back = std::get_if<PreAccessEvent>(&reparsed.events[0]);
      FUZZ_CHECK(back && back->fd == ev.fd && back->pid == ev.pid && back->offset == ev.offset &&
                 back->count == ev.count);
    }
  }
  // Responses: every errno maps to one the kernel accepts.
  if (size >= 4) {
    const int err = field<std::int32_t>(data, 0) & 0xff;
    const auto response = deny_with_errno(err);
    FUZZ_CHECK((response & 0xff) == RESPONSE_DENY);
    FUZZ_CHECK(deny_errno_accepted(static_cast<int>(response >> ERRNO_SHIFT)));
  }
  return 0;
}
