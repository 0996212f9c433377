#include "proto/blob_id.h"

#include <catch2/catch.hpp>

namespace ondemand::worker {

TEST_CASE("validate_blob_id accepts registry-style ids", "[worker][blob_id]") {
  for (std::string_view id : {"blob1", "sha256:0123456789abcdef", "a", "A-Z_0.9", "x+y@z=w",
                              "...", ".hidden", "a..b"}) {
    INFO("id: " << id);
    CHECK_FALSE(validate_blob_id(id).has_value());
  }
  CHECK_FALSE(validate_blob_id(std::string(MAX_BLOB_ID, 'a')).has_value());  // NAME_MAX exactly
}

TEST_CASE("validate_blob_id refuses every id that could leave blob_dir or confuse a path",
          "[worker][blob_id]") {
  const std::string refused[] = {
      "",
      ".",
      "..",
      "a/b",
      "/etc/passwd",
      "../x",
      "x/..",
      "a/",
      std::string("ab\0cd", 5),
      std::string("\0", 1),
      std::string(MAX_BLOB_ID + 1, 'a'),
      "tab\there",
      "new\nline",
      "bell\x07",
      "del\x7f",
      "with space",
      "caf\xc3\xa9",  // UTF-8 é
      "\xff",
      "back\\slash",
      "star*",
      "quote\"",
  };
  for (const auto& id : refused) {
    INFO("id: " << escape_id(id) << " (" << id.size() << " bytes)");
    CHECK(validate_blob_id(id).has_value());
  }
}

TEST_CASE("validate_blob_id explains the refusal", "[worker][blob_id]") {
  CHECK_THAT(*validate_blob_id("a/b"), Catch::Contains("/"));
  CHECK_THAT(*validate_blob_id(std::string("a\0b", 3)), Catch::Contains("NUL"));
  CHECK_THAT(*validate_blob_id(std::string(300, 'a')), Catch::Contains("255"));
}

TEST_CASE("escape_id renders any bytes printable and bounded", "[worker][blob_id]") {
  CHECK(escape_id("blob1") == "blob1");
  CHECK(escape_id(std::string("a\0b\n\"", 5)) == "a\\x00b\\x0a\\x22");
  const auto long_id = escape_id(std::string(1000, '\xff'));
  CHECK(long_id.size() == 300 * 4 + 3);
  CHECK(long_id.substr(long_id.size() - 3) == "...");
}

}  // namespace ondemand::worker
