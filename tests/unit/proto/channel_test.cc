// The typed channel protocol: every message survives encode -> decode, and
// decode() never throws and never lets a malformed message through (a
// missing field, a wrong type, an out-of-range number, a wrong fd count).
#include "proto/channel.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

namespace ondemand::proto {
namespace {

DecodeError decode_error(std::string_view bytes, std::size_t fds = 0) {
  auto r = decode(bytes, fds);
  REQUIRE(std::holds_alternative<DecodeError>(r));
  return std::get<DecodeError>(r);
}

Message decoded(std::string_view bytes, std::size_t fds) {
  auto r = decode(bytes, fds);
  if (auto* e = std::get_if<DecodeError>(&r)) FAIL("unexpected decode error: " << e->what);
  return std::get<Message>(r);
}

template <class T>
T round_trip(const T& m) {
  const std::string bytes = encode(m);
  REQUIRE_FALSE(bytes.empty());
  const Message back = decoded(bytes, fds_of(m));
  REQUIRE(std::holds_alternative<T>(back));
  return std::get<T>(back);
}

// One valid instance of every message type.
std::vector<Message> one_of_each() {
  return {
      make_hello("worker", 42),
      msg::Device{7, 0x0a3b, "ondemand-x", true, false, true},
      msg::Serving{9},
      msg::Stop{},
      msg::Takeover{11},
      msg::Handover{5000},
      msg::HandoverPeer{},
      msg::Objects{{{1, "blob-a"}, {2, "blob-b"}}},
      msg::ObjectsDone{2},
      msg::HandedOver{2},
      msg::Resume{},
      msg::Adopt{1234, 5, 0x0a3b, "0.1.0", true},
      msg::Refused{"no"},
      msg::Busy{"handing over", 100},
      msg::Unrecognized{"frob"},
      msg::FanotifyGroup{3, "ondemand-x", true, false},
      msg::CacheFiles{{{"meta", "", 8192, true}, {"data", "d1", 1 << 20, false}}},
      msg::CacheFilesAdded{4},
      msg::AdoptFanotify{1234, 6, "0.1.0", true},
  };
}

}  // namespace

TEST_CASE("every channel message round-trips with its fields", "[proto][channel]") {
  const auto hello = round_trip(make_hello("worker", 42));
  CHECK(hello.role == "worker");
  CHECK(hello.pid == 42);
  CHECK(hello.proto_min == HANDOFF_PROTO_MIN);
  CHECK(hello.proto_max == HANDOFF_PROTO_MAX);
  CHECK(hello.version == std::string(VERSION));

  const auto device = round_trip(msg::Device{7, 0x0a3b, "ondemand-x", true, false, true});
  CHECK(device.generation == 7);
  CHECK(device.rdev == 0x0a3b);
  CHECK(device.shm == "ondemand-x");
  CHECK(device.restore);
  CHECK_FALSE(device.standby);
  CHECK(device.spare);

  CHECK(round_trip(msg::Serving{9}).generation == 9);
  CHECK(round_trip(msg::Takeover{11}).generation == 11u);
  CHECK_FALSE(round_trip(msg::Takeover{}).generation.has_value());
  CHECK(round_trip(msg::Handover{5000}).drain_ms == 5000);
  const auto objects = round_trip(msg::Objects{{{1, "blob-a", "d1"}, {4294967295u, "blob-b"}}});
  CHECK(objects.objects == std::vector<msg::ObjectEntry>{{1, "blob-a", "d1"}, {4294967295u, "blob-b", ""}});
  CHECK(round_trip(msg::ObjectsDone{2}).count == 2);
  CHECK(round_trip(msg::HandedOver{3}).objects == 3);
  const auto adopt = round_trip(msg::Adopt{1234, 5, 0x0a3b, "0.1.0", true});
  CHECK(adopt.pid == 1234);
  CHECK(adopt.generation == 5);
  CHECK(adopt.rdev == 0x0a3b);
  CHECK(adopt.version == "0.1.0");
  CHECK(adopt.serving);
  CHECK(round_trip(msg::Refused{"no"}).why == "no");
  const auto busy = round_trip(msg::Busy{"handing over", 100});
  CHECK(busy.why == "handing over");
  CHECK(busy.retry_ms == 100);
  CHECK(round_trip(msg::Unrecognized{"frob"}).what == "frob");
  round_trip(msg::Stop{});
  round_trip(msg::HandoverPeer{});
  round_trip(msg::Resume{});

  const auto group = round_trip(msg::FanotifyGroup{3, "ondemand-x", true, true});
  CHECK(group.generation == 3);
  CHECK(group.shm == "ondemand-x");
  CHECK(group.standby);
  CHECK(group.spare);
  const std::vector<msg::CacheFileEntry> files{{"meta", "", 8192, true}, {"data", "d1", 1ull << 40, false}};
  CHECK(round_trip(msg::CacheFiles{files}).files == files);
  CHECK(round_trip(msg::CacheFilesAdded{4}).count == 4);
  const auto adopt_fanotify = round_trip(msg::AdoptFanotify{1234, 6, "0.1.0", true});
  CHECK(adopt_fanotify.pid == 1234);
  CHECK(adopt_fanotify.generation == 6);
  CHECK(adopt_fanotify.version == "0.1.0");
  CHECK(adopt_fanotify.serving);
}

TEST_CASE("the fds a message carries: device, handover, handover-peer, adopt one; objects one each; "
          "fanotify-group and adopt-fanotify two; cache-files one each",
          "[proto][channel]") {
  CHECK(fds_of(msg::Device{}) == 1);
  CHECK(fds_of(msg::Handover{}) == 1);
  CHECK(fds_of(msg::HandoverPeer{}) == 1);
  CHECK(fds_of(msg::Adopt{}) == 1);
  CHECK(fds_of(msg::FanotifyGroup{}) == 2);     // the group, the pending-event record
  CHECK(fds_of(msg::AdoptFanotify{}) == 2);     // the same, handed back
  CHECK(fds_of(msg::CacheFiles{{{"a", "", 1, false}, {"b", "", 1, false}}}) == 2);  // a writer each
  CHECK(fds_of(msg::CacheFilesAdded{}) == 0);
  CHECK(fds_of(msg::Objects{{{1, "a"}, {2, "b"}, {3, "c"}}}) == 3);
  CHECK(fds_of(msg::Serving{}) == 0);
  CHECK(fds_of(make_hello("worker", 1)) == 0);
}

TEST_CASE("a wrong fd count is refused, whatever was announced", "[proto][channel]") {
  for (const auto& m : one_of_each()) {
    const std::string bytes = encode(m);
    const std::size_t right = fds_of(m);
    INFO(bytes);
    CHECK(decode_error(bytes, right + 1).what.find("fds") != std::string::npos);
    if (right > 0) CHECK(decode_error(bytes, right - 1).known_type);
  }
  // Announced count differs from what the type carries.
  CHECK(decode_error(R"({"type":"device","fds":2,"generation":1,"rdev":1,"shm":"s","restore":true,"standby":false,"spare":false})",
                     2)
            .known_type);
  CHECK_THAT(decode_error(R"({"type":"stop","fds":1})", 1).what, Catch::Contains("fds"));
}

TEST_CASE("every required field missing is an error naming the type and the field", "[proto][channel]") {
  for (const auto& m : one_of_each()) {
    const auto full = nlohmann::json::parse(encode(m));
    for (const auto& [key, value] : full.items()) {
      if (key == "type" || key == "fds") continue;
      if (std::holds_alternative<msg::Takeover>(m) && key == "generation") continue;  // optional
      auto without = full;
      without.erase(key);
      INFO(without.dump());
      const auto e = decode_error(without.dump(), fds_of(m));
      CHECK(e.known_type);
      CHECK(e.type == full["type"]);
      CHECK_THAT(e.what, Catch::Contains(key) && Catch::Contains("missing"));
    }
  }
}

TEST_CASE("every field with a wrong type is an error, never an exception", "[proto][channel]") {
  const auto category = [](const nlohmann::json& v) {
    if (v.is_string()) return 's';
    if (v.is_boolean()) return 'b';
    if (v.is_number_unsigned()) return 'u';
    if (v.is_array()) return 'a';
    return '?';
  };
  const nlohmann::json wrong[] = {"x", -1, 1.5, nullptr, nlohmann::json::array({1}), nlohmann::json::object(), true,
                                  18446744073709551615ull};
  for (const auto& m : one_of_each()) {
    const auto full = nlohmann::json::parse(encode(m));
    for (const auto& [key, value] : full.items()) {
      if (key == "type" || key == "fds") continue;
      for (const auto& w : wrong) {
        if (category(w) == category(value)) continue;          // the same kind: may be valid
        if (key == "pid" && w.is_number_integer()) continue;    // a signed field
        auto changed = full;
        changed[key] = w;
        INFO(changed.dump());
        auto r = decode(changed.dump(), fds_of(m));
        if (auto* e = std::get_if<DecodeError>(&r)) {
          CHECK(e->known_type);
          CHECK_THAT(e->what, Catch::Contains(key));
        } else {
          FAIL("decoded a message with a wrong field: " << changed.dump());
        }
      }
    }
  }
}

TEST_CASE("integers out of their range are refused", "[proto][channel]") {
  const auto base = nlohmann::json::parse(encode(make_hello("worker", 1)));
  auto big_min = base;
  big_min["proto_min"] = 4294967296ull;  // u32 + 1
  CHECK_THAT(decode_error(big_min.dump()).what, Catch::Contains("proto_min") && Catch::Contains("range"));
  auto big_pid = base;
  big_pid["pid"] = 9223372036854775808ull;  // i64 max + 1
  CHECK_THAT(decode_error(big_pid.dump()).what, Catch::Contains("pid"));
  const auto e = decode_error(R"({"type":"objects","fds":1,"objects":[{"object_id":4294967296,"blob_id":"a"}]})", 1);
  CHECK_THAT(e.what, Catch::Contains("object_id"));
  CHECK_THAT(decode_error(R"({"type":"serving","generation":-3})").what, Catch::Contains("negative"));
}

TEST_CASE("garbage, non-objects, a missing type and an unknown type are refused", "[proto][channel]") {
  for (std::string_view garbage : {std::string_view(""), std::string_view("}{"), std::string_view("{\"type\":"),
                                   std::string_view("\xff\xfe\x00", 3),
                                   std::string_view("{\"type\":\"hello\"} trailing")}) {
    CHECK(decode_error(garbage).what == "not JSON");
  }
  for (auto text : {"[1,2]", "\"hello\"", "42", "null"}) CHECK(decode_error(text).what == "not a JSON object");
  for (auto text : {"{}", R"({"type":5})", R"({"type":null})"}) CHECK_THAT(decode_error(text).what, Catch::Contains("type"));
  const auto unknown = decode_error(R"({"type":"frobnicate"})");
  CHECK_FALSE(unknown.known_type);
  CHECK(unknown.type == "frobnicate");
  CHECK_THAT(unknown.what, Catch::Contains("frobnicate"));
}

TEST_CASE("unknown fields are ignored: a newer peer may add some", "[proto][channel]") {
  auto j = nlohmann::json::parse(encode(msg::Serving{3}));
  j["future_field"] = {{"x", 1}};
  CHECK(std::get<msg::Serving>(decoded(j.dump(), 0)).generation == 3);
}

// Issue 8: the handover carries each object's domain, so that a shared-domain
// blob keeps its reference across an upgrade; a predecessor that predates
// the field sends none.
TEST_CASE("cache-files entries: every field required and typed", "[proto][channel]") {
  const auto full = nlohmann::json::parse(encode(msg::CacheFiles{{{"meta", "", 8192, true}}}));
  for (const auto& [key, value] : full["files"][0].items()) {
    auto without = full;
    without["files"][0].erase(key);
    CHECK_THAT(decode_error(without.dump(), 1).what, Catch::Contains("files[0]") && Catch::Contains(key));
    auto wrong = full;
    wrong["files"][0][key] = value.is_string() ? nlohmann::json(5) : nlohmann::json("x");
    CHECK_THAT(decode_error(wrong.dump(), 1).what, Catch::Contains(key));
  }
  auto not_object = full;
  not_object["files"][0] = 5;
  CHECK_THAT(decode_error(not_object.dump(), 1).what, Catch::Contains("files[0]"));
}

TEST_CASE("handover entries: domain optional on the wire, typed when present", "[proto][channel]") {
  auto j = nlohmann::json::parse(encode(msg::Objects{{{7, "shared", "d1"}}}));
  CHECK(j["objects"][0]["domain"] == "d1");
  CHECK(std::get<msg::Objects>(decoded(j.dump(), 1)).objects == std::vector<msg::ObjectEntry>{{7, "shared", "d1"}});
  j["objects"][0].erase("domain");
  CHECK(std::get<msg::Objects>(decoded(j.dump(), 1)).objects == std::vector<msg::ObjectEntry>{{7, "shared", ""}});
  j["objects"][0]["domain"] = 5;
  CHECK_THAT(decode_error(j.dump(), 1).what, Catch::Contains("domain"));
}

TEST_CASE("a message over MAX_MESSAGE_BYTES is refused by decode and never encoded", "[proto][channel]") {
  std::string big = R"({"type":"refused","why":")" + std::string(MAX_MESSAGE_BYTES, 'a') + "\"}";
  CHECK_THAT(decode_error(big).what, Catch::Contains("too large"));
  CHECK(encode(msg::Refused{std::string(MAX_MESSAGE_BYTES, 'a')}).empty());
  // Invalid UTF-8 in a string is replaced, not thrown.
  CHECK_FALSE(encode(msg::Refused{"bad \xff utf8"}).empty());
}

