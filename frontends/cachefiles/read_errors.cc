#include "frontends/cachefiles/read_errors.h"

#include <algorithm>

namespace ondemand::worker {

ReadErrors::Action ReadErrors::on_error(Clock::time_point now) {
  Action a;
  if (streak_++ == 0) streak_start_ = now;
  if (streak_ > options_.free_retries) {
    const auto doublings = std::min<std::uint64_t>(streak_ - options_.free_retries - 1, 20);
    a.wait = std::min(options_.max_backoff, options_.first_backoff * (std::int64_t{1} << doublings));
  }
  if (!logged_once_ || now - last_log_ >= options_.log_every) {
    a.log = true;
    a.unlogged = unlogged_;
    unlogged_ = 0;
    last_log_ = now;
    logged_once_ = true;
  } else {
    ++unlogged_;
  }
  a.give_up = now - streak_start_ >= options_.give_up_after;
  return a;
}

}  // namespace ondemand::worker
