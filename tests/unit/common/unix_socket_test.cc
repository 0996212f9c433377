#include "common/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <string>

#include <catch2/catch.hpp>

#include "tests/unit/test_util.h"

namespace ondemand {
using namespace std::chrono_literals;

TEST_CASE("unix_address: a path that does not fit sun_path is an error naming it", "[common][unix_socket]") {
  const std::string long_path = "/tmp/" + std::string(200, 'x') + "/control.sock";
  CHECK_THROWS_WITH(unix_address(long_path), Catch::Contains(long_path) && Catch::Contains("107"));
  CHECK_THROWS_AS(unix_address(""), UnixSocketError);
  CHECK_THROWS_WITH(listen_seqpacket(long_path, 0600, 4), Catch::Contains(long_path));
  auto conn = connect_seqpacket(long_path, 100ms);
  CHECK_FALSE(conn.fd.valid());
  CHECK(conn.err == ENAMETOOLONG);
  CHECK_THAT(conn.error, Catch::Contains(long_path));
}

TEST_CASE("unix_address: '@' names the abstract namespace", "[common][unix_socket]") {
  const auto a = unix_address("@ondemand-test");
  CHECK(a.addr.sun_path[0] == '\0');
  CHECK(std::string(a.addr.sun_path + 1, 13) == "ondemand-test");
  CHECK(a.len == offsetof(sockaddr_un, sun_path) + 14);
}

TEST_CASE("listen_seqpacket: mode, listener flags, and a connecting client", "[common][unix_socket]") {
  test::TempDir dir;
  const auto path = dir.path() / "control.sock";
  auto listener = listen_seqpacket(path, 0600, 4);
  struct stat st{};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0600);
  CHECK((::fcntl(listener.get(), F_GETFD) & FD_CLOEXEC) != 0);
  CHECK((::fcntl(listener.get(), F_GETFL) & O_NONBLOCK) != 0);
  CHECK_FALSE(std::filesystem::exists(path.string() + "." + std::to_string(::getpid())));  // no temp left

  auto conn = connect_seqpacket(path, 1000ms);
  REQUIRE(conn.fd.valid());
  CHECK(conn.error.empty());
  UniqueFd accepted{::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC)};
  CHECK(accepted.valid());
}

TEST_CASE("listen_seqpacket renames over an existing socket atomically", "[common][unix_socket]") {
  test::TempDir dir;
  const auto path = dir.path() / "worker.sock";
  auto old_listener = listen_seqpacket(path, 0600, 4);
  auto new_listener = listen_seqpacket(path, 0600, 4);
  auto conn = connect_seqpacket(path, 1000ms);
  REQUIRE(conn.fd.valid());
  UniqueFd to_new{::accept4(new_listener.get(), nullptr, nullptr, SOCK_CLOEXEC)};
  CHECK(to_new.valid());
  UniqueFd to_old{::accept4(old_listener.get(), nullptr, nullptr, SOCK_CLOEXEC)};
  CHECK_FALSE(to_old.valid());  // EAGAIN: nobody reaches the replaced listener
}

TEST_CASE("connect_seqpacket: no listener, and a listener that never accepts", "[common][unix_socket]") {
  test::TempDir dir;
  const auto path = dir.path() / "control.sock";
  auto missing = connect_seqpacket(path, 100ms);
  CHECK(missing.err == ENOENT);
  CHECK_THAT(missing.error, Catch::Contains(path.string()));

  // Backlog 0 queues one connection; the next one waits for an accept that
  // never comes, and must give up after the timeout.
  auto listener = listen_seqpacket(path, 0600, 0);
  auto first = connect_seqpacket(path, 1000ms);
  REQUIRE(first.fd.valid());
  auto stuck = connect_seqpacket(path, 200ms);
  CHECK_FALSE(stuck.fd.valid());
  CHECK(stuck.err == EAGAIN);
  CHECK_THAT(stuck.error, Catch::Contains(path.string()) && Catch::Contains("timed out"));
}

}  // namespace ondemand
