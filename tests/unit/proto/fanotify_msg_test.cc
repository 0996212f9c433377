#include "proto/fanotify_msg.h"

#include <cerrno>
#include <cstring>

#include <catch2/catch.hpp>


namespace ondemand::proto::fanotify {
namespace {

std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

ParsedEvents parse(const std::string& s) { return parse_fanotify_events(as_bytes(s)); }

template <typename T>
void poke(std::string& s, std::size_t off, T v) {
  std::memcpy(s.data() + off, &v, sizeof v);
}

// By value: callers pass temporaries.
EventError error_of(const ParsedEvents& p, std::size_t i) {
  REQUIRE(i < p.events.size());
  const auto* e = std::get_if<EventError>(&p.events[i]);
  REQUIRE(e);
  return *e;
}

}  // namespace

TEST_CASE("fanotify: one pre-access event parses to fd, pid and range", "[fanotify][proto]") {
  const auto p = parse(encode_pre_access_event(7, 4242, 8192, 4096));
  REQUIRE(p.events.size() == 1);
  const auto& ev = std::get<PreAccessEvent>(p.events[0]);
  CHECK(ev.fd == 7);
  CHECK(ev.pid == 4242);
  CHECK(ev.offset == 8192);
  CHECK(ev.count == 4096);
  CHECK(ev.mask == FAN_PRE_ACCESS_MASK);
  CHECK(p.consumed == PRE_ACCESS_EVENT_LEN);
}

TEST_CASE("fanotify: several events per read, in order", "[fanotify][proto]") {
  std::string buf;
  for (int i = 0; i < 5; ++i) buf += encode_pre_access_event(10 + i, 1, i * 4096ull, 4096);
  const auto p = parse(buf);
  REQUIRE(p.events.size() == 5);
  for (int i = 0; i < 5; ++i) CHECK(std::get<PreAccessEvent>(p.events[i]).fd == 10 + i);
  CHECK(p.consumed == buf.size());
}

TEST_CASE("fanotify: a zeroed tail ends the list (the pending record's inbox)", "[fanotify][proto]") {
  std::string buf = encode_pre_access_event(5, 1, 0, 4096) + std::string(4096 - 48, '\0');
  const auto p = parse(buf);
  REQUIRE(p.events.size() == 1);
  CHECK(p.consumed == 48);
  CHECK(parse(std::string(4096, '\0')).events.empty());
  CHECK(parse(std::string()).events.empty());
  CHECK(parse(std::string(3, '\0')).events.empty());
}

TEST_CASE("fanotify: truncated and lying lengths are errors, never overreads", "[fanotify][proto]") {
  const auto ev = encode_pre_access_event(9, 1, 0, 4096);
  SECTION("short metadata") {
    const auto e = error_of(parse(ev.substr(0, 20)), 0);
    CHECK(e.kind == EventErrorKind::TRUNCATED_METADATA);
    CHECK(e.fd == NO_FD);
  }
  SECTION("three stray bytes") {
    CHECK(error_of(parse("\x01\x02\x03"), 0).kind == EventErrorKind::TRUNCATED_METADATA);
  }
  SECTION("event_len past the buffer: the fd still comes back to be answered") {
    const auto e = error_of(parse(ev.substr(0, 40)), 0);
    CHECK(e.kind == EventErrorKind::BAD_EVENT_LEN);
    CHECK(e.fd == 9);
  }
  SECTION("event_len below the metadata") {
    auto bad = ev;
    poke<std::uint32_t>(bad, 0, 8);
    const auto p = parse(bad);
    CHECK(error_of(p, 0).kind == EventErrorKind::BAD_EVENT_LEN);
    CHECK(p.events.size() == 1);
  }
  SECTION("metadata_len beyond event_len") {
    auto bad = ev;
    poke<std::uint16_t>(bad, 6, 60);
    const auto e = error_of(parse(bad), 0);
    CHECK(e.kind == EventErrorKind::BAD_METADATA_LEN);
    CHECK(e.fd == 9);
  }
  SECTION("info record longer than the event") {
    auto bad = ev;
    poke<std::uint16_t>(bad, 24 + 2, 200);
    CHECK(error_of(parse(bad), 0).kind == EventErrorKind::BAD_INFO_RECORD);
  }
  SECTION("info record of length 0 cannot loop forever") {
    auto bad = ev;
    poke<std::uint16_t>(bad, 24 + 2, 0);
    CHECK(error_of(parse(bad), 0).kind == EventErrorKind::BAD_INFO_RECORD);
  }
  SECTION("range record too short for offset and count") {
    auto bad = ev.substr(0, 24 + 8);
    poke<std::uint32_t>(bad, 0, 32);
    poke<std::uint16_t>(bad, 24 + 2, 8);
    CHECK(error_of(parse(bad), 0).kind == EventErrorKind::BAD_INFO_RECORD);
  }
}

TEST_CASE("fanotify: semantic errors keep framing and the fd", "[fanotify][proto]") {
  auto ev = encode_pre_access_event(11, 1, 0, 4096);
  const auto good = encode_pre_access_event(12, 1, 4096, 4096);
  SECTION("no range record") {
    auto bare = ev.substr(0, 24);
    poke<std::uint32_t>(bare, 0, 24);
    const auto p = parse(bare + good);
    CHECK(error_of(p, 0).kind == EventErrorKind::NO_RANGE);
    CHECK(error_of(p, 0).fd == 11);
    CHECK(std::get<PreAccessEvent>(p.events.at(1)).fd == 12);
  }
  SECTION("not FAN_PRE_ACCESS") {
    poke<std::uint64_t>(ev, 8, 0x10000);  // FAN_OPEN_PERM
    const auto p = parse(ev + good);
    CHECK(error_of(p, 0).kind == EventErrorKind::NOT_PRE_ACCESS);
    CHECK(error_of(p, 0).fd == 11);
    CHECK(std::holds_alternative<PreAccessEvent>(p.events.at(1)));
  }
  SECTION("unknown version: the fd is not trusted") {
    poke<std::uint8_t>(ev, 4, 4);
    const auto p = parse(ev + good);
    CHECK(error_of(p, 0).kind == EventErrorKind::BAD_VERSION);
    CHECK(error_of(p, 0).fd == NO_FD);
    CHECK(std::holds_alternative<PreAccessEvent>(p.events.at(1)));
  }
  SECTION("queue overflow") {
    poke<std::uint64_t>(ev, 8, 0x4000);
    poke<std::int32_t>(ev, 16, NO_FD);
    CHECK(error_of(parse(ev), 0).kind == EventErrorKind::QUEUE_OVERFLOW);
  }
  SECTION("an unknown info record before the range is skipped") {
    std::string extra(8, '\0');
    poke<std::uint8_t>(extra, 0, 99);
    poke<std::uint16_t>(extra, 2, 8);
    std::string two = ev.substr(0, 24) + extra + ev.substr(24);
    poke<std::uint32_t>(two, 0, static_cast<std::uint32_t>(two.size()));
    const auto p = parse(two);
    REQUIRE(p.events.size() == 1);
    CHECK(std::get<PreAccessEvent>(p.events[0]).count == 4096);
  }
}

TEST_CASE("fanotify: responses and FAN_DENY_ERRNO", "[fanotify][proto]") {
  const auto bytes = encode_response(42, RESPONSE_ALLOW);
  std::int32_t fd;
  std::uint32_t response;
  std::memcpy(&fd, bytes.data(), 4);
  std::memcpy(&response, bytes.data() + 4, 4);
  CHECK(fd == 42);
  CHECK(response == 1);
  // FAN_DENY_ERRNO(EIO) from include/uapi/linux/fanotify.h (6.14+).
  CHECK(deny_with_errno(EIO) == (0x02u | (5u << 24)));
  CHECK(deny_with_errno(ENOSPC) == (0x02u | (28u << 24)));
  // The kernel refuses other errnos with EINVAL: they become EIO.
  CHECK(!deny_errno_accepted(ENOENT));
  CHECK(deny_with_errno(ENOENT) == deny_with_errno(EIO));
}

}  // namespace ondemand::proto::fanotify
