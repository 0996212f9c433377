#include "supervisor/restart_policy.h"

#include <algorithm>
#include <cstdint>

namespace ondemand::supervisor {

RestartPolicyOptions policy_options_from(const Config& config) {
  RestartPolicyOptions o;
  o.base_backoff = std::chrono::milliseconds(config.restart_backoff_ms);
  o.max_backoff = std::chrono::milliseconds(config.restart_backoff_max_ms);
  o.crash_limit = config.crash_loop_limit;
  o.crash_window = std::chrono::milliseconds(config.crash_loop_window_ms);
  o.park_retry = std::chrono::milliseconds(config.park_retry_ms);
  return o;
}

std::chrono::milliseconds RestartPolicy::backoff(unsigned n) const {
  const unsigned shift = std::min(n - 1, 20u);
  const auto delay = std::chrono::milliseconds(options_.base_backoff.count() * (std::int64_t{1} << shift));
  return std::min(delay, options_.max_backoff);
}

RestartDecision RestartPolicy::on_exit(proto::ExitClass how, Served served, Clock::time_point now) {
  if (how == proto::ExitClass::FATAL_CONFIG || how == proto::ExitClass::CACHE_DEAD) {
    parked_ = true;
    return {options_.park_retry, true};
  }
  auto prune = [&](std::deque<Clock::time_point>& times) {
    while (!times.empty() && now - times.front() > options_.crash_window) times.pop_front();
  };
  if (served != Served::NO) {
    consecutive_ = 0;
    parked_ = false;
    if (served == Served::KILLED || how != proto::ExitClass::CRASHED) return {};
    serving_crashes_.push_back(now);
    prune(serving_crashes_);
    const auto n = static_cast<unsigned>(serving_crashes_.size());
    if (n <= options_.crash_limit) return {.delay = {}, .parked = false, .serving_crashes = n};
    return {.delay = backoff(n - options_.crash_limit), .parked = false, .serving_crashes = n};
  }
  crashes_.push_back(now);
  prune(crashes_);
  if (crashes_.size() > options_.crash_limit) {
    parked_ = true;
    return {options_.park_retry, true};
  }
  parked_ = false;
  const unsigned n = consecutive_++;
  if (n == 0) return {};
  return {backoff(n), false};
}

void RestartPolicy::reset() {
  crashes_.clear();
  serving_crashes_.clear();
  consecutive_ = 0;
  parked_ = false;
}

}  // namespace ondemand::supervisor
