#include "supervisor/control_policy.h"

#include <vector>

#include <catch2/catch.hpp>

namespace ondemand::supervisor {

TEST_CASE("control_access: read-only, operating and root-only commands", "[supervisor][control][policy]") {
  CHECK(control_access("status", false) == ControlAccess::READ);
  CHECK(control_access("metrics", false) == ControlAccess::READ);
  CHECK(control_access("bindings", false) == ControlAccess::READ);
  for (auto cmd : {"restart-worker", "stop", "upgrade", "reload"}) {
    INFO(cmd);
    CHECK(control_access(cmd, false) == ControlAccess::OPERATE);
  }
  // A binding decides which bytes every mount of an id sees: root only.
  CHECK(control_access("bind", false) == ControlAccess::ROOT);
  CHECK(control_access("unbind", false) == ControlAccess::ROOT);
  // Naming the program a root supervisor starts is running it as root.
  CHECK(control_access("upgrade", true) == ControlAccess::ROOT);
  // Unclassified commands fail closed.
  CHECK(control_access("format-disk", false) == ControlAccess::ROOT);
  CHECK(control_access("", false) == ControlAccess::ROOT);
}

TEST_CASE("control_refusal: root may do anything, listed uids all but a binary, others nothing",
          "[supervisor][control][policy]") {
  const std::vector<uid_t> listed = {1000, 1001};
  for (auto cmd : {"status", "stop", "upgrade", "restart-worker", "format-disk"}) {
    INFO(cmd);
    CHECK_FALSE(control_refusal(cmd, false, 0, listed));
    CHECK_FALSE(control_refusal(cmd, true, 0, {}));
  }
  CHECK_FALSE(control_refusal("status", false, 1000, listed));
  CHECK_FALSE(control_refusal("stop", false, 1001, listed));
  CHECK_FALSE(control_refusal("upgrade", false, 1000, listed));
  CHECK_FALSE(control_refusal("restart-worker", false, 1000, listed));

  auto binary = control_refusal("upgrade", true, 1000, listed);
  REQUIRE(binary);
  CHECK_THAT(*binary, Catch::Contains("uid 1000") && Catch::Contains("root only"));
  CHECK(control_refusal("format-disk", false, 1000, listed));
  CHECK(control_refusal("bind", false, 1000, listed));
  CHECK(control_refusal("unbind", false, 1000, listed));
  CHECK_FALSE(control_refusal("bindings", false, 1000, listed));
  CHECK_FALSE(control_refusal("bind", false, 0, listed));

  auto stranger = control_refusal("status", false, 4242, listed);
  REQUIRE(stranger);
  CHECK_THAT(*stranger, Catch::Contains("uid 4242") && Catch::Contains("not allowed"));
  CHECK(control_refusal("status", false, 1000, {}));
}

}  // namespace ondemand::supervisor
