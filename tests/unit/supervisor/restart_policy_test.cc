#include "supervisor/restart_policy.h"

#include <catch2/catch.hpp>

namespace ondemand::supervisor {
namespace {

using namespace std::chrono_literals;
using proto::ExitClass;
using Served = ondemand::supervisor::Served;
using Clock = RestartPolicy::Clock;

RestartPolicyOptions options() {
  RestartPolicyOptions o;
  o.base_backoff = 100ms;
  o.max_backoff = 5000ms;
  o.crash_window = 30000ms;
  o.crash_limit = 10;
  o.park_retry = 30000ms;
  return o;
}

const Clock::time_point T0{std::chrono::hours(1000)};

}  // namespace

TEST_CASE("RestartPolicy: a worker killed from outside or stopped cleanly is restarted at once, even 1000 times a "
          "second", "[supervisor][restart_policy]") {
  RestartPolicy policy(options());
  for (int i = 0; i < 1000; ++i) {
    INFO("death #" << i);
    const auto d = i % 2 ? policy.on_exit(ExitClass::CRASHED, Served::KILLED, T0 + std::chrono::microseconds(i * 1000))
                         : policy.on_exit(ExitClass::STOPPED, Served::YES, T0 + std::chrono::microseconds(i * 1000));
    REQUIRE(d.delay == 0ms);
    REQUIRE_FALSE(d.parked);
  }
  CHECK_FALSE(policy.parked());
}

// The hole a CI run showed: a worker killed by seccomp 60 ms into serving,
// 1080 generations in 90 s, each restarted at once.
TEST_CASE("RestartPolicy: own crashes after serving restart at once up to crash_limit, then back off, never park",
          "[supervisor][restart_policy]") {
  RestartPolicy policy(options());  // crash_limit 10, window 30 s
  for (int i = 0; i < 10; ++i) {
    const auto d = policy.on_exit(ExitClass::CRASHED, Served::YES, T0 + std::chrono::milliseconds(i * 60));
    REQUIRE(d.delay == 0ms);
    CHECK(d.serving_crashes == static_cast<unsigned>(i + 1));
  }
  const std::chrono::milliseconds expected[] = {100ms, 200ms, 400ms, 800ms, 1600ms, 3200ms, 5000ms, 5000ms};
  auto now = T0 + 600ms;
  for (const auto want : expected) {
    const auto d = policy.on_exit(ExitClass::CRASHED, Served::YES, now);
    CHECK(d.delay == want);
    CHECK_FALSE(d.parked);
    now += d.delay + 60ms;
  }
  CHECK_FALSE(policy.parked());
  SECTION("kills from outside in between neither count nor reset the loop") {
    CHECK(policy.on_exit(ExitClass::CRASHED, Served::KILLED, now).delay == 0ms);
    CHECK(policy.on_exit(ExitClass::CRASHED, Served::YES, now + 1ms).delay == 5000ms);
  }
  SECTION("a quiet crash_window ends the loop") {
    CHECK(policy.on_exit(ExitClass::CRASHED, Served::YES, now + 31000ms).delay == 0ms);
  }
  SECTION("an operator's restart-worker ends it") {
    policy.reset();
    CHECK(policy.on_exit(ExitClass::CRASHED, Served::YES, now).delay == 0ms);
  }
}

TEST_CASE("RestartPolicy: start failures back off 0, 100, 200, 400 ... capped at max_backoff",
          "[supervisor][restart_policy]") {
  auto o = options();
  o.crash_limit = 1000;  // isolate the backoff from parking
  RestartPolicy policy(o);
  const std::chrono::milliseconds expected[] = {0ms,    100ms,  200ms,  400ms,  800ms,  1600ms,
                                                3200ms, 5000ms, 5000ms, 5000ms, 5000ms};
  auto now = T0;
  for (auto want : expected) {
    const auto d = policy.on_exit(ExitClass::CRASHED, Served::NO, now);
    CHECK(d.delay == want);
    CHECK_FALSE(d.parked);
    now += d.delay + 1ms;
  }
  // Still capped (and not overflowing) after very many failures.
  for (int i = 0; i < 200; ++i) {
    const auto d = policy.on_exit(ExitClass::CRASHED, Served::NO, now);
    REQUIRE(d.delay == 5000ms);
    now += 1ms;
  }
}

TEST_CASE("RestartPolicy: a served death resets the start-failure backoff", "[supervisor][restart_policy]") {
  RestartPolicy policy(options());
  CHECK(policy.on_exit(ExitClass::CRASHED, Served::NO, T0).delay == 0ms);
  CHECK(policy.on_exit(ExitClass::CRASHED, Served::NO, T0 + 1ms).delay == 100ms);
  CHECK(policy.on_exit(ExitClass::CRASHED, Served::NO, T0 + 2ms).delay == 200ms);
  CHECK(policy.on_exit(ExitClass::CRASHED, Served::YES, T0 + 3ms).delay == 0ms);
  CHECK(policy.on_exit(ExitClass::CRASHED, Served::NO, T0 + 4ms).delay == 0ms);
  CHECK(policy.on_exit(ExitClass::CRASHED, Served::NO, T0 + 5ms).delay == 100ms);
}

TEST_CASE("RestartPolicy: more than crash_limit start failures inside crash_window park with park_retry",
          "[supervisor][restart_policy]") {
  RestartPolicy policy(options());
  for (int i = 0; i < 10; ++i) {
    const auto d = policy.on_exit(ExitClass::CRASHED, Served::NO, T0 + std::chrono::milliseconds(i * 100));
    REQUIRE_FALSE(d.parked);  // exactly crash_limit failures is still allowed
  }
  CHECK_FALSE(policy.parked());
  const auto d = policy.on_exit(ExitClass::CRASHED, Served::NO, T0 + 1100ms);
  CHECK(d.parked);
  CHECK(d.delay == 30000ms);
  CHECK(policy.parked());
}

TEST_CASE("RestartPolicy: start failures spread wider than crash_window never park",
          "[supervisor][restart_policy]") {
  RestartPolicy policy(options());
  // 10 per window at most: one every 3.1 s keeps 10 or fewer within 30 s.
  for (int i = 0; i < 500; ++i) {
    const auto d = policy.on_exit(ExitClass::CRASHED, Served::NO, T0 + std::chrono::milliseconds(i * 3100));
    INFO("failure #" << i);
    REQUIRE_FALSE(d.parked);
    REQUIRE(d.delay <= 5000ms);
  }
  CHECK_FALSE(policy.parked());
}

TEST_CASE("RestartPolicy: a FATAL_CONFIG exit parks at once, served or not", "[supervisor][restart_policy]") {
  for (const Served served : {Served::NO, Served::YES, Served::KILLED}) {
    INFO("served=" << static_cast<int>(served));
    RestartPolicy policy(options());
    const auto d = policy.on_exit(ExitClass::FATAL_CONFIG, served, T0);
    CHECK(d.parked);
    CHECK(d.delay == 30000ms);
    CHECK(policy.parked());
  }
}

TEST_CASE("RestartPolicy: a CACHE_DEAD exit parks at once, served or not", "[supervisor][restart_policy][cull]") {
  for (const Served served : {Served::NO, Served::YES, Served::KILLED}) {
    INFO("served=" << static_cast<int>(served));
    RestartPolicy policy(options());
    const auto d = policy.on_exit(ExitClass::CACHE_DEAD, served, T0);
    CHECK(d.parked);
    CHECK(d.delay == 30000ms);
    CHECK(policy.parked());
  }
}

TEST_CASE("RestartPolicy: reset() unparks and restarts the backoff from zero", "[supervisor][restart_policy]") {
  RestartPolicy policy(options());
  for (int i = 0; i < 11; ++i) policy.on_exit(ExitClass::CRASHED, Served::NO, T0 + std::chrono::milliseconds(i));
  REQUIRE(policy.parked());
  policy.reset();
  CHECK_FALSE(policy.parked());
  // The crash history is gone too: the next failure is immediate, not parked.
  const auto d = policy.on_exit(ExitClass::CRASHED, Served::NO, T0 + 20ms);
  CHECK_FALSE(d.parked);
  CHECK(d.delay == 0ms);

  RestartPolicy config_parked(options());
  config_parked.on_exit(ExitClass::FATAL_CONFIG, Served::NO, T0);
  config_parked.reset();
  CHECK_FALSE(config_parked.parked());
}

TEST_CASE("RestartPolicy: a parked worker that then serves is unparked", "[supervisor][restart_policy]") {
  RestartPolicy policy(options());
  for (int i = 0; i < 11; ++i) policy.on_exit(ExitClass::CRASHED, Served::NO, T0 + std::chrono::milliseconds(i));
  REQUIRE(policy.parked());
  const auto d = policy.on_exit(ExitClass::CRASHED, Served::YES, T0 + 40000ms);
  CHECK_FALSE(d.parked);
  CHECK(d.delay == 0ms);
  CHECK_FALSE(policy.parked());
}

TEST_CASE("policy_options_from maps every restart-policy config key", "[supervisor][restart_policy]") {
  Config c;
  c.restart_backoff_ms = 11;
  c.restart_backoff_max_ms = 22;
  c.crash_loop_limit = 3;
  c.crash_loop_window_ms = 44;
  c.park_retry_ms = 555;
  const auto o = policy_options_from(c);
  CHECK(o.base_backoff == 11ms);
  CHECK(o.max_backoff == 22ms);
  CHECK(o.crash_limit == 3);
  CHECK(o.crash_window == 44ms);
  CHECK(o.park_retry == 555ms);

  // And the policy built from it obeys them.
  RestartPolicy policy(o);
  CHECK(policy.on_exit(ExitClass::CRASHED, Served::NO, T0).delay == 0ms);
  CHECK(policy.on_exit(ExitClass::CRASHED, Served::NO, T0 + 1ms).delay == 11ms);
  CHECK(policy.on_exit(ExitClass::CRASHED, Served::NO, T0 + 2ms).delay == 22ms);
  const auto d = policy.on_exit(ExitClass::CRASHED, Served::NO, T0 + 3ms);
  CHECK(d.parked);
  CHECK(d.delay == 555ms);
}

}  // namespace ondemand::supervisor
