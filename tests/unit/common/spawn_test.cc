#include "common/spawn.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include <catch2/catch.hpp>

#include "tests/unit/test_util.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace ondemand {
namespace {

// Reads the pipe until every writer closed it (bounded).
std::string read_all(int fd) {
  std::string out;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);
    char buf[4096];
    const auto n = ::read(fd, buf, sizeof buf);
    REQUIRE(n >= 0);
    if (n == 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

int wait_code(const Launched& child) {
  siginfo_t info{};
  REQUIRE(::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(child.pidfd.get()), &info, WEXITED) == 0);
  REQUIRE(info.si_code == CLD_EXITED);
  return info.si_status;
}

// A non-CLOEXEC fd that a careless dup() would leave for any child.
UniqueFd leaked_fd() {
  auto memfd = test::make_memfd("leaked-into-child");
  UniqueFd dup{::dup(memfd.get())};
  REQUIRE(dup.valid());
  REQUIRE((::fcntl(dup.get(), F_GETFD) & FD_CLOEXEC) == 0);
  return dup;
}

}  // namespace

TEST_CASE("launch: the child sees exactly the mapped fds, not a leaked non-CLOEXEC one", "[common][spawn]") {
  auto leak = leaked_fd();
  auto out = test::make_pipe();
  auto three = test::make_pipe();
  auto five = test::make_pipe();
  LaunchSpec spec;
  spec.binary = "/bin/sh";
  // `ls` runs in a child of sh (`; true` stops sh exec'ing it), so it lists
  // sh's fds ($$), not its own directory fd; no redirection, so sh saves no
  // fd either. fd 4 is a gap that must be closed too.
  spec.args = {"-c", "ls /proc/$$/fd; true"};
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.fds = {{1, out.write.get()}, {3, three.write.get()}, {5, five.write.get()}};
  auto child = launch(spec);
  out.write.reset();
  three.write.reset();
  five.write.reset();
  CHECK(read_all(out.read.get()) == "0\n1\n2\n3\n5\n");
  CHECK(wait_code(child) == 0);
  CHECK(test::pipe_writer_closed(three.read.get()));
  CHECK(test::pipe_writer_closed(five.read.get()));
}

TEST_CASE("launch: mappings whose sources are other mappings' targets are not clobbered", "[common][spawn]") {
  auto a = test::make_pipe();
  auto b = test::make_pipe();
  // Put the two write ends on adjacent small numbers and swap them.
  UniqueFd fa{::fcntl(a.write.get(), F_DUPFD_CLOEXEC, 6)};
  UniqueFd fb{::fcntl(b.write.get(), F_DUPFD_CLOEXEC, 6)};
  REQUIRE(fa.valid());
  REQUIRE(fb.valid());
  REQUIRE(fa.get() < 10);
  REQUIRE(fb.get() < 10);
  a.write.reset();
  b.write.reset();
  LaunchSpec spec;
  spec.binary = "/bin/sh";
  spec.args = {"-c", "printf x >&" + std::to_string(fa.get()) + "; printf y >&" + std::to_string(fb.get())};
  spec.fds = {{fa.get(), fb.get()}, {fb.get(), fa.get()}};
  auto child = launch(spec);
  fa.reset();
  fb.reset();
  CHECK(read_all(a.read.get()) == "y");
  CHECK(read_all(b.read.get()) == "x");
  CHECK(wait_code(child) == 0);
}

TEST_CASE("launch: the environment is exactly the spec's", "[common][spawn]") {
  ::setenv("ONDEMAND_SPAWN_TEST_PARENT_ONLY", "1", 1);
  auto out = test::make_pipe();
  LaunchSpec spec;
  spec.binary = "/usr/bin/env";
  spec.env = {"ONLY=this"};
  spec.fds = {{1, out.write.get()}};
  auto child = launch(spec);
  out.write.reset();
  CHECK(read_all(out.read.get()) == "ONLY=this\n");
  CHECK(wait_code(child) == 0);
  ::unsetenv("ONDEMAND_SPAWN_TEST_PARENT_ONLY");
}

TEST_CASE("environment_subset keeps the named entries and prefixes only", "[common][spawn]") {
  ::setenv("ONDEMAND_SPAWN_TEST_A", "1", 1);
  ::setenv("ONDEMAND_SPAWN_TESTX", "2", 1);
  ::setenv("SPAWN_TEST_OTHER", "3", 1);
  constexpr std::string_view names[] = {"ONDEMAND_SPAWN_TEST_*", "SPAWN_TEST_OTHE"};
  const auto env = environment_subset(names);
  CHECK(env == std::vector<std::string>{"ONDEMAND_SPAWN_TEST_A=1"});
  ::unsetenv("ONDEMAND_SPAWN_TEST_A");
  ::unsetenv("ONDEMAND_SPAWN_TESTX");
  ::unsetenv("SPAWN_TEST_OTHER");
}

TEST_CASE("launch: credentials and no_new_privs are applied before exec", "[common][spawn]") {
  if (::geteuid() != 0) {
    WARN("not root: setuid/setgid cannot be tested");
    return;
  }
  auto out = test::make_pipe();
  LaunchSpec spec;
  spec.binary = "/bin/sh";
  spec.args = {"-c", "id -u; id -g; id -G; grep NoNewPrivs /proc/self/status"};
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.fds = {{1, out.write.get()}};
  spec.groups = std::vector<gid_t>{65534};
  spec.gid = 65534;
  spec.uid = 65534;
  spec.no_new_privs = true;
  auto child = launch(spec);
  out.write.reset();
  CHECK(read_all(out.read.get()) == "65534\n65534\n65534\nNoNewPrivs:\t1\n");
  CHECK(wait_code(child) == 0);
}

TEST_CASE("launch: a failed exec is exit 127; a bad mapping throws", "[common][spawn]") {
  LaunchSpec spec;
  spec.binary = "/nonexistent/program";
  auto child = launch(spec);
  CHECK(wait_code(child) == 127);

  LaunchSpec twice;
  twice.binary = "/bin/true";
  twice.fds = {{3, 1}, {3, 2}};
  CHECK_THROWS_WITH(launch(twice), Catch::Contains("/bin/true") && Catch::Contains("mapping"));
}

TEST_CASE("launch: the pidfd is close-on-exec and the parent keeps no extra fd", "[common][spawn]") {
  const auto before = test::open_fd_count();
  {
    LaunchSpec spec;
    spec.binary = "/bin/true";
    auto child = launch(spec);
    CHECK((::fcntl(child.pidfd.get(), F_GETFD) & FD_CLOEXEC) != 0);
    CHECK(wait_code(child) == 0);
  }
  CHECK(test::open_fd_count() == before);
}

}  // namespace ondemand
