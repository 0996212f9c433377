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
