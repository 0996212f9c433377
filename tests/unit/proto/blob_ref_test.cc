#include "proto/blob_ref.h"

#include <catch2/catch.hpp>

namespace ondemand::proto {

TEST_CASE("domain_from_volume_key: the domain (or fsid) after \"erofs,\"", "[proto][blob_ref]") {
  CHECK(domain_from_volume_key("erofs,shared-domain").domain == "shared-domain");
  CHECK(domain_from_volume_key("erofs,fsid1").domain == "fsid1");
  for (std::string_view bad : {"", "erofs,", "erofs", "nfs,x", "EROFS,x"}) {
    INFO("volume key: " << bad);
    const auto r = domain_from_volume_key(bad);
    CHECK_FALSE(r.domain);
    CHECK_THAT(r.error, Catch::Contains("volume key"));
  }
}

TEST_CASE("validate_blob_ref refuses hostile ids and domains, naming the field", "[proto][blob_ref]") {
  CHECK_FALSE(validate_blob_ref({"", "blob"}));
  CHECK_FALSE(validate_blob_ref({"dom", "sha256:00ff"}));
  const std::pair<BlobRef, const char*> refused[] = {
      {{"", ""}, "blob id"},
      {{"", ".."}, "blob id"},
      {{"", "a/b"}, "blob id"},
      {{"", std::string("a\0b", 3)}, "blob id"},
      {{"", std::string(256, 'a')}, "blob id"},
      {{"..", "blob"}, "domain"},
      {{"a/b", "blob"}, "domain"},
      {{std::string("d\0", 2), "blob"}, "domain"},
      {{std::string(256, 'd'), "blob"}, "domain"},
  };
  for (const auto& [ref, field] : refused) {
    INFO("ref: " << describe(ref));
    const auto why = validate_blob_ref(ref);
    REQUIRE(why);
    CHECK_THAT(*why, Catch::StartsWith(field));
  }
}

}  // namespace ondemand::proto