// Issue 9, hole 7: one "objects" message per 253 fds overflowed 64 KiB with
// long blob ids (about 230 objects), so the successor failed to read it.
TEST_CASE("split_objects: batches fit one datagram by fd count and by size", "[proto][channel]") {
  std::vector<msg::ObjectEntry> objects;
  for (std::uint32_t i = 0; i < 300; ++i) objects.push_back({4000000000u + i, std::string(245, 'b') + std::to_string(i)});
  const auto batches = split_objects(objects);
  REQUIRE(batches);
  CHECK(batches->size() > 1);
  std::size_t i = 0, total = 0;
  for (const std::size_t n : *batches) {
    REQUIRE(n >= 1);
    REQUIRE(n <= MAX_FDS_PER_MESSAGE);
    msg::Objects batch{{objects.begin() + static_cast<std::ptrdiff_t>(i), objects.begin() + static_cast<std::ptrdiff_t>(i + n)}};
    const std::string bytes = encode(batch);
    CHECK_FALSE(bytes.empty());
    CHECK(bytes.size() <= MAX_MESSAGE_BYTES);
    CHECK(std::get<msg::Objects>(decoded(bytes, n)).objects == batch.objects);
    i += n;
    total += n;
  }
  CHECK(total == objects.size());
  // The old cut (253 per message) does not fit.
  msg::Objects old_cut{{objects.begin(), objects.begin() + 253}};
  CHECK(encode(old_cut).empty());

  // Short ids: limited by the fd count.
  std::vector<msg::ObjectEntry> small(600, {1, "x"});
  const auto by_fds = split_objects(small);
  REQUIRE(by_fds);
  CHECK(*by_fds == std::vector<std::size_t>{253, 253, 94});
  CHECK(split_objects({})->empty());
  CHECK_FALSE(split_objects({{1, std::string(MAX_MESSAGE_BYTES, 'x')}}).has_value());
}

