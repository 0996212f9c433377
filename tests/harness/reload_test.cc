// Workers start from the supervisor's validated config snapshot, not from
// the operator's file (issue 8, deliverable 5): a bad edit plus a worker
// crash leaves the node serving, and `ondemandctl reload` validates before
// anything takes effect.
#include <signal.h>
#include <unistd.h>

#include <fstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/harness/harness.h"

using namespace ondemand::harness;
using namespace std::chrono_literals;

namespace {
nlohmann::json read_json(const std::filesystem::path& file) {
  std::ifstream in(file);
  return nlohmann::json::parse(in);
}
void write_json(const std::filesystem::path& file, const nlohmann::json& j) { std::ofstream(file) << j.dump(2); }
}  // namespace

TEST_CASE("a bad config edit plus a worker crash leaves the node serving; reload validates first",
          "[harness][reload]") {
  // No spare: the crash must go through a fresh worker start.
  SupervisorProcess sv({.config = {{"spare_worker", false}}});
  auto first = sv.wait_serving();
  REQUIRE(first);
  const auto good = read_json(sv.config_path());

  // An operator's typo, not reloaded: the next worker must not see it.
  auto bad = good;
  bad["max_inflight"] = "lots";
  write_json(sv.config_path(), bad);
  REQUIRE(::kill(*first, SIGKILL) == 0);
  auto second = sv.wait_serving(10s, *first);
  REQUIRE(second);
  CHECK(sv.device().open_missing(1) == -2);

  // reload refuses it, naming the key, and keeps the old config.
  auto r = sv.ctl({"reload"});
  INFO("reload with a bad file: rc " << r.rc);
  CHECK(r.rc == 1);
  CHECK(sv.alive());
  REQUIRE(::kill(*second, SIGKILL) == 0);
  auto third = sv.wait_serving(10s, *second);
  REQUIRE(third);

  // A key only a supervisor restart applies is refused, naming it.
  auto retagged = good;
  retagged["tag"] = "another-tag";
  write_json(sv.config_path(), retagged);
  r = sv.ctl({"reload"});
  CHECK(r.rc == 1);

  // A valid change is accepted and applies to the next worker.
  auto valid = good;
  valid["io_threads"] = 2;
  write_json(sv.config_path(), valid);
  r = sv.ctl({"reload"});
  CHECK(r.rc == 0);
  CHECK_THAT(r.out, Catch::Contains("next worker"));
  REQUIRE(::kill(*third, SIGKILL) == 0);
  auto fourth = sv.wait_serving(10s, *third);
  REQUIRE(fourth);
  CHECK(sv.device().open_missing(1) == -2);
  const auto log = sv.log();
  CHECK_THAT(log, Catch::Contains("\"max_inflight\""));
  CHECK_THAT(log, Catch::Contains("tag changed"));
}
