#include "common/fd_passing.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <vector>

#include <catch2/catch.hpp>

#include "tests/unit/test_util.h"

namespace ondemand {
namespace {

std::vector<UniqueFd> memfds(std::size_t n) {
  std::vector<UniqueFd> fds;
  for (std::size_t i = 0; i < n; ++i) fds.push_back(test::make_memfd("fdpass"));
  return fds;
}

std::vector<int> raw(const std::vector<UniqueFd>& fds) {
  std::vector<int> out;
  for (const auto& f : fds) out.push_back(f.get());
  return out;
}

SocketPair pair_or_fail() {
  auto p = make_seqpacket_pair();
  REQUIRE(p.err == 0);
  REQUIRE(p.a.valid());
  REQUIRE(p.b.valid());
  return p;
}

}  // namespace

TEST_CASE("make_seqpacket_pair gives two CLOEXEC SOCK_SEQPACKET ends", "[common][fd_passing]") {
  auto p = pair_or_fail();
  for (int fd : {p.a.get(), p.b.get()}) {
    CHECK((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
    int type = 0;
    socklen_t len = sizeof type;
    REQUIRE(::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0);
    CHECK(type == SOCK_SEQPACKET);
  }
}

TEST_CASE("send/recv_message carry the bytes and 0, 1, 3 or 253 fds that refer to the same files with CLOEXEC",
          "[common][fd_passing]") {
  const std::size_t count = GENERATE(0u, 1u, 3u, 253u);
  INFO("fds: " << count);
  auto p = pair_or_fail();
  auto sent = memfds(count);
  const auto fds = raw(sent);
  const std::string payload = "payload-" + std::to_string(count);
  REQUIRE(send_message(p.a.get(), payload, fds) == 0);

  auto got = recv_message(p.b.get(), 1024, 253);
  REQUIRE(got.err == 0);
  CHECK_FALSE(got.peer_closed());
  CHECK(got.bytes == payload);
  REQUIRE(got.fds.size() == count);
  for (std::size_t i = 0; i < count; ++i) {
    INFO("fd #" << i);
    CHECK(got.fds[i].get() != sent[i].get());  // a new descriptor...
    CHECK(test::same_file(got.fds[i].get(), sent[i].get()));  // ...for the same file, in order
    CHECK((::fcntl(got.fds[i].get(), F_GETFD) & FD_CLOEXEC) != 0);
  }
}

TEST_CASE("send_message refuses more than SCM_MAX_FD fds", "[common][fd_passing]") {
  auto p = pair_or_fail();
  auto sent = memfds(254);
  CHECK(send_message(p.a.get(), "x", raw(sent)) == EINVAL);
}

TEST_CASE("recv_message: more fds than max_fds is EMSGSIZE and none of them leaks",
          "[common][fd_passing]") {
  // (sent, max): 2 with max 1 fits the control buffer's padding without
  // MSG_CTRUNC, so only the count check catches it; 3 with max 1 truncates.
  const auto [sent_count, max_fds] = GENERATE(table<std::size_t, std::size_t>(
      {{1, 0}, {2, 1}, {3, 1}, {10, 2}, {253, 252}}));
  INFO("sent " << sent_count << " with max_fds " << max_fds);
  auto p = pair_or_fail();
  {
    auto sent = memfds(sent_count);
    REQUIRE(send_message(p.a.get(), "too many", raw(sent)) == 0);
  }  // our copies are closed; only the in-flight ones remain
  const auto before = test::open_fd_count();
  {
    auto got = recv_message(p.b.get(), 1024, max_fds);
    CHECK(got.err == EMSGSIZE);
    CHECK(got.fds.empty());
    CHECK(got.bytes.empty());
    CHECK_FALSE(got.peer_closed());
  }
  CHECK(test::open_fd_count() == before);
}

TEST_CASE("recv_message: a payload over max_bytes is EMSGSIZE and its fds do not leak",
          "[common][fd_passing]") {
  auto p = pair_or_fail();
  {
    auto sent = memfds(2);
    REQUIRE(send_message(p.a.get(), std::string(100, 'x'), raw(sent)) == 0);
  }
  const auto before = test::open_fd_count();
  {
    auto got = recv_message(p.b.get(), 10, 253);
    CHECK(got.err == EMSGSIZE);
    CHECK(got.fds.empty());
    CHECK(got.bytes.empty());
  }
  CHECK(test::open_fd_count() == before);

  // Exactly max_bytes is fine: the +1 byte of slack is what detects oversize.
  REQUIRE(send_message(p.a.get(), std::string(10, 'y')) == 0);
  auto ok = recv_message(p.b.get(), 10, 0);
  CHECK(ok.err == 0);
  CHECK(ok.bytes == std::string(10, 'y'));
}

TEST_CASE("recv_message: a closed peer reads as peer_closed(), not as an error",
          "[common][fd_passing]") {
  auto p = pair_or_fail();
  REQUIRE(send_message(p.a.get(), "last words") == 0);
  p.a.reset();
  auto first = recv_message(p.b.get(), 1024, 1);
  CHECK(first.bytes == "last words");  // queued data is still delivered first
  CHECK_FALSE(first.peer_closed());
  auto eof = recv_message(p.b.get(), 1024, 1);
  CHECK(eof.err == 0);
  CHECK(eof.peer_closed());
}

// Issue 9.12: recvmsg returns 0 for a zero-length datagram and for EOF
// alike; an empty datagram from a live peer must not read as its close.
TEST_CASE("recv_message: a zero-length datagram from a live peer is not peer_closed()",
          "[common][fd_passing]") {
  auto p = pair_or_fail();
  REQUIRE(send_message(p.a.get(), "") == 0);
  REQUIRE(send_message(p.a.get(), "after") == 0);
  auto empty = recv_message(p.b.get(), 1024, 1);
  CHECK(empty.err == 0);
  CHECK(empty.bytes.empty());
  CHECK(empty.fds.empty());
  CHECK_FALSE(empty.peer_closed());
  auto next = recv_message(p.b.get(), 1024, 1);  // the channel goes on
  CHECK(next.bytes == "after");
  p.a.reset();
  auto eof = recv_message(p.b.get(), 1024, 1);
  CHECK(eof.err == 0);
  CHECK(eof.peer_closed());
}

TEST_CASE("recv_message on a non-blocking socket with nothing queued is EAGAIN",
          "[common][fd_passing]") {
  auto p = pair_or_fail();
  REQUIRE(::fcntl(p.b.get(), F_SETFL, O_NONBLOCK) == 0);
  auto got = recv_message(p.b.get(), 1024, 1);
  CHECK(got.err == EAGAIN);
  CHECK_FALSE(got.peer_closed());
}

TEST_CASE("send_message to a closed peer returns EPIPE without raising SIGPIPE",
          "[common][fd_passing]") {
  auto p = pair_or_fail();
  p.b.reset();
  CHECK(send_message(p.a.get(), "anyone?") == EPIPE);  // a SIGPIPE would kill the test run
}

}  // namespace ondemand
