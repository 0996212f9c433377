#include "proto/exit_codes.h"

#include <csignal>

#include <catch2/catch.hpp>

namespace ondemand::proto {

TEST_CASE("classify_exit: any signal is a crash, whatever its number", "[proto][exit_codes]") {
  for (int sig : {SIGKILL, SIGSEGV, SIGABRT, SIGTERM, SIGBUS, 0, 64, 78})
    CHECK(classify_exit(false, sig) == ExitClass::CRASHED);
}

TEST_CASE("classify_exit: exit 0 is a clean stop", "[proto][exit_codes]") {
  CHECK(classify_exit(true, 0) == ExitClass::STOPPED);
}

TEST_CASE("classify_exit: usage and config errors are fatal so they park instead of crash-looping",
          "[proto][exit_codes]") {
  CHECK(classify_exit(true, 64) == ExitClass::FATAL_CONFIG);
  CHECK(classify_exit(true, 78) == ExitClass::FATAL_CONFIG);
  CHECK(static_cast<int>(ExitCode::USAGE) == 64);
  CHECK(static_cast<int>(ExitCode::CONFIG) == 78);
}

TEST_CASE("classify_exit: run-time failures and unknown codes are crashes (restart)",
          "[proto][exit_codes]") {
  for (int code : {70, 75, 69, 74, 127, 1, 2, 255})
    CHECK(classify_exit(true, code) == ExitClass::CRASHED);
}

TEST_CASE("classify_exit: a dead cache is its own class, and it parks instead of crash-looping",
          "[proto][exit_codes][cull]") {
  CHECK(static_cast<int>(ExitCode::CACHE_DEAD) == 79);
  CHECK(classify_exit(true, 79) == ExitClass::CACHE_DEAD);
  CHECK_THAT(describe_exit(true, 79), Catch::Contains("79") && Catch::Contains("cache dead"));
}

TEST_CASE("describe_exit names the signal or the code's meaning", "[proto][exit_codes]") {
  CHECK(describe_exit(false, SIGKILL) == "killed by SIGKILL");
  CHECK_THAT(describe_exit(true, 78), Catch::Contains("78") && Catch::Contains("configuration"));
  CHECK_THAT(describe_exit(true, 0), Catch::Contains("clean stop"));
  CHECK_THAT(describe_exit(true, 3), Catch::Contains("unknown"));
}

}  // namespace ondemand::proto
