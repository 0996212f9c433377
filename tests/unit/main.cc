// Catch2 runner. Product code logs through spdlog's default logger; tests
// keep it quiet unless ONDEMAND_LOG_LEVEL asks for more (e.g. =debug when a
// test fails and the log would explain why).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdlib>

#include <spdlog/spdlog.h>

int main(int argc, char* argv[]) {
  const char* level = std::getenv("ONDEMAND_LOG_LEVEL");
  spdlog::set_level(level ? spdlog::level::from_str(level) : spdlog::level::off);
  return Catch::Session().run(argc, argv);
}
