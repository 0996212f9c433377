// The worker's event loop must never wait on a peer: a process that
// connects to <state_dir>/worker.sock and says nothing (a stuck or
// malicious would-be supervisor) must not delay a single kernel request.
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "tests/harness/harness.h"

using namespace ondemand::harness;

// Property: with a silent connection held open on worker.sock for 6 s,
// every OPEN injected every 50 ms is answered promptly (the old code reads
// the adoption hello with a blocking 5 s receive on its event loop; the
// watchdog, at its default 5 s, may also kill it). Only a generous bound is
// asserted; the longest latency is printed.
TEST_CASE("a silent connection on worker.sock does not stall requests", "[harness][adoption][fixed-by-lead]") {
  SupervisorProcess sv;  // watchdog_timeout_ms left at its default
  auto serving = sv.wait_serving();
  REQUIRE(serving);
  REQUIRE(sv.device().open_missing(1) == -2);

  ondemand::UniqueFd silent{::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)};
  REQUIRE(silent);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const auto path = (sv.state_dir() / "worker.sock").string();
  REQUIRE(path.size() < sizeof addr.sun_path);
  std::strcpy(addr.sun_path, path.c_str());
  REQUIRE(::connect(silent.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);

  Clock::duration longest{};
  std::uint32_t msg_id = 100;
  const auto until = Clock::now() + 6s;
  while (Clock::now() < until) {
    Clock::duration latency{};
    auto reply = sv.device().open_missing(++msg_id, 3s, &latency);
    INFO(fmt::format("OPEN msg_id={} answered after {} ms", msg_id,
                     std::chrono::duration_cast<std::chrono::milliseconds>(latency).count()));
    REQUIRE(reply == -2);
    longest = std::max(longest, latency);
    std::this_thread::sleep_for(50ms);
  }
  WARN(fmt::format("longest OPEN->copen latency with a silent worker.sock peer: {:.1f} ms over {} OPENs",
                   std::chrono::duration<double, std::milli>(longest).count(), msg_id - 100));
  auto status = sv.status();
  REQUIRE(status);
  CHECK((*status)["worker"].value("pid", -1) == *serving);  // not killed by the watchdog either
}
