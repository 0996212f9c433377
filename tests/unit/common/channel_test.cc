#include "common/channel.h"

#include <chrono>
#include <vector>

#include <catch2/catch.hpp>

#include "common/fd_passing.h"
#include "tests/unit/test_util.h"

namespace ondemand {
namespace {
using namespace std::chrono_literals;

SocketPair pair_or_fail() {
  auto p = make_seqpacket_pair();
  REQUIRE(p.err == 0);
  return p;
}
}  // namespace

TEST_CASE("receive_message returns the decoded message with exactly the announced fds",
          "[common][channel]") {
  auto p = pair_or_fail();
  auto memfd = test::make_memfd("device");
  const int fds[] = {memfd.get()};
  send(p.a.get(), proto::msg::Device{.generation = 4, .rdev = 1, .shm = "s"}, fds);
  auto msg = receive_message(p.b.get(), 1000ms);
  REQUIRE(std::holds_alternative<proto::msg::Device>(msg.message));
  CHECK(std::get<proto::msg::Device>(msg.message).generation == 4);
  REQUIRE(msg.fds.size() == 1);
  CHECK(test::same_file(msg.fds[0].get(), memfd.get()));
}

TEST_CASE("receive_message throws when the fd count differs from the announced one, leaking none",
          "[common][channel]") {
  struct Case {
    const char* what;
    int announced;
    std::size_t carried;
  };
  const Case cases[] = {
      {"announced 1, carried 0", 1, 0},
      {"announced 1, carried 2", 1, 2},
      {"announced nothing, carried 1", -1, 1},
      {"announced 0, carried 3", 0, 3},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    auto p = pair_or_fail();
    {
      std::vector<UniqueFd> owned;
      std::vector<int> fds;
      for (std::size_t i = 0; i < c.carried; ++i) {
        owned.push_back(test::make_memfd("chan"));
        fds.push_back(owned.back().get());
      }
      std::string body = R"({"type":"device","generation":1,"rdev":1,"shm":"s","restore":true,"standby":false,"spare":false)";
      if (c.announced >= 0) body += ",\"fds\":" + std::to_string(c.announced);
      body += "}";
      REQUIRE(send_message(p.a.get(), body, fds) == 0);
    }
    const auto before = test::open_fd_count();
    CHECK_THROWS_MATCHES(receive_message(p.b.get(), 1000ms), ChannelError,
                         Catch::Matchers::Predicate<ChannelError>(
                             [](const ChannelError& e) {
                               return std::string_view(e.what()).find("fds") !=
                                      std::string_view::npos;
                             },
                             "message names the fd counts"));
    CHECK(test::open_fd_count() == before);
  }
}

TEST_CASE("receive_message times out with ChannelError when nothing arrives", "[common][channel]") {
  auto p = pair_or_fail();
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(receive_message(p.b.get(), 100ms), Catch::Contains("timed out"));
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took >= 90ms);
  CHECK(took < 2s);
}

TEST_CASE("receive_message throws ChannelError on bytes that are not a message", "[common][channel]") {
  for (std::string_view garbage : {std::string_view("\x01\x02\x03garbage", 10),
                                   std::string_view("[\"not an object\"]"),
                                   std::string_view("{\"no\":\"type\"}")}) {
    auto p = pair_or_fail();
    REQUIRE(send_message(p.a.get(), garbage) == 0);
    CHECK_THROWS_WITH(receive_message(p.b.get(), 1000ms), Catch::Contains("bad message"));
  }
}

TEST_CASE("receive_message throws ChannelError when the peer closed", "[common][channel]") {
  auto p = pair_or_fail();
  p.a.reset();
  CHECK_THROWS_WITH(receive_message(p.b.get(), 1000ms), Catch::Contains("closed"));
}

// Issue 9.12: an empty datagram is a bad message, not the peer's close (a
// caller that took it for EOF gave up on a live peer).
TEST_CASE("receive_message: a zero-length datagram is a bad message, not a closed peer", "[common][channel]") {
  auto p = pair_or_fail();
  REQUIRE(send_message(p.a.get(), "") == 0);
  try {
    receive_message(p.b.get(), 1000ms);
    FAIL("no ChannelError");
  } catch (const ChannelError& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("bad message"));
    CHECK_THAT(what, !Catch::Contains("closed"));
  }
}

TEST_CASE("send to a closed peer throws ChannelError; send_quietly says false", "[common][channel]") {
  auto p = pair_or_fail();
  p.b.reset();
  CHECK_THROWS_AS(send(p.a.get(), proto::msg::Stop{}), ChannelError);
  CHECK_FALSE(send_quietly(p.a.get(), proto::msg::Stop{}));
}

TEST_CASE("send refuses a wrong fd count and a message over one datagram", "[common][channel]") {
  auto p = pair_or_fail();
  CHECK_THROWS_WITH(send(p.a.get(), proto::msg::Device{}), Catch::Contains("fds"));
  CHECK_THROWS_WITH(send(p.a.get(), proto::msg::Refused{std::string(proto::MAX_MESSAGE_BYTES, 'x')}),
                    Catch::Contains("datagram"));
}

}  // namespace ondemand
