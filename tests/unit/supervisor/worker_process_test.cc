#include "supervisor/worker_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "common/fd_passing.h"
#include "tests/unit/test_util.h"

namespace ondemand::supervisor {
namespace {

// Waits (bounded) for the pidfd to report the death, then reaps.
ExitStatus wait_exit(const SpawnedWorker& w) {
  pollfd p{w.pidfd.get(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 10000) == 1);
  auto st = try_reap(w.pidfd.get());
  REQUIRE(st.has_value());
  return *st;
}

// Everything the child wrote to fd 3, datagram after datagram, until it closed.
std::string read_channel(const SpawnedWorker& w) {
  std::string all;
  for (int i = 0; i < 1000; ++i) {
    // Bounded: if the child's end leaked into the parent, EOF never comes.
    pollfd p{w.channel.get(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);
    auto got = recv_message(w.channel.get(), 64 * 1024, 0);
    REQUIRE(got.err == 0);
    if (got.peer_closed()) return all;
    all += got.bytes;
  }
  FAIL("child kept writing");
  return all;
}

}  // namespace

TEST_CASE("spawn_worker + try_reap report a normal exit code", "[supervisor][worker_process]") {
  auto w = spawn_worker("/bin/sh", {"-c", "exit 7"});
  CHECK(w.pid > 0);
  CHECK(w.pidfd.valid());
  CHECK(w.channel.valid());
  const auto st = wait_exit(w);
  CHECK(st.exited);
  CHECK(st.code == 7);
  CHECK(st.known);
}

TEST_CASE("try_reap: nullopt while running, signal 9 after kill -9", "[supervisor][worker_process]") {
  auto w = spawn_worker("/bin/sh", {"-c", "exec sleep 30"});
  CHECK_FALSE(try_reap(w.pidfd.get()).has_value());
  REQUIRE(::kill(w.pid, SIGKILL) == 0);
  const auto st = wait_exit(w);
  CHECK_FALSE(st.exited);
  CHECK(st.code == SIGKILL);
}

TEST_CASE("spawn_worker: an exec failure shows up as exit 127", "[supervisor][worker_process]") {
  auto w = spawn_worker("/nonexistent/ondemand-worker", {});
  const auto st = wait_exit(w);
  CHECK(st.exited);
  CHECK(st.code == 127);
}

TEST_CASE("spawn_worker: the child finds its channel end on fd 3", "[supervisor][worker_process]") {
  auto w = spawn_worker("/bin/sh", {"-c", "printf hello >&3"});
  CHECK(read_channel(w) == "hello");
  const auto st = wait_exit(w);
  CHECK(st.exited);
  CHECK(st.code == 0);
}

TEST_CASE("spawn_worker: the child does not inherit the supervisor's end or other CLOEXEC fds",
          "[supervisor][worker_process]") {
  auto marker = test::make_memfd("must-not-leak");
  // The child lists its fds by target; a leaked memfd shows its name.
  auto w = spawn_worker("/bin/sh", {"-c", "for f in /proc/self/fd/*; do readlink $f; done >&3"});
  const auto listing = read_channel(w);
  CHECK(listing.find("must-not-leak") == std::string::npos);
  CHECK(listing.find("socket:") != std::string::npos);  // fd 3 itself
  wait_exit(w);
}

TEST_CASE("spawn_worker: a non-CLOEXEC fd of the supervisor does not reach the worker",
          "[supervisor][worker_process]") {
  // What a plain dup() (an asio watch of a sibling's pidfd or channel) left
  // behind before every spawn closed all unmapped fds.
  auto marker = test::make_memfd("leaked-dup");
  UniqueFd leaked{::dup(marker.get())};
  REQUIRE((::fcntl(leaked.get(), F_GETFD) & FD_CLOEXEC) == 0);
  auto w = spawn_worker("/bin/sh", {"-c", "ls -l /proc/$$/fd >&3"});
  const auto listing = read_channel(w);
  CHECK(listing.find("leaked-dup") == std::string::npos);
  CHECK(listing.find("socket:") != std::string::npos);
  wait_exit(w);
}

TEST_CASE("try_reap on an adopted (non-child) process reports an unknown status once it exited",
          "[supervisor][worker_process]") {
  // A grandchild is not our child: the intermediate parent exits at once, so
  // it is re-parented and we can only watch it through a pidfd.
  auto pipe = test::make_pipe();
  const pid_t middle = ::fork();
  REQUIRE(middle >= 0);
  if (middle == 0) {
    const pid_t grandchild = ::fork();
    if (grandchild == 0) {
      ::pause();
      ::_exit(0);
    }
    (void)!::write(pipe.write.get(), &grandchild, sizeof grandchild);
    ::_exit(0);
  }
  pid_t grandchild = -1;
  REQUIRE(::read(pipe.read.get(), &grandchild, sizeof grandchild) == sizeof grandchild);
  REQUIRE(::waitpid(middle, nullptr, 0) == middle);
  // Whatever fails below, do not leave the grandchild paused forever.
  struct Killer {
    pid_t pid;
    ~Killer() { ::kill(pid, SIGKILL); }
  } killer{grandchild};

  auto pidfd = open_pidfd(grandchild);
  REQUIRE(pidfd.valid());
  CHECK((::fcntl(pidfd.get(), F_GETFD) & FD_CLOEXEC) != 0);
  REQUIRE(::kill(grandchild, SIGKILL) == 0);
  pollfd p{pidfd.get(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 10000) == 1);
  const auto st = try_reap(pidfd.get());
  REQUIRE(st.has_value());
  CHECK_FALSE(st->known);
}

TEST_CASE("open_pidfd throws for a process that does not exist", "[supervisor][worker_process]") {
  auto w = spawn_worker("/bin/true", {});
  const pid_t gone = w.pid;
  wait_exit(w);  // reaped: the pid is free (and very unlikely to be reused this fast)
  CHECK_THROWS_AS(open_pidfd(gone), std::runtime_error);
}

TEST_CASE("spawn_worker/try_reap 100 times leaks no fd in the supervisor", "[supervisor][worker_process]") {
  const auto before = count_open_fds();
  CHECK(before == test::open_fd_count());
  for (int i = 0; i < 100; ++i) {
    auto w = spawn_worker("/bin/true", {});
    const auto st = wait_exit(w);
    REQUIRE(st.exited);
    REQUIRE(st.code == 0);
  }
  CHECK(count_open_fds() == before);
}

}  // namespace ondemand::supervisor
