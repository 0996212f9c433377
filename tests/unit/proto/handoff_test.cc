#include "proto/handoff.h"

#include <catch2/catch.hpp>

namespace ondemand::proto {
namespace {

std::string decode_error(std::string_view bytes) {
  auto r = decode_message(bytes);
  REQUIRE(std::holds_alternative<DecodeError>(r));
  return std::get<DecodeError>(r).what;
}

DecodedMessage decoded(std::string_view bytes) {
  auto r = decode_message(bytes);
  if (auto* e = std::get_if<DecodeError>(&r)) FAIL("unexpected decode error: " << e->what);
  return std::get<DecodedMessage>(r);
}

}  // namespace

TEST_CASE("decode_message refuses bytes that are not JSON without throwing", "[proto][handoff]") {
  for (std::string_view garbage : {std::string_view(""), std::string_view("}{"),
                                   std::string_view("{\"type\":"), std::string_view("\xff\xfe\x00", 3),
                                   std::string_view("{\"type\":\"hello\"} trailing")}) {
    INFO("input: " << garbage);
    CHECK(decode_error(garbage) == "not JSON");
  }
}

TEST_CASE("decode_message refuses JSON that is not an object", "[proto][handoff]") {
  for (auto text : {"[1,2]", "\"hello\"", "42", "null", "true"}) {
    INFO("input: " << text);
    CHECK(decode_error(text) == "not a JSON object");
  }
}

TEST_CASE("decode_message needs a string \"type\"", "[proto][handoff]") {
  for (auto text : {"{}", R"({"type":5})", R"({"type":null})", R"({"Type":"hello"})", R"({"type":["hello"]})"}) {
    INFO("input: " << text);
    CHECK_THAT(decode_error(text), Catch::Contains("type"));
  }
}

TEST_CASE("decode_message checks \"fds\" is a count in [0, 253]", "[proto][handoff]") {
  for (auto text : {R"({"type":"device","fds":-1})", R"({"type":"device","fds":"1"})",
                    R"({"type":"device","fds":1.5})", R"({"type":"device","fds":254})",
                    R"({"type":"device","fds":18446744073709551615})", R"({"type":"device","fds":null})",
                    R"({"type":"device","fds":true})"}) {
    INFO("input: " << text);
    CHECK_THAT(decode_error(text), Catch::Contains("fds"));
  }
  CHECK(decoded(R"({"type":"device","fds":0})").announced_fds == 0);
  CHECK(decoded(R"({"type":"device","fds":1})").announced_fds == 1);
  CHECK(decoded(R"({"type":"device","fds":253})").announced_fds == 253);
  CHECK(decoded(R"({"type":"device"})").announced_fds == 0);
}

TEST_CASE("decode_message refuses a message over MAX_MESSAGE_BYTES", "[proto][handoff]") {
  std::string big = R"({"type":"x","pad":")" + std::string(MAX_MESSAGE_BYTES, 'a') + "\"}";
  CHECK_THAT(decode_error(big), Catch::Contains("too large"));
}

TEST_CASE("an encoded hello decodes back to the same type and fields", "[proto][handoff]") {
  const auto msg = decoded(encode_message(make_hello("worker", 1234)));
  CHECK(msg.type == "hello");
  CHECK(msg.announced_fds == 0);
  CHECK(msg.body["role"] == "worker");
  CHECK(msg.body["pid"] == 1234);
  CHECK(msg.body["proto_min"] == HANDOFF_PROTO_MIN);
  CHECK(msg.body["proto_max"] == HANDOFF_PROTO_MAX);
  CHECK(msg.body["version"] == std::string(VERSION));

  const auto unrec = decoded(encode_message(make_unrecognized("frobnicate")));
  CHECK(unrec.type == "unrecognized");
  CHECK(unrec.body["what"] == "frobnicate");
}

TEST_CASE("negotiate picks the highest common version, or none when ranges are disjoint",
          "[proto][handoff]") {
  CHECK(negotiate(1, 3, 2, 5) == 3u);
  CHECK(negotiate(2, 5, 1, 3) == 3u);
  CHECK(negotiate(1, 1, 1, 1) == 1u);
  CHECK(negotiate(1, 2, 2, 3) == 2u);  // single-version overlap
  CHECK(negotiate(1, 4, 2, 3) == 3u);  // one range inside the other
  CHECK_FALSE(negotiate(1, 1, 2, 2).has_value());
  CHECK_FALSE(negotiate(3, 4, 1, 2).has_value());
  CHECK_FALSE(negotiate(2, 1, 1, 2).has_value());  // an empty range matches nothing
}

TEST_CASE("negotiate agrees both ways: A->B and B->A settle on the same version",
          "[proto][handoff]") {
  // An old worker (max 1) upgraded to a new one (max 2) and back: each pair
  // must agree whichever side asks.
  struct Range { std::uint32_t lo, hi; };
  const Range ranges[] = {{1, 1}, {1, 2}, {2, 2}, {1, 5}, {3, 4}, {5, 9}};
  for (auto a : ranges)
    for (auto b : ranges) {
      INFO("A=[" << a.lo << "," << a.hi << "] B=[" << b.lo << "," << b.hi << "]");
      const auto ab = negotiate(a.lo, a.hi, b.lo, b.hi);
      CHECK(ab == negotiate(b.lo, b.hi, a.lo, a.hi));
      if (ab) {
        CHECK(*ab >= a.lo);
        CHECK(*ab <= a.hi);
        CHECK(*ab >= b.lo);
        CHECK(*ab <= b.hi);
      }
    }
}

}  // namespace ondemand::proto
