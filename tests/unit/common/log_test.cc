#include "common/log.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <catch2/catch.hpp>

#include "common/spawn.h"
#include "proto/exit_codes.h"
#include "tests/unit/test_util.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace ondemand {
namespace {

// Points fd 2 at /dev/null for the scope (the logger writes there) and puts
// back the quiet default logger of the test runner afterwards.
struct QuietStderr {
  UniqueFd saved{::dup(2)};
  QuietStderr() {
    UniqueFd devnull{::open("/dev/null", O_WRONLY | O_CLOEXEC)};
    REQUIRE(devnull.valid());
    REQUIRE(::dup2(devnull.get(), 2) == 2);
  }
  ~QuietStderr() {
    ::dup2(saved.get(), 2);
    spdlog::set_level(spdlog::level::off);
  }
};

}  // namespace

// Under the TSan build (ONDEMAND_SANITIZE=thread, header-only spdlog) this
// is what shows a single-threaded sink: the formatter's cached time fields
// race between pool threads.
TEST_CASE("init_logging: pool threads may log concurrently", "[common][log]") {
  QuietStderr quiet;
  REQUIRE(init_logging("unit").empty());
  spdlog::set_level(spdlog::level::info);
  std::atomic<int> done{0};
  {
    boost::asio::thread_pool pool(4);
    for (int t = 0; t < 4; ++t)
      boost::asio::post(pool, [&done, t] {
        for (int i = 0; i < 200; ++i) spdlog::info("pool thread {} line {} msg_id={}", t, i, t * 1000 + i);
        done.fetch_add(1);
      });
    pool.join();
  }
  CHECK(done.load() == 4);
}

TEST_CASE("init_logging ignores SIGPIPE", "[common][log]") {
  QuietStderr quiet;
  struct sigaction old{};
  struct sigaction dfl{};
  dfl.sa_handler = SIG_DFL;
  REQUIRE(::sigaction(SIGPIPE, &dfl, &old) == 0);
  REQUIRE(init_logging("unit").empty());
  struct sigaction now{};
  REQUIRE(::sigaction(SIGPIPE, nullptr, &now) == 0);
  CHECK(now.sa_handler == SIG_IGN);
  ::sigaction(SIGPIPE, &old, nullptr);
}

#if defined(ONDEMAND_WORKER_BINARY) && defined(ONDEMAND_SUPERVISOR_BINARY)
// The real programs, started the way the supervisor starts a worker (SIGPIPE
// at its default), with stderr a pipe nobody reads any more: a bad
// configuration must still end in the configuration exit code, not SIGPIPE.
TEST_CASE("supervisor and worker survive a stderr pipe without a reader", "[common][log][host]") {
  for (const char* binary : {ONDEMAND_WORKER_BINARY, ONDEMAND_SUPERVISOR_BINARY}) {
    INFO(binary);
    auto err = test::make_pipe();
    err.read.reset();
    LaunchSpec spec;
    spec.binary = binary;
    spec.args = {"--config", "/nonexistent/ondemand-unit-config.json"};
    spec.fds = {{2, err.write.get()}};
    auto child = launch(spec);
    err.write.reset();
    siginfo_t info{};
    REQUIRE(::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(child.pidfd.get()), &info, WEXITED) == 0);
    CHECK(info.si_code == CLD_EXITED);
    CHECK(info.si_status == static_cast<int>(proto::ExitCode::CONFIG));
  }
}
#endif

}  // namespace ondemand

namespace ondemand {

TEST_CASE("parse_log_level: any case, and nothing unknown becomes off", "[common][log]") {
  CHECK(parse_log_level("info") == spdlog::level::info);
  CHECK(parse_log_level("INFO") == spdlog::level::info);
  CHECK(parse_log_level("Warning") == spdlog::level::warn);
  CHECK(parse_log_level("err") == spdlog::level::err);
  CHECK(parse_log_level("CRITICAL") == spdlog::level::critical);
  CHECK(parse_log_level("off") == spdlog::level::off);
  CHECK_FALSE(parse_log_level("inof").has_value());
  CHECK_FALSE(parse_log_level("").has_value());
}

TEST_CASE("init_logging: an unknown ONDEMAND_LOG_LEVEL is an error that names it", "[common][log]") {
  QuietStderr quiet;
  ::setenv("ONDEMAND_LOG_LEVEL", "verbose", 1);
  const std::string error = init_logging("unit");
  ::unsetenv("ONDEMAND_LOG_LEVEL");
  CHECK_THAT(error, Catch::Contains("ONDEMAND_LOG_LEVEL=\"verbose\""));
  // Logging is not off: the error itself went out at the default level.
  CHECK(spdlog::default_logger()->level() == spdlog::level::info);
}

}  // namespace ondemand

namespace ondemand {

TEST_CASE("LogFields: fields for this thread's lines while they live, nested, then gone", "[common][log]") {
  CHECK(current_log_fields().empty());
  {
    LogFields outer({{"MESSAGE_ID", "abc"}, {"WORKER_PID", "42"}});
    CHECK(current_log_fields() == std::vector<std::string>{"MESSAGE_ID=abc", "WORKER_PID=42"});
    {
      LogFields inner({{"BLOB", "x"}});
      CHECK(current_log_fields().size() == 3);
      CHECK(current_log_fields().back() == "BLOB=x");
      std::thread([] { CHECK(current_log_fields().empty()); }).join();  // per thread
    }
    CHECK(current_log_fields().size() == 2);
  }
  CHECK(current_log_fields().empty());
}

TEST_CASE("init_logging writes to stderr unless JOURNAL_STREAM names stderr", "[common][log]") {
  QuietStderr quiet;
  ::setenv("JOURNAL_STREAM", "1:1", 1);  // some other file
  REQUIRE(init_logging("unit").empty());
  CHECK_FALSE(logging_to_journal());
  ::unsetenv("JOURNAL_STREAM");
}

}  // namespace ondemand