TEST_CASE("negotiate picks the highest common version, or none when ranges are disjoint", "[proto][channel]") {
  CHECK(negotiate(1, 3, 2, 5) == 3u);
  CHECK(negotiate(2, 5, 1, 3) == 3u);
  CHECK(negotiate(1, 1, 1, 1) == 1u);
  CHECK(negotiate(1, 2, 2, 3) == 2u);
  CHECK(negotiate(1, 4, 2, 3) == 3u);
  CHECK_FALSE(negotiate(1, 1, 2, 2).has_value());
  CHECK_FALSE(negotiate(3, 4, 1, 2).has_value());
  CHECK_FALSE(negotiate(2, 1, 1, 2).has_value());
}

TEST_CASE("negotiate agrees both ways: A->B and B->A settle on the same version", "[proto][channel]") {
  struct Range { std::uint32_t lo, hi; };
  const Range ranges[] = {{1, 1}, {1, 2}, {2, 2}, {1, 5}, {3, 4}, {5, 9}};
  for (auto a : ranges)
    for (auto b : ranges) {
      const auto ab = negotiate(a.lo, a.hi, b.lo, b.hi);
      CHECK(ab == negotiate(b.lo, b.hi, a.lo, a.hi));
      if (ab) {
        CHECK(*ab >= std::max(a.lo, b.lo));
        CHECK(*ab <= std::min(a.hi, b.hi));
      }
    }
}

}  // namespace ondemand::proto
