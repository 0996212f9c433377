// ondemand-chaos manifest DIR: the manifest a user needs to chaos-test a real
// image must be exactly what the VM rig's generator writes for the same tree.
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>

#include "tests/unit/test_util.h"
#include "tools/chaos/chaos.h"

namespace ondemand::chaos {
namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("make_manifest matches gen-tree.py's manifest of the same tree", "[tools][chaos]") {
  test::TempDir dir;
  const auto tree = dir.path() / "tree";
  const std::string cmd = std::string("python3 ") + ONDEMAND_SOURCE_DIR + "/tests/vm/gen-tree.py " + tree.string() +
                          " --profile small --seed 7 >/dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  const auto want = slurp(tree.string() + ".manifest");
  REQUIRE_FALSE(want.empty());
  CHECK(make_manifest(tree) == want);
  // And it parses back: every entry of the tree is there once.
  CHECK(parse_manifest(make_manifest(tree)).size() == parse_manifest(want).size());
}

TEST_CASE("make_manifest names a path the format cannot hold", "[tools][chaos]") {
  test::TempDir dir;
  std::filesystem::create_directories(dir.path() / "t");
  std::ofstream(dir.path() / "t" / "a file") << "x";
  CHECK_THROWS_WITH(make_manifest(dir.path() / "t"), Catch::Contains("\"a file\""));
  CHECK_THROWS_WITH(make_manifest(dir.path() / "absent"), Catch::Contains("not a directory"));
}

}  // namespace ondemand::chaos

namespace ondemand::chaos {

TEST_CASE("chaos report for a person: units, both timings explained, missing fields shown as -", "[tools][chaos]") {
  const auto report = nlohmann::json::parse(R"({"rounds":2,"kills":12,"failover_proven":12,"kills_during_fill_ahead":5,"files_verified":1152,
    "bytes_verified":109532844,"read_errors":0,"mismatches":0,"longest_reader_stall_ms":532.03325,
    "recovery_ms":{"max":476.02975,"p50":160.01,"p99":476.02975,"samples":11,"unobserved":1},
    "kill_to_serving_ms":{"p50":24.0,"p99":60.5,"max":61.25}})");
  const std::string text = format_report(report);
  CHECK_THAT(text, Catch::Contains("kills 12, every failover proven: 12"));
  CHECK_THAT(text, Catch::Contains("104.5 MiB: 0 read errors, 0 mismatches"));
  CHECK_THAT(text, Catch::Contains("5 of the kills came while the worker was filling ahead"));
  CHECK_THAT(text, Catch::Contains("p50 ms"));
  CHECK_THAT(text, Catch::Contains("160.0"));   // one decimal, not six
  CHECK_THAT(text, Catch::Contains("532.0"));
  CHECK(text.find("476.02975") == std::string::npos);
  CHECK_THAT(text, Catch::Contains("1 kill(s) came while no reader had a request"));
  CHECK_THAT(text, Catch::Contains("generation grows"));
  CHECK(text.find("unobserved") == std::string::npos);

  const std::string partial = format_report(nlohmann::json::parse(R"({"kills":"x"})"));
  CHECK_THAT(partial, Catch::Contains("kills -,"));
}

// Property: a kill is put in the class of the one failover counter that
// grew by one; a supervisor without the counters (none grew) or two
// failovers in one kill are "unknown", never a guess.
TEST_CASE("chaos tells each kill's failover by the spare the supervisor found", "[tools][chaos]") {
  const FailoverSnapshot before{5, 7, 2, 9};
  CHECK(classify_failover(before, {6, 7, 2, 10}) == SpareAtKill::READY);
  CHECK(classify_failover(before, {5, 8, 2, 10}) == SpareAtKill::STARTING);
  CHECK(classify_failover(before, {5, 7, 3, 9}) == SpareAtKill::NONE);
  CHECK(classify_failover(before, before) == SpareAtKill::UNKNOWN);
  CHECK(classify_failover(before, {6, 8, 2, 11}) == SpareAtKill::UNKNOWN);
  CHECK(classify_failover(before, {7, 7, 2, 11}) == SpareAtKill::UNKNOWN);
  CHECK(std::string(to_string(SpareAtKill::STARTING)) == "starting");
}

TEST_CASE("chaos report for a person: the timings by the spare's state, empty classes left out", "[tools][chaos]") {
  const auto report = nlohmann::json::parse(R"({"kills":3,"failover_proven":3,"by_spare":{
    "ready":{"kills":2,"promoted":2,"kill_to_serving_ms":{"p50":8.25,"p99":9.5,"max":9.5,"samples":2},
             "recovery_ms":{"p50":30.0,"p99":41.0,"max":41.0,"samples":2},
             "kill_to_reading_ms":{"p50":7.0,"p99":8.0,"max":8.0,"samples":2},
             "reading_to_first_reply_ms":{"p50":22.0,"p99":33.0,"max":33.0,"samples":2}},
    "starting":{"kills":1,"promoted":0,"kill_to_serving_ms":{"p50":612.0,"p99":612.0,"max":612.0,"samples":1},
                "recovery_ms":{"p50":null,"p99":null,"max":null,"samples":0}},
    "none":{"kills":0,"promoted":0}}})");
  const std::string text = format_report(report);
  CHECK_THAT(text, Catch::Contains("spare ready at the kill: 2 kills, 2 promoted"));
  CHECK_THAT(text, Catch::Contains("spare starting at the kill: 1 kills, 0 promoted"));
  CHECK(text.find("spare none") == std::string::npos);
  CHECK_THAT(text, Catch::Contains("33.0"));
  CHECK_THAT(text, Catch::Contains("612.0"));
}

TEST_CASE("--registry-image: all four parts, or an error quoting the spec", "[tools][chaos]") {
  const auto image = parse_registry_image("small=/m/small.manifest,127.0.0.1:5000,vm/small,sha256:ab");
  CHECK(image.name == "small");
  CHECK(image.manifest == "/m/small.manifest");
  REQUIRE(image.registry);
  CHECK(image.registry->registry == "127.0.0.1:5000");
  CHECK(image.registry->repository == "vm/small");
  CHECK(image.registry->digest == "sha256:ab");
  for (const char* bad : {"small", "=m,r,p,d", "small=m,r,p", "small=m,r,,d", "small=m,r,p,d,extra"}) {
    INFO(bad);
    CHECK_THROWS_WITH(parse_registry_image(bad), Catch::Contains(std::string(bad)));
  }
}

}  // namespace ondemand::chaos
