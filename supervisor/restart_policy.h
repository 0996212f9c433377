// When to start the next worker after one died. Pure: the supervisor feeds
// it the clock and the exits; tests feed it made-up times.
//
//   - a worker that someone else SIGKILLed (an operator, a chaos test, the
//     OOM killer: never a worker's own crash), or that exited cleanly, did
//     not fail: the next one starts at once, because readers are waiting on
//     it, however often that happens;
//   - a worker that died before serving failed to start: consecutive such
//     failures back off exponentially (the first is immediate) up to
//     max_backoff;
//   - more than crash_limit start failures inside crash_window park the
//     worker: the supervisor keeps the device fd (mounts stay alive, readers
//     wait) and retries every park_retry, reporting the parked state;
//   - a configuration exit parks at once: it would fail the same way again;
//   - a worker that crashed on its own after serving is restarted at once,
//     up to crash_limit such crashes inside crash_window; past that they back
//     off like start failures (never park: each worker still serves a
//     little). That is a request that kills every worker (restore hands it
//     to the next one) or a sandbox that refuses a call on a rare path: once
//     1080 workers in 90 s, each killed by seccomp 60 ms into serving.
#pragma once

#include <chrono>
#include <deque>

#include "config/config.h"
#include "proto/exit_codes.h"

namespace ondemand::supervisor {

struct RestartPolicyOptions {
  std::chrono::milliseconds base_backoff{100};
  std::chrono::milliseconds max_backoff{5000};
  std::chrono::milliseconds crash_window{30000};
  unsigned crash_limit = 10;
  std::chrono::milliseconds park_retry{30000};
};

RestartPolicyOptions policy_options_from(const Config& config);

struct RestartDecision {
  std::chrono::milliseconds delay{0};
  bool parked = false;
  // Crashes after serving inside crash_window, this one included; the delay
  // is theirs when it is above crash_limit.
  unsigned serving_crashes = 0;
};

// What the dead worker had done, as far as the policy cares.
enum class Served {
  NO,      // died before "serving": a start failure
  YES,     // had served (or was adopted serving)
  KILLED,  // SIGKILLed by someone else: not its own failure, whatever it had done
};

class RestartPolicy {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RestartPolicy(RestartPolicyOptions options = {}) : options_(options) {}

  // A worker ended at `now` with `how`.
  RestartDecision on_exit(proto::ExitClass how, Served served, Clock::time_point now);
  // An operator asked for a restart (ondemandctl restart-worker): unpark.
  void reset();
  bool parked() const { return parked_; }

 private:
  RestartPolicyOptions options_;
  std::chrono::milliseconds backoff(unsigned n) const;  // n >= 1: base * 2^(n-1), capped

  std::deque<Clock::time_point> crashes_;          // start failures inside the window
  std::deque<Clock::time_point> serving_crashes_;  // own crashes after serving inside the window
  unsigned consecutive_ = 0;
  bool parked_ = false;
};

}  // namespace ondemand::supervisor
