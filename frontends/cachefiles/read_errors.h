// What the device loop does about failing read()s on /dev/cachefiles.
//
// One failed read() is one lost message (EEXIST when a re-delivered OPEN
// finds its object open, ENOMEM...): the kernel has already completed that
// request with the error, and the next read() is fine, so a few in a row are
// retried at once. A persistent failure (EMFILE at the fd limit: every OPEN
// fails in cachefiles_ondemand_get_fd; EIO) used to become a busy loop of
// 120,000 log lines a second with the worker still reported as running.
// Past `free_retries` consecutive errors the loop backs off (capped
// exponential), logs at most once per `log_every` (with the count it did not
// log), and after `give_up_after` of nothing but errors it gives up, so the
// worker exits with DEVICE_READ_FAILING and the supervisor restarts it (a
// new process has a fresh fd table). Pure: the caller passes the time.
#pragma once

#include <chrono>
#include <cstdint>

namespace ondemand::worker {

struct ReadErrorOptions {
  std::uint32_t free_retries = 16;
  std::chrono::milliseconds first_backoff{1};
  std::chrono::milliseconds max_backoff{500};
  std::chrono::milliseconds log_every{1000};
  std::chrono::milliseconds give_up_after{10000};
};

class ReadErrors {
 public:
  using Clock = std::chrono::steady_clock;
  struct Action {
    std::chrono::milliseconds wait{0};  // before the next read()
    bool log = false;                   // log this one
    std::uint64_t unlogged = 0;         // errors not logged since the last line
    bool give_up = false;
  };

  explicit ReadErrors(ReadErrorOptions options = {}) : options_(options) {}
  Action on_error(Clock::time_point now);
  // A message was read, or the device said nothing is pending.
  void on_success() { streak_ = 0; }
  std::uint64_t streak() const { return streak_; }
  const ReadErrorOptions& options() const { return options_; }

 private:
  ReadErrorOptions options_;
  std::uint64_t streak_ = 0;
  std::uint64_t unlogged_ = 0;
  Clock::time_point streak_start_{};
  Clock::time_point last_log_{};
  bool logged_once_ = false;
};

}  // namespace ondemand::worker
