#include "proto/control.h"

#include <catch2/catch.hpp>

namespace ondemand::proto {
namespace {

std::string error_of(std::string_view bytes) {
  auto r = parse_control_request(bytes);
  REQUIRE(std::holds_alternative<std::string>(r));
  return std::get<std::string>(r);
}

}  // namespace

TEST_CASE("parse_control_request accepts every version-1 command", "[proto][control]") {
  for (auto cmd : {"status", "restart-worker", "stop", "upgrade"}) {
    INFO("cmd: " << cmd);
    auto r = parse_control_request(nlohmann::json{{"v", 1}, {"cmd", cmd}, {"extra", 5}}.dump());
    REQUIRE(std::holds_alternative<ControlRequest>(r));
    const auto& req = std::get<ControlRequest>(r);
    CHECK(req.cmd == cmd);
    CHECK(req.body["extra"] == 5);
  }
}

TEST_CASE("parse_control_request explains malformed requests instead of throwing", "[proto][control]") {
  CHECK_THAT(error_of("not json"), Catch::Contains("not JSON"));
  CHECK_THAT(error_of("[1]"), Catch::Contains("not a JSON object"));
  CHECK_THAT(error_of(R"({"cmd":"status"})"), Catch::Contains("\"v\""));
  CHECK_THAT(error_of(R"({"v":"1","cmd":"status"})"), Catch::Contains("\"v\""));
  CHECK_THAT(error_of(R"({"v":1.0,"cmd":"status"})"), Catch::Contains("\"v\""));
  CHECK_THAT(error_of(R"({"v":1})"), Catch::Contains("\"cmd\""));
  CHECK_THAT(error_of(R"({"v":1,"cmd":7})"), Catch::Contains("\"cmd\""));
  CHECK_THAT(error_of(std::string(CONTROL_MAX_BYTES + 1, ' ')), Catch::Contains("too large"));
}

TEST_CASE("parse_control_request refuses other protocol versions, naming both", "[proto][control]") {
  const auto e = error_of(R"({"v":2,"cmd":"status"})");
  CHECK_THAT(e, Catch::Contains("2") && Catch::Contains("1"));
  CHECK_FALSE(error_of(R"({"v":0,"cmd":"status"})").empty());
  CHECK_FALSE(error_of(R"({"v":-1,"cmd":"status"})").empty());
}

TEST_CASE("parse_control_request names an unknown command, sanitised and bounded", "[proto][control]") {
  CHECK_THAT(error_of(R"({"v":1,"cmd":"reboot"})"), Catch::Contains("unrecognized command \"reboot\""));
  const auto e = error_of(nlohmann::json{{"v", 1}, {"cmd", std::string("ev\x01il\n") + std::string(200, 'x')}}.dump());
  CHECK(e.find('\x01') == std::string::npos);
  CHECK(e.find('\n') == std::string::npos);
  CHECK(e.size() < 120);
}

TEST_CASE("control_ok and control_error carry the version and ok flag", "[proto][control]") {
  const auto ok = control_ok({{"state", "running"}});
  CHECK(ok["v"] == CONTROL_VERSION);
  CHECK(ok["ok"] == true);
  CHECK(ok["state"] == "running");
  const auto err = control_error("nope");
  CHECK(err["v"] == CONTROL_VERSION);
  CHECK(err["ok"] == false);
  CHECK(err["error"] == "nope");
}

}  // namespace ondemand::proto
