// A worker is a separate program that may be buggy, of another version, or
// compromised: nothing it sends on its channel may take the supervisor down.
// A fake worker (harness-fake-worker) completes the handshake, or breaks it,
// and sends every message type with fields of the wrong type.
#include <fstream>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "tests/harness/harness.h"

using namespace ondemand::harness;

namespace {
const std::string GOOD_HELLO =
    R"({"type":"hello","role":"worker","proto_min":1,"proto_max":1,"version":"fake","pid":1})";

// Runs the supervisor with the fake worker playing `script`, then checks
// that it is still alive and answering `ondemandctl status`.
void survives(const std::string& script, const std::string& what) {
  SupervisorOptions options;
  TempDir scripts;
  // The fake worker runs as worker_user (not root) and marks the script read here.
  std::filesystem::permissions(scripts.path(), std::filesystem::perms::all | std::filesystem::perms::sticky_bit);
  const auto script_path = scripts.path() / "script";
  std::ofstream(script_path) << script;
  options.config = {{"worker_binary", fake_worker_binary().string()}, {"spare_worker", false}};
  options.extra_env = {"ONDEMAND_FAKE_WORKER_SCRIPT=" + script_path.string()};
  SupervisorProcess sv(options);
  INFO(what);
  // Every step of the script has run well within this (it never sleeps).
  std::this_thread::sleep_for(700ms);
  // The fake worker got and read its script, so its messages were sent.
  CHECK(std::filesystem::exists(script_path.string() + ".loaded"));
  CHECK(sv.alive());
  auto status = sv.status();
  REQUIRE(status);
  CHECK(status->value("ok", false));
}
}  // namespace

// Property: a hello with wrong field types during the handshake is refused
// (the worker is killed or answered "unrecognized"), never a supervisor crash
// (issue 8: nlohmann type_error from value("proto_min", 0u) on a string).
TEST_CASE("a malformed hello does not kill the supervisor", "[harness][malformed][fixed-by-lead]") {
  const char* hellos[] = {
      R"({"type":"hello","proto_min":"1"})",
      R"({"type":"hello","role":"worker","proto_min":1,"proto_max":"1","version":"fake","pid":1})",
      R"({"type":"hello","role":"worker","proto_min":1,"proto_max":1,"version":7,"pid":1})",
      R"({"type":"hello","role":"worker","proto_min":-1,"proto_max":1e30,"version":"fake","pid":"x"})",
      R"({"type":"hello","role":"worker","proto_min":null,"proto_max":[1],"version":{},"pid":1})",
      R"({"type":7})",
      R"(["hello"])",
      R"(not json at all)",
  };
  for (const char* hello : hellos) {
    DYNAMIC_SECTION(hello) { survives(fmt::format("send {}\nhold\n", hello), hello); }
  }
}

// Property: after a good handshake, every known message type with wrong
// field types gets at most an "unrecognized" and is otherwise ignored.
TEST_CASE("malformed messages after the handshake do not kill the supervisor", "[harness][malformed][fixed-by-lead]") {
  const char* messages[] = {
      R"({"type":"serving","generation":"x"})",
      R"({"type":"handed-over","objects":"x"})",
      R"({"type":"handed-over","objects":null})",
      R"({"type":"handed-over","objects":-1})",
      R"({"type":"unrecognized","what":5})",
      R"({"type":"unrecognized","what":["a"]})",
      R"({"type":"hello","proto_min":"1"})",
      R"({"type":"adopt","fds":"1","pid":"x","generation":"y","rdev":-5})",
      R"({"type":"refused","why":3})",
      R"({"type":"objects","fds":1,"objects":"x"})",
      R"({"type":"objects-done","count":"x"})",
      R"({"type":"device","fds":"1"})",
      R"({"type":"takeover","generation":{}})",
      R"({"type":"stop"})",
      R"({"type":"resume"})",
      R"({"type":""})",
      R"({"type":null})",
      R"({})",
      R"(42)",
      R"({"type":"serving")",
  };
  for (const char* message : messages) {
    DYNAMIC_SECTION(message) {
      survives(fmt::format("send {}\nrecv\nrecv\nsend {}\nsend {{\"type\":\"serving\",\"generation\":1}}\nhold\n",
                           GOOD_HELLO, message),
               message);
    }
  }
}
