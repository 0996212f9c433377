// A worker that crashes on its own right after it starts serving, every
// time (a request that kills every worker, handed on by restore; a sandbox
// refusing a call on a rare path), must not be restarted at once for ever:
// a CI run once saw 1080 workers in 90 s, each killed by seccomp 60 ms into
// serving. Past crash_loop_limit such crashes inside crash_loop_window_ms the
// restarts back off (supervisor/restart_policy.h). Kills from outside
// (SIGKILL: an operator, the chaos tests) never do.
#include <signal.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "tests/harness/harness.h"

using namespace ondemand::harness;

namespace {

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// Kills `n` serving workers in turn with `signal`, each once it serves.
void kill_serving_workers(SupervisorProcess& sv, int signal, int n) {
  pid_t last = -1;
  for (int i = 0; i < n; ++i) {
    INFO("worker " << i);
    const auto pid = sv.wait_serving(15s, last);
    REQUIRE(pid);
    REQUIRE(::kill(*pid, signal) == 0);
    last = *pid;
  }
  REQUIRE(sv.wait_serving(15s, last));
}

SupervisorOptions options() {
  SupervisorOptions o;
  o.config = {{"spare_worker", false},
              {"crash_loop_limit", 2},
              {"crash_loop_window_ms", 60000},
              {"restart_backoff_ms", 700}};
  return o;
}

}  // namespace

TEST_CASE("workers crashing after serving: restarts back off past crash_loop_limit, never park", "[harness][hole9]") {
  SupervisorProcess sv(options());
  // SIGABRT, a crash like SIGSEGV for the policy; a sent SIGSEGV would be
  // reported by ASan as a finding under asan_harness.
  kill_serving_workers(sv, SIGABRT, 4);
  const auto log = sv.log();
  INFO(log);
  CHECK(count(log, "restarting worker now") == 2);
  CHECK(count(log, "restarting worker in 700 ms: 3 workers crashed after serving") == 1);
  CHECK(count(log, "restarting worker in 1400 ms: 4 workers crashed after serving") == 1);
  CHECK(count(log, "worker parked") == 0);
}

TEST_CASE("workers SIGKILLed from outside after serving are restarted at once, however many", "[harness][hole9]") {
  SupervisorProcess sv(options());
  kill_serving_workers(sv, SIGKILL, 4);
  const auto log = sv.log();
  INFO(log);
  CHECK(count(log, "restarting worker now") == 4);
  CHECK(count(log, "crashed after serving") == 0);
}
