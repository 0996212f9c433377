#include "proto/control.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

namespace ondemand::proto {
namespace {

using nlohmann::json;

std::string error_of(std::string_view bytes) {
  auto r = decode_request(bytes);
  REQUIRE(std::holds_alternative<std::string>(r));
  return std::get<std::string>(r);
}

std::string reply_error_of(std::string_view bytes, const ControlRequest& answered) {
  auto r = decode_reply(bytes, answered);
  REQUIRE(std::holds_alternative<std::string>(r));
  return std::get<std::string>(r);
}

control::StatusReply sample_status() {
  return {.supervisor_pid = 42,
          .version = "0.1.0",
          .uptime_s = 3.5,
          .state = "running",
          .worker = control::WorkerInfo{.pid = 43, .generation = 7, .version = "0.1.0",
                                        .binary = "/usr/bin/ondemand-worker", .serving = true, .adopted = false,
                                        .uptime_s = 1.25},
          .incoming_worker = std::nullopt,
          .spare_worker = control::WorkerInfo{.pid = 44, .generation = 6, .version = "0.1.0",
                                              .binary = "/usr/bin/ondemand-worker", .serving = false,
                                              .adopted = true, .uptime_s = 0.5},
          .worker_binary = "/usr/bin/ondemand-worker",
          .generation = 7,
          .restarts = 2,
          .hangs_detected = 1,
          .inflight = 3,
          .counters = {{"opens", 10}, {"reads", 20}, {"bytes_written", std::uint64_t(1) << 40}}};
}

json status_json() { return json::parse(encode_reply(sample_status())); }

}  // namespace

TEST_CASE("control requests round-trip through encode_request and decode_request", "[proto][control]") {
  const ControlRequest requests[] = {control::Status{}, control::RestartWorker{}, control::Stop{},
                                     control::Upgrade{}, control::Upgrade{"/opt/new/ondemand-worker"},
                                     control::Reload{}};
  for (const auto& request : requests) {
    INFO("cmd: " << command_of(request));
    const auto bytes = encode_request(request);
    REQUIRE_FALSE(bytes.empty());
    CHECK(json::parse(bytes)["v"] == CONTROL_VERSION);
    auto back = decode_request(bytes);
    REQUIRE(std::holds_alternative<ControlRequest>(back));
    CHECK(std::get<ControlRequest>(back).index() == request.index());
    if (const auto* u = std::get_if<control::Upgrade>(&request))
      CHECK(std::get<control::Upgrade>(std::get<ControlRequest>(back)).binary == u->binary);
  }
  CHECK(command_of(control::RestartWorker{}) == "restart-worker");
}

// fanotify front end: stop --force, and ondemandctl mount's add-blobs.
TEST_CASE("stop carries force only when set; add-blobs carries a checked list of blob ids", "[proto][control]") {
  const auto stop_of = [](std::string_view bytes) {
    auto r = decode_request(bytes);
    REQUIRE(std::holds_alternative<ControlRequest>(r));
    return std::get<control::Stop>(std::get<ControlRequest>(r));
  };
  CHECK_FALSE(json::parse(encode_request(control::Stop{})).contains("force"));  // what an old supervisor reads
  CHECK(stop_of(encode_request(control::Stop{true})).force);
  CHECK_FALSE(stop_of(encode_request(control::Stop{})).force);
  CHECK_FALSE(stop_of(R"({"v":1,"cmd":"stop"})").force);  // an older ondemandctl
  CHECK_THAT(error_of(R"({"v":1,"cmd":"stop","force":"yes"})"), Catch::Contains("force"));

  const control::AddBlobs add{{"meta", "data-1", "sha256:ab"}};
  auto back = decode_request(encode_request(add));
  REQUIRE(std::holds_alternative<ControlRequest>(back));
  CHECK(std::get<control::AddBlobs>(std::get<ControlRequest>(back)).blobs == add.blobs);
  CHECK_THAT(error_of(R"({"v":1,"cmd":"add-blobs"})"), Catch::Contains("blobs") && Catch::Contains("missing"));
  CHECK_THAT(error_of(R"({"v":1,"cmd":"add-blobs","blobs":[]})"), Catch::Contains("empty"));
  CHECK_THAT(error_of(R"({"v":1,"cmd":"add-blobs","blobs":"meta"})"), Catch::Contains("not an array"));
  CHECK_THAT(error_of(R"({"v":1,"cmd":"add-blobs","blobs":["a",5]})"), Catch::Contains("blobs[1]"));
  CHECK_THAT(error_of(R"({"v":1,"cmd":"add-blobs","blobs":["a",""]})"), Catch::Contains("blobs[1]"));
  json many = {{"v", 1}, {"cmd", "add-blobs"}, {"blobs", json::array()}};
  for (std::size_t i = 0; i <= control::MAX_BLOBS_PER_MOUNT; ++i) many["blobs"].push_back("b" + std::to_string(i));
  CHECK_THAT(error_of(many.dump()), Catch::Contains("more than"));

  // Its reply: the cache files' paths, in order.
  const control::CacheFilesReply paths{{"/c/fanotify/meta", "/c/fanotify/data-1"}};
  auto reply = decode_reply(encode_reply(paths), add);
  REQUIRE(std::holds_alternative<ControlReply>(reply));
  CHECK(std::get<control::CacheFilesReply>(std::get<ControlReply>(reply)).paths == paths.paths);
  CHECK_THAT(reply_error_of(R"({"v":1,"ok":true,"paths":[1]})", add), Catch::Contains("paths[0]"));
  CHECK_THAT(reply_error_of(R"({"v":1,"ok":true})", add), Catch::Contains("paths"));
}

TEST_CASE("decode_request ignores unknown fields", "[proto][control]") {
  for (auto cmd : {"status", "restart-worker", "stop", "upgrade", "reload"}) {
    INFO("cmd: " << cmd);
    auto r = decode_request(json{{"v", 1}, {"cmd", cmd}, {"extra", 5}}.dump());
    REQUIRE(std::holds_alternative<ControlRequest>(r));
    CHECK(command_of(std::get<ControlRequest>(r)) == cmd);
  }
}

TEST_CASE("decode_request explains malformed requests instead of throwing", "[proto][control]") {
  CHECK_THAT(error_of("not json"), Catch::Contains("not JSON"));
  CHECK_THAT(error_of(""), Catch::Contains("not JSON"));
  CHECK_THAT(error_of(std::string_view("\x00\x01garbage", 9)), Catch::Contains("not JSON"));
  CHECK_THAT(error_of("[1]"), Catch::Contains("not a JSON object"));
  CHECK_THAT(error_of(R"({"cmd":"status"})"), Catch::Contains("\"v\""));
  CHECK_THAT(error_of(R"({"v":"1","cmd":"status"})"), Catch::Contains("\"v\""));
  CHECK_THAT(error_of(R"({"v":1.0,"cmd":"status"})"), Catch::Contains("\"v\""));
  CHECK_THAT(error_of(R"({"v":1})"), Catch::Contains("\"cmd\""));
  CHECK_THAT(error_of(R"({"v":1,"cmd":7})"), Catch::Contains("\"cmd\""));
  CHECK_THAT(error_of(std::string(CONTROL_MAX_BYTES + 1, ' ')), Catch::Contains("too large"));
}

TEST_CASE("decode_request refuses other protocol versions, naming both", "[proto][control]") {
  const auto e = error_of(R"({"v":2,"cmd":"status"})");
  CHECK_THAT(e, Catch::Contains("2") && Catch::Contains("1"));
  CHECK_FALSE(error_of(R"({"v":0,"cmd":"status"})").empty());
  CHECK_FALSE(error_of(R"({"v":-1,"cmd":"status"})").empty());
  CHECK_FALSE(error_of(R"({"v":18446744073709551617,"cmd":"status"})").empty());
  CHECK_FALSE(error_of(R"({"v":18446744073709551615,"cmd":"status"})").empty());
}

TEST_CASE("decode_request names an unknown command, sanitised and bounded", "[proto][control]") {
  CHECK_THAT(error_of(R"({"v":1,"cmd":"reboot"})"), Catch::Contains("unrecognized command \"reboot\""));
  const auto e = error_of(json{{"v", 1}, {"cmd", std::string("ev\x01il\n") + std::string(200, 'x')}}.dump());
  CHECK(e.find('\x01') == std::string::npos);
  CHECK(e.find('\n') == std::string::npos);
  CHECK(e.size() < 120);
}

TEST_CASE("decode_request checks upgrade's binary: string, absolute, bounded, no NUL", "[proto][control]") {
  auto upgrade = [](json binary) { return json{{"v", 1}, {"cmd", "upgrade"}, {"binary", binary}}.dump(); };
  CHECK_THAT(error_of(upgrade(5)), Catch::Contains("\"binary\" is not a string"));
  CHECK_THAT(error_of(upgrade(nullptr)), Catch::Contains("\"binary\" is not a string"));
  CHECK_THAT(error_of(upgrade("")), Catch::Contains("\"binary\" must be an absolute path"));
  CHECK_THAT(error_of(upgrade("bin/worker")), Catch::Contains("\"binary\" must be an absolute path"));
  CHECK_THAT(error_of(upgrade("/" + std::string(CONTROL_MAX_PATH, 'x'))), Catch::Contains("longer than 4096"));
  CHECK_THAT(error_of(upgrade(std::string("/bin/a\0b", 8))), Catch::Contains("NUL"));
  auto ok = decode_request(upgrade("/usr/lib/ondemand/ondemand-worker"));
  REQUIRE(std::holds_alternative<ControlRequest>(ok));
  CHECK(std::get<control::Upgrade>(std::get<ControlRequest>(ok)).binary == "/usr/lib/ondemand/ondemand-worker");
}

TEST_CASE("control replies round-trip through encode_reply and decode_reply", "[proto][control]") {
  SECTION("status") {
    auto r = decode_reply(encode_reply(sample_status()), control::Status{});
    REQUIRE(std::holds_alternative<ControlReply>(r));
    const auto& s = std::get<control::StatusReply>(std::get<ControlReply>(r));
    const auto want = sample_status();
    CHECK(s.supervisor_pid == want.supervisor_pid);
    CHECK(s.version == want.version);
    CHECK(s.uptime_s == want.uptime_s);
    CHECK(s.state == want.state);
    REQUIRE(s.worker);
    CHECK(s.worker->pid == 43);
    CHECK(s.worker->generation == 7);
    CHECK(s.worker->binary == want.worker->binary);
    CHECK(s.worker->serving);
    CHECK_FALSE(s.worker->adopted);
    CHECK(s.worker->uptime_s == 1.25);
    CHECK_FALSE(s.incoming_worker);
    REQUIRE(s.spare_worker);
    CHECK(s.spare_worker->adopted);
    CHECK(s.worker_binary == want.worker_binary);
    CHECK(s.generation == 7);
    CHECK(s.restarts == 2);
    CHECK(s.hangs_detected == 1);
    CHECK(s.inflight == 3);
    CHECK(s.counters == want.counters);
    CHECK(s.counter("bytes_written") == std::uint64_t(1) << 40);
    CHECK(s.counter("no such counter") == 0);
  }
  SECTION("done") {
    for (const ControlRequest& answered :
         {ControlRequest{control::RestartWorker{}}, ControlRequest{control::Stop{}},
          ControlRequest{control::Reload{}}}) {
      auto r = decode_reply(encode_reply(control::Done{"worker restart started"}), answered);
      REQUIRE(std::holds_alternative<ControlReply>(r));
      CHECK(std::get<control::Done>(std::get<ControlReply>(r)).message == "worker restart started");
    }
  }
  SECTION("upgraded") {
    auto r = decode_reply(encode_reply(control::Upgraded{"upgraded", 99, 12, "0.2.0"}), control::Upgrade{});
    REQUIRE(std::holds_alternative<ControlReply>(r));
    const auto& u = std::get<control::Upgraded>(std::get<ControlReply>(r));
    CHECK(u.message == "upgraded");
    CHECK(u.pid == 99);
    CHECK(u.generation == 12);
    CHECK(u.version == "0.2.0");
  }
  SECTION("error, to any command") {
    for (const ControlRequest& answered : {ControlRequest{control::Status{}}, ControlRequest{control::Upgrade{}},
                                           ControlRequest{control::Stop{}}}) {
      const auto bytes = encode_reply(control::Error{"nope"});
      CHECK(json::parse(bytes) == json{{"v", CONTROL_VERSION}, {"ok", false}, {"error", "nope"}});
      auto r = decode_reply(bytes, answered);
      REQUIRE(std::holds_alternative<ControlReply>(r));
      CHECK(std::get<control::Error>(std::get<ControlReply>(r)).error == "nope");
    }
  }
}

TEST_CASE("decode_reply refuses a status reply missing any required field, naming it", "[proto][control]") {
  const auto full = status_json();
  for (const auto& [key, value] : full.items()) {
    if (key == "v" || key == "incoming_worker" || key == "spare_worker" || key == "worker") continue;
    INFO("without " << key);
    auto j = full;
    j.erase(key);
    const auto e = reply_error_of(j.dump(), control::Status{});
    if (key == "ok")
      CHECK_THAT(e, Catch::Contains("\"ok\" missing"));
    else
      CHECK_THAT(e, Catch::Contains("\"status\" reply") && Catch::Contains("\"" + key + "\" missing"));
  }
  for (const auto& [key, value] : full["worker"].items()) {
    if (key == "killed_s_ago") continue;  // optional: set only for a worker being killed
    INFO("worker without " << key);
    auto j = full;
    j["worker"].erase(key);
    CHECK_THAT(reply_error_of(j.dump(), control::Status{}),
               Catch::Contains("field \"worker\"") && Catch::Contains("\"" + key + "\" missing"));
  }
  // A worker slot absent or null is "none", not an error.
  auto j = full;
  j.erase("worker");
  j["spare_worker"] = nullptr;
  auto r = decode_reply(j.dump(), control::Status{});
  REQUIRE(std::holds_alternative<ControlReply>(r));
  CHECK_FALSE(std::get<control::StatusReply>(std::get<ControlReply>(r)).worker);
}

TEST_CASE("decode_reply refuses every status field of the wrong type, naming it", "[proto][control]") {
  const auto full = status_json();
  for (const auto& [key, value] : full.items()) {
    if (key == "v") continue;
    INFO("field " << key);
    auto j = full;
    // A type each field is not: strings get a number, everything else a string.
    j[key] = value.is_string() ? json(5) : json("wrong");
    const auto e = reply_error_of(j.dump(), control::Status{});
    CHECK_THAT(e, Catch::Contains("\"" + key + "\""));
  }
  for (const auto& [key, value] : full["worker"].items()) {
    INFO("worker field " << key);
    auto j = full;
    j["worker"][key] = value.is_string() ? json(5) : json("wrong");
    CHECK_THAT(reply_error_of(j.dump(), control::Status{}), Catch::Contains("\"" + key + "\""));
  }
  auto j = full;
  j["counters"]["reads"] = -1;
  CHECK_THAT(reply_error_of(j.dump(), control::Status{}), Catch::Contains("counters.reads"));
  j = full;
  j["restarts"] = -3;
  CHECK_THAT(reply_error_of(j.dump(), control::Status{}), Catch::Contains("\"restarts\" negative"));
  j = full;
  j["supervisor_pid"] = 18446744073709551615u;
  CHECK_THAT(reply_error_of(j.dump(), control::Status{}), Catch::Contains("\"supervisor_pid\" out of range"));
  j = full;
  j["generation"] = 1.5;
  CHECK_THAT(reply_error_of(j.dump(), control::Status{}), Catch::Contains("\"generation\""));
}

TEST_CASE("decode_reply checks the other replies' fields and the envelope", "[proto][control]") {
  CHECK_THAT(reply_error_of(R"({"v":1,"ok":true})", control::Upgrade{}), Catch::Contains("\"message\" missing"));
  CHECK_THAT(reply_error_of(R"({"v":1,"ok":true,"message":"upgraded","pid":"1","generation":1,"version":"x"})",
                            control::Upgrade{}),
             Catch::Contains("\"upgrade\" reply: field \"pid\" not an integer"));
  CHECK_THAT(reply_error_of(R"({"v":1,"ok":true,"message":"m","pid":1,"generation":-1,"version":"x"})",
                            control::Upgrade{}),
             Catch::Contains("\"generation\" negative"));
  CHECK_THAT(reply_error_of(R"({"v":1,"ok":true,"message":7})", control::Stop{}),
             Catch::Contains("\"message\" not a string"));
  CHECK_THAT(reply_error_of(R"({"v":1,"ok":false})", control::Stop{}), Catch::Contains("\"error\" missing"));
  CHECK_THAT(reply_error_of(R"({"v":1,"ok":false,"error":[]})", control::Stop{}),
             Catch::Contains("\"error\" not a string"));
  CHECK_THAT(reply_error_of(R"({"v":1,"ok":"yes"})", control::Stop{}), Catch::Contains("\"ok\" not a boolean"));
  CHECK_THAT(reply_error_of(R"({"v":2,"ok":true,"message":"m"})", control::Stop{}), Catch::Contains("version 2"));
  CHECK_THAT(reply_error_of("garbage", control::Status{}), Catch::Contains("not JSON"));
  CHECK_THAT(reply_error_of("7", control::Status{}), Catch::Contains("not a JSON object"));
  CHECK_THAT(reply_error_of(std::string(CONTROL_MAX_BYTES + 1, ' '), control::Status{}),
             Catch::Contains("too large"));
}

TEST_CASE("encode_reply refuses an oversize reply instead of sending it truncated", "[proto][control]") {
  auto big = control::Error{std::string(CONTROL_MAX_BYTES, 'x')};
  CHECK(encode_reply(big).empty());
  CHECK(encode_request(control::Upgrade{"/" + std::string(CONTROL_MAX_BYTES, 'x')}).empty());
  // Invalid UTF-8 in a message (a path from the file system) is replaced, not thrown.
  std::string text;
  REQUIRE_NOTHROW(text = encode_reply(control::Error{"bad \xff byte"}));
  CHECK_FALSE(text.empty());
}

}  // namespace ondemand::proto
