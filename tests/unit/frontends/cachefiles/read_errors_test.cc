// A device read() that keeps failing: the pure policy, and the real device
// loop on a pipe whose every read() fails through the sys:: fault hook (the
// pipe holds a byte, so the fd is always readable, as a device with a
// request pending is).
#include "frontends/cachefiles/read_errors.h"

#include <unistd.h>

#include <atomic>

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include "common/sys.h"
#include "frontends/cachefiles/cachefiles_device.h"
#include "tests/unit/test_util.h"

namespace ondemand::worker {
namespace {
using namespace std::chrono_literals;
using Clock = ReadErrors::Clock;

std::atomic<int> read_calls{0};
int fail_reads_emfile(const char* name) {
  if (std::string_view(name) != "read") return 0;
  read_calls.fetch_add(1);
  return EMFILE;
}

class CountingSink final : public RequestSink {
 public:
  int handled = 0;
  bool has_capacity() const override { return true; }
  void handle(proto::KernelRequest, UniqueFd) override { ++handled; }
};
}  // namespace

TEST_CASE("ReadErrors: a few errors are retried at once, then the wait doubles up to its cap",
          "[worker][cachefiles][read_errors]") {
  ReadErrors policy({.free_retries = 3, .first_backoff = 1ms, .max_backoff = 8ms, .log_every = 1000ms,
                     .give_up_after = 10s});
  const auto t0 = Clock::now();
  std::vector<long> waits;
  for (int i = 0; i < 9; ++i) waits.push_back(policy.on_error(t0).wait.count());
  CHECK(waits == std::vector<long>{0, 0, 0, 1, 2, 4, 8, 8, 8});
  policy.on_success();
  CHECK(policy.on_error(t0).wait.count() == 0);  // a new streak starts free
}

TEST_CASE("ReadErrors: logs at most once per interval, counting what it did not log",
          "[worker][cachefiles][read_errors]") {
  ReadErrors policy({.log_every = 1000ms, .give_up_after = 60s});
  const auto t0 = Clock::now();
  CHECK(policy.on_error(t0).log);
  int logged = 0;
  for (int i = 1; i <= 500; ++i) logged += policy.on_error(t0 + std::chrono::milliseconds(i)).log;
  CHECK(logged == 0);
  const auto later = policy.on_error(t0 + 1001ms);
  CHECK(later.log);
  CHECK(later.unlogged == 500);
  // Errors between successes are rate-limited too.
  policy.on_success();
  CHECK_FALSE(policy.on_error(t0 + 1002ms).log);
}

TEST_CASE("ReadErrors: gives up only after nothing but errors for give_up_after",
          "[worker][cachefiles][read_errors]") {
  ReadErrors policy({.give_up_after = 2s});
  const auto t0 = Clock::now();
  CHECK_FALSE(policy.on_error(t0).give_up);
  CHECK_FALSE(policy.on_error(t0 + 1999ms).give_up);
  policy.on_success();  // one good read: the clock starts again
  CHECK_FALSE(policy.on_error(t0 + 2500ms).give_up);
  CHECK_FALSE(policy.on_error(t0 + 4000ms).give_up);
  CHECK(policy.on_error(t0 + 4500ms).give_up);
}

TEST_CASE("CachefilesDevice: a read() that always fails backs off and gives up instead of spinning",
          "[worker][cachefiles][read_errors]") {
  boost::asio::io_context loop;
  proto::WorkerCounters counters{};
  auto pipe = test::make_pipe();
  REQUIRE(::write(pipe.write.get(), "x", 1) == 1);  // readable for ever
  CachefilesDevice device(loop, std::move(pipe.read), counters,
                          {.free_retries = 16, .first_backoff = 1ms, .max_backoff = 50ms, .log_every = 1000ms,
                           .give_up_after = 400ms});
  CountingSink sink;
  int fatal_err = 0;
  int fatal_calls = 0;
  device.on_fatal([&](int err) {
    fatal_err = err;
    ++fatal_calls;
  });
  read_calls = 0;
  sys::set_fault_hook(fail_reads_emfile);
  const auto started = Clock::now();
  device.start(sink);
  while (fatal_calls == 0 && Clock::now() - started < 3s) loop.run_for(10ms);
  const auto took = Clock::now() - started;
  const int calls_at_fatal = read_calls.load();
  loop.run_for(200ms);  // nothing more once given up
  sys::set_fault_hook(nullptr);
  CHECK(fatal_calls == 1);
  CHECK(fatal_err == EMFILE);
  CHECK(took >= 400ms);
  CHECK(took < 1500ms);
  // 16 free retries, then waits of 1, 2, 4 ... 50 ms: a few dozen reads in
  // 400 ms, where the unbounded loop made hundreds of thousands.
  CHECK(calls_at_fatal < 100);
  CHECK(read_calls.load() == calls_at_fatal);
  CHECK(counters.bad_messages.load() == static_cast<std::uint64_t>(calls_at_fatal));
  CHECK(sink.handled == 0);
}

}  // namespace ondemand::worker
