// Signals from the environment (issue 9.4). A daemon's stderr is often a
// pipe (journald, a log shipper, `| tee`); when its reader goes away the
// next log line must not kill the process holding /dev/cachefiles. SIGHUP
// (a closed terminal, `systemctl reload`, `kill -HUP` by habit) must not
// either: the supervisor ignores it (it has nothing to reload that would not
// need a worker restart; `ondemandctl restart-worker` does that).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include <catch2/catch.hpp>

#include "tests/harness/harness.h"

using namespace ondemand::harness;

// Property: with stderr a pipe whose reader has closed, a worker death (which
// both supervisor and workers log) kills neither: a worker serves again and
// keeps serving.
TEST_CASE("a closed stderr pipe does not kill the supervisor or its workers", "[harness][signals][fixed-by-lead]") {
  int pipefd[2];
  REQUIRE(::pipe2(pipefd, O_CLOEXEC) == 0);
  ondemand::UniqueFd reader{pipefd[0]}, writer{pipefd[1]};
  SupervisorOptions options;
  options.stderr_fd = writer.get();
  SupervisorProcess sv(options);
  writer.reset();
  // Keep the pipe drained until the worker serves, then hang up.
  std::atomic<bool> draining{true};
  std::thread drain([&] {
    char buf[4096];
    while (draining) {
      pollfd p{reader.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) > 0 && ::read(reader.get(), buf, sizeof buf) <= 0) break;
    }
  });
  auto serving = sv.wait_serving();
  auto spare = sv.wait_spare();
  draining = false;
  drain.join();
  REQUIRE(serving);
  REQUIRE(spare);
  reader.reset();

  REQUIRE(::kill(*serving, SIGKILL) == 0);
  auto next = sv.wait_serving(10s, *serving);
  REQUIRE(sv.alive());
  REQUIRE(next);
  CHECK(sv.device().open_missing(1) == -2);
  std::this_thread::sleep_for(1s);  // no crash loop behind it
  REQUIRE(sv.alive());
  auto status = sv.status();
  REQUIRE(status);
  CHECK((*status)["worker"].value("pid", -1) == *next);
  CHECK((*status)["worker"].value("serving", false));
}

// Property: SIGHUP to the supervisor is ignored: it keeps running, keeps its
// worker, and keeps answering.
TEST_CASE("SIGHUP does not stop the supervisor", "[harness][signals]") {
  SupervisorProcess sv;
  auto serving = sv.wait_serving();
  REQUIRE(serving);
  REQUIRE(::kill(sv.pid(), SIGHUP) == 0);
  std::this_thread::sleep_for(300ms);
  REQUIRE(sv.alive());
  auto status = sv.status();
  REQUIRE(status);
  CHECK((*status)["worker"].value("pid", -1) == *serving);
  CHECK(sv.device().open_missing(1) == -2);
}
