#include "common/sandbox.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include <catch2/catch.hpp>

#include "tests/unit/test_util.h"

namespace ondemand {
namespace {

constexpr uid_t NOBODY = 65534;

TEST_CASE("access_problem names the first path component the worker user cannot pass", "[common][sandbox]") {
  test::TempDir tmp;
  const auto blobs = tmp.path() / "outer" / "blobs";
  std::filesystem::create_directories(blobs);
  std::ofstream(blobs / "b") << "x";
  REQUIRE(::chmod(tmp.path().c_str(), 0755) == 0);
  REQUIRE(::chmod((tmp.path() / "outer").c_str(), 0755) == 0);
  REQUIRE(::chmod(blobs.c_str(), 0755) == 0);
  CHECK(access_problem(blobs, NOBODY, NOBODY).empty());

  REQUIRE(::chmod((tmp.path() / "outer").c_str(), 0700) == 0);
  auto why = access_problem(blobs, NOBODY, NOBODY);
  CHECK_THAT(why, Catch::Contains((tmp.path() / "outer").string()) && Catch::Contains("search it") &&
                      Catch::Contains("0700"));
  // The owner passes; so does the group when it has the bits.
  CHECK(access_problem(blobs, 0, 0).empty());
  REQUIRE(::chmod((tmp.path() / "outer").c_str(), 0710) == 0);
  CHECK(access_problem(blobs, NOBODY, 0).empty());
  CHECK_FALSE(access_problem(blobs, NOBODY, NOBODY).empty());

  REQUIRE(::chmod((tmp.path() / "outer").c_str(), 0755) == 0);
  REQUIRE(::chmod(blobs.c_str(), 0711) == 0);  // searchable, not listable
  CHECK_THAT(access_problem(blobs, NOBODY, NOBODY), Catch::Contains("list and search it"));
  REQUIRE(::chmod((blobs / "b").c_str(), 0600) == 0);
  CHECK_THAT(access_problem(blobs / "b", NOBODY, NOBODY), Catch::Contains("read it"));
  CHECK_THAT(access_problem(tmp.path() / "missing", NOBODY, NOBODY), Catch::Contains("ENOENT"));
}

TEST_CASE("open_state_dir_to_group: root:<group> 01775", "[common][sandbox]") {
  test::TempDir tmp;
  open_state_dir_to_group(tmp.path(), NOBODY);
  struct stat st{};
  REQUIRE(::stat(tmp.path().c_str(), &st) == 0);
  CHECK(st.st_uid == 0);
  CHECK(st.st_gid == NOBODY);
  CHECK((st.st_mode & 07777) == 01775);
  CHECK_THROWS_WITH(open_state_dir_to_group(tmp.path() / "missing", NOBODY), Catch::Contains("missing"));
}

}  // namespace
}  // namespace ondemand
