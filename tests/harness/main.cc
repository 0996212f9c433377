// Catch2 main for the host fault harness, plus a listener that prints the
// captured supervisor/worker stderr of a test case that failed.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdlib>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "tests/harness/harness.h"

namespace ondemand::harness {
namespace {
std::mutex logs_mutex;
std::vector<std::pair<std::string, std::string>> logs;
}  // namespace

void keep_log_for_failure(std::string title, std::string text) {
  std::lock_guard lock(logs_mutex);
  logs.emplace_back(std::move(title), std::move(text));
}

void fail_current_test(const std::string& why) { FAIL_CHECK(why); }

struct PrintLogsOnFailure : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo&) override {
    std::lock_guard lock(logs_mutex);
    logs.clear();
  }
  void testCaseEnded(const Catch::TestCaseStats& stats) override {
    std::lock_guard lock(logs_mutex);
    // HARNESS_PRINT_LOGS=1: every test case's logs, passed or not.
    static const bool always = std::getenv("HARNESS_PRINT_LOGS") != nullptr;
    if (always || stats.totals.assertions.failed > 0)
      for (const auto& [title, text] : logs)
        Catch::cerr() << "\n----- " << title << " -----\n" << text << "----- end -----\n";
    logs.clear();
  }
};
CATCH_REGISTER_LISTENER(PrintLogsOnFailure)

}  // namespace ondemand::harness

int main(int argc, char** argv) { return Catch::Session().run(argc, argv); }
