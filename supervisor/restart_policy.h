// When to start the next worker after one died. Pure: the supervisor feeds
// it the clock and the exits; tests feed it made-up times.
//
//   - a worker that reached "serving", or that someone else SIGKILLed (an
//     operator, a chaos test, the OOM killer: never a worker's own crash),
//     did not fail to start: the next one starts at once, because readers
//     are waiting on it;
//   - a worker that died before serving failed to start: consecutive such
//     failures back off exponentially (the first is immediate) up to
//     max_backoff;
//   - more than crash_limit start failures inside crash_window park the
//     worker: the supervisor keeps the device fd (mounts stay alive, readers
//     wait) and retries every park_retry, reporting the parked state;
//   - a configuration exit parks at once: it would fail the same way again.
// Known gap: a request that crashes every worker right after it serves
// (a poison request re-queued by restore) restarts without backoff.
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
};

class RestartPolicy {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RestartPolicy(RestartPolicyOptions options = {}) : options_(options) {}

  // A worker ended at `now` with `how`; `served` says whether it had
  // reported "serving" (or was SIGKILLed by someone else).
  RestartDecision on_exit(proto::ExitClass how, bool served, Clock::time_point now);
  // An operator asked for a restart (ondemandctl restart-worker): unpark.
  void reset();
  bool parked() const { return parked_; }

 private:
  RestartPolicyOptions options_;
  std::deque<Clock::time_point> crashes_;
  unsigned consecutive_ = 0;
  bool parked_ = false;
};

}  // namespace ondemand::supervisor
