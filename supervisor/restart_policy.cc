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

RestartDecision RestartPolicy::on_exit(proto::ExitClass how, bool served, Clock::time_point now) {
  if (how == proto::ExitClass::FATAL_CONFIG || how == proto::ExitClass::CACHE_DEAD) {
    parked_ = true;
    return {options_.park_retry, true};
  }
  if (served) {
    consecutive_ = 0;
    parked_ = false;
    return {std::chrono::milliseconds{0}, false};
  }
  crashes_.push_back(now);
  while (!crashes_.empty() && now - crashes_.front() > options_.crash_window) crashes_.pop_front();
  if (crashes_.size() > options_.crash_limit) {
    parked_ = true;
    return {options_.park_retry, true};
  }
  parked_ = false;
  const unsigned n = consecutive_++;
  if (n == 0) return {std::chrono::milliseconds{0}, false};
  const unsigned shift = std::min(n - 1, 20u);
  const auto delay = std::chrono::milliseconds(options_.base_backoff.count() * (std::int64_t{1} << shift));
  return {std::min(delay, options_.max_backoff), false};
}

void RestartPolicy::reset() {
  crashes_.clear();
  consecutive_ = 0;
  parked_ = false;
}

}  // namespace ondemand::supervisor
