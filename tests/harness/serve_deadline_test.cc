// Every phase of a worker's start is bounded, not only the handshake
// (issue 9, hole 2): a worker that has the device but never says "serving"
// leaves nothing reading it, so every reader of every mount waits for ever.
#include <signal.h>

#include <fstream>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "common/sys.h"
#include "tests/harness/harness.h"

using namespace ondemand::harness;

namespace {
std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}
}  // namespace

// Property: a worker that completes the handshake and then never serves is
// killed at serve_timeout_ms and replaced (a start failure, so with the
// start-failure backoff). Before: it stayed "starting" for ever.
TEST_CASE("a worker that got the device but never serves is killed and replaced", "[harness][hole2]") {
  TempDir scripts;
  std::filesystem::permissions(scripts.path(), std::filesystem::perms::all | std::filesystem::perms::sticky_bit);
  const auto script_path = scripts.path() / "script";
  // hello, then the supervisor's hello and the device, then silence.
  std::ofstream(script_path)
      << R"(send {"type":"hello","role":"worker","proto_min":1,"proto_max":1,"version":"fake","pid":1})"
      << "\nrecv\nrecv\nhold\n";
  SupervisorOptions options;
  options.config = {{"worker_binary", fake_worker_binary().string()},
                    {"spare_worker", false},
                    {"serve_timeout_ms", 1500}};
  options.extra_env = {"ONDEMAND_FAKE_WORKER_SCRIPT=" + script_path.string()};
  SupervisorProcess sv(options);
  const auto deadline = Clock::now() + 15s;
  while (Clock::now() < deadline && count(sv.log(), "spawned worker") < 3) std::this_thread::sleep_for(100ms);
  const auto log = sv.log();
  INFO(log);
  CHECK(count(log, "handed /dev/cachefiles to worker") >= 2);
  CHECK(count(log, "not serving 1500 ms after it was started (serve_timeout_ms)") >= 2);
  CHECK(count(log, "spawned worker") >= 3);
  CHECK(sv.alive());
  auto status = sv.status();
  REQUIRE(status);
  CHECK(status->value("ok", false));
}

// Property: at failover a spare that cannot run (SIGSTOPped) is not
// promoted: a fresh worker serves, long before serve_timeout_ms (default
// 20 s) would have caught the stopped one. Before: the stopped spare was
// promoted and nothing read the device for 30 s and more.
TEST_CASE("a stopped spare is not promoted at failover", "[harness][hole2]") {
  SupervisorProcess sv;
  auto serving = sv.wait_serving();
  REQUIRE(serving);
  auto spare = sv.wait_spare();
  REQUIRE(spare);
  REQUIRE(::kill(*spare, SIGSTOP) == 0);
  // The stop takes effect when the spare is next scheduled: on a loaded
  // machine its /proc state can still read 'S' at the failover, and a
  // not-yet-stopped spare is rightly promoted.
  for (int i = 0; i < 1000 && ondemand::sys::process_state(*spare) != 'T'; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  REQUIRE(ondemand::sys::process_state(*spare) == 'T');
  REQUIRE(::kill(*serving, SIGKILL) == 0);
  auto next = sv.wait_serving(10s, *serving);
  INFO(sv.log());
  REQUIRE(next);
  CHECK(*next != *spare);
  CHECK(sv.log().find(fmt::format("spare worker pid={} is not runnable (state T)", *spare)) != std::string::npos);
  CHECK_FALSE(process_alive(*spare));  // killed, not left stopped beside the new worker
}
