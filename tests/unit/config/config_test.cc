#include "config/config.h"

#include <optional>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/unit/test_util.h"

namespace ondemand {
namespace {

using nlohmann::json;

json minimal() {
  return {{"cache_dir", "/var/cache/ondemand"},
          {"tag", "ondemand"},
          {"blob_dir", "/var/lib/ondemand/blobs"},
          {"state_dir", "/run/ondemand"}};
}

std::string error_for(const json& doc) {
  try {
    parse_config(doc.dump());
  } catch (const ConfigError& e) {
    return e.what();
  }
  FAIL("config was accepted: " << doc.dump());
  return {};
}

std::string error_for_text(std::string_view text) {
  try {
    parse_config(text);
  } catch (const ConfigError& e) {
    return e.what();
  }
  FAIL("config was accepted: " << text);
  return {};
}

std::string quoted(std::string_view key) { return "\"" + std::string(key) + "\""; }

}  // namespace

TEST_CASE("parse_config accepts the minimal config and fills defaults", "[common][config]") {
  const auto c = parse_config(minimal().dump());
  CHECK(c.cache_dir == "/var/cache/ondemand");
  CHECK(c.tag == "ondemand");
  CHECK(c.blob_dir == "/var/lib/ondemand/blobs");
  CHECK(c.state_dir == "/run/ondemand");
  CHECK(c.worker_binary.empty());
  CHECK(c.max_inflight == 64);
  CHECK(c.io_threads == 4);
  CHECK(c.fill_window == 4u << 20);  // the benchmark sweep's pick
  CHECK(c.fill_ahead_windows == 2);  // the fill-ahead bench's pick
  CHECK_FALSE(c.prefetch);
  CHECK(c.watchdog_timeout_ms == 5000);
  CHECK(c.request_timeout_ms == 60000);
  CHECK(c.serve_timeout_ms == 20000);
  CHECK(c.control_uids.empty());
  CHECK(c.restart_backoff_ms == 100);
  CHECK(c.restart_backoff_max_ms == 5000);
  CHECK(c.crash_loop_limit == 10);
  CHECK(c.crash_loop_window_ms == 30000);
  CHECK(c.park_retry_ms == 30000);
  CHECK(c.spare_worker);
}

TEST_CASE("parse_config refuses a tag that cannot name the shared memory", "[common][config]") {
  auto doc = minimal();
  doc["tag"] = "a/b";
  CHECK_THAT(error_for(doc), Catch::Contains(quoted("tag")) && Catch::Contains("'/'"));
  doc["tag"] = std::string(65, 't');
  CHECK_THAT(error_for(doc), Catch::Contains(quoted("tag")) && Catch::Contains("64"));
}

TEST_CASE("parse_config reads every optional key", "[common][config]") {
  auto doc = minimal();
  doc["worker_binary"] = "/usr/libexec/ondemand-worker";
  doc["max_inflight"] = 7;
  doc["io_threads"] = 3;
  doc["fill_window"] = 8192;
  doc["fill_ahead_windows"] = 2;
  doc["prefetch"] = true;
  doc["max_open_objects"] = 250;
  doc["watchdog_timeout_ms"] = 0;
  doc["request_timeout_ms"] = 1234;
  doc["serve_timeout_ms"] = 0;
  doc["control_uids"] = {1000, 0, 4294967294u};
  doc["restart_backoff_ms"] = 10;
  doc["restart_backoff_max_ms"] = 20;
  doc["crash_loop_limit"] = 3;
  doc["crash_loop_window_ms"] = 40;
  doc["park_retry_ms"] = 500;
  doc["spare_worker"] = false;
  const auto c = parse_config(doc.dump());
  CHECK(c.worker_binary == "/usr/libexec/ondemand-worker");
  CHECK(c.max_inflight == 7);
  CHECK(c.io_threads == 3);
  CHECK(c.fill_window == 8192);
  CHECK(c.fill_ahead_windows == 2);
  CHECK(c.prefetch);
  CHECK(c.max_open_objects == 250);
  CHECK(c.watchdog_timeout_ms == 0);
  CHECK(c.request_timeout_ms == 1234);
  CHECK(c.serve_timeout_ms == 0);
  CHECK(c.control_uids == std::vector<std::uint32_t>{1000, 0, 4294967294u});
  CHECK(c.restart_backoff_ms == 10);
  CHECK(c.restart_backoff_max_ms == 20);
  CHECK(c.crash_loop_limit == 3);
  CHECK(c.crash_loop_window_ms == 40);
  CHECK(c.park_retry_ms == 500);
  CHECK_FALSE(c.spare_worker);
}

TEST_CASE("parse_config names each missing required key", "[common][config]") {
  for (auto key : {"cache_dir", "tag", "blob_dir", "state_dir"}) {
    INFO("missing " << key);
    auto doc = minimal();
    doc.erase(key);
    const auto msg = error_for(doc);
    CHECK_THAT(msg, Catch::Contains(quoted(key)) && Catch::Contains("missing"));
  }
}

TEST_CASE("parse_config names an unknown key instead of ignoring it", "[common][config]") {
  auto doc = minimal();
  doc["max_inflite"] = 5;  // a typo must not fall back to the default
  CHECK_THAT(error_for(doc), Catch::Contains(quoted("max_inflite")) && Catch::Contains("unknown"));
}

TEST_CASE("parse_config names the key whose value has the wrong type or range", "[common][config]") {
  struct Case {
    const char* key;
    json value;
    const char* why;
  };
  const Case cases[] = {
      {"max_inflight", "64", "string for a number"},
      {"max_inflight", -1, "negative count"},
      {"max_inflight", 0, "below the minimum"},
      {"max_inflight", 1.5, "fractional count"},
      {"max_inflight", 100000, "above the maximum"},
      {"io_threads", -3, "negative count"},
      {"io_threads", nullptr, "null"},
      {"watchdog_timeout_ms", "5s", "string for a number"},
      {"request_timeout_ms", -1, "negative timeout"},
      {"fill_window", 5000, "not a multiple of 4096"},
      {"fill_window", 4095, "below one page"},
      {"fill_window", std::uint64_t{1} << 40, "absurdly large"},
      {"fill_window_min", 6000, "not a multiple of 4096"},
      {"fill_window_min", 8u << 20, "above fill_window (4 MiB by default)"},
      {"fill_ahead_windows", -1, "negative count"},
      {"fill_ahead_windows", 17, "above the maximum"},
      {"fill_ahead_windows", "1", "string for a number"},
      {"max_open_objects", -1, "negative count"},
      {"max_open_objects", 2'000'000, "above the maximum"},
      {"max_open_objects", "200", "string for a number"},
      {"prefetch", "yes", "string for a bool"},
      {"prefetch", 1, "number for a bool"},
      {"tag", 5, "number for a string"},
      {"tag", "", "empty string"},
      {"tag", "on demand", "tag with a space"},
      {"tag", "tab\there", "tag with a tab"},
      {"tag", "line\nbreak", "newline would split a device command"},
      {"cache_dir", "var/cache", "relative path"},
      {"cache_dir", "", "empty path"},
      {"cache_dir", json::array({"/a"}), "array for a path"},
      {"blob_dir", "./blobs", "relative path"},
      {"state_dir", 17, "number for a path"},
      {"worker_binary", "ondemand-worker", "relative path"},
      {"control_uids", 1000, "number for an array"},
      {"control_uids", json::array({"1000"}), "string uid"},
      {"control_uids", json::array({-1}), "negative uid"},
      {"control_uids", json::array({4294967295u}), "(uid_t)-1 is not a uid"},
      {"control_uids", json::array({1.5}), "fractional uid"},
      {"restart_backoff_ms", "100", "string for a number"},
      {"restart_backoff_max_ms", -5, "negative"},
      {"crash_loop_limit", 0, "zero would park at the first failure"},
      {"crash_loop_window_ms", 0, "empty window"},
      {"park_retry_ms", 10, "below 100 ms would spin"},
      {"spare_worker", "no", "string for a bool"},
  };
  for (const auto& c : cases) {
    INFO(c.key << ": " << c.why << " (" << c.value.dump() << ")");
    auto doc = minimal();
    doc[c.key] = c.value;
    CHECK_THAT(error_for(doc), Catch::Contains(quoted(c.key)));
  }
}

TEST_CASE("parse_config accepts boundary values", "[common][config]") {
  auto doc = minimal();
  doc["max_inflight"] = 1;
  doc["fill_window"] = 4096;
  doc["io_threads"] = 256;
  const auto c = parse_config(doc.dump());
  CHECK(c.max_inflight == 1);
  CHECK(c.fill_window == 4096);
  CHECK(c.io_threads == 256);
}

TEST_CASE("parse_config: the culler's keys, their defaults and their ranges", "[common][config][cull]") {
  const auto defaults = parse_config(minimal().dump());
  CHECK(defaults.cache_cull);
  CHECK(defaults.cache_max_bytes == 0);  // no limit of ours: the kernel's threshold only
  CHECK(defaults.cache_low_watermark == 80);

  auto doc = minimal();
  doc["cache_cull"] = false;
  doc["cache_max_bytes"] = std::uint64_t{64} << 20;
  doc["cache_low_watermark"] = 50;
  const auto c = parse_config(doc.dump());
  CHECK_FALSE(c.cache_cull);
  CHECK(c.cache_max_bytes == std::uint64_t{64} << 20);
  CHECK(c.cache_low_watermark == 50);

  doc["cache_low_watermark"] = 1;
  CHECK(parse_config(doc.dump()).cache_low_watermark == 1);
  doc["cache_low_watermark"] = 99;
  CHECK(parse_config(doc.dump()).cache_low_watermark == 99);

  struct Case {
    const char* key;
    json value;
    const char* why;
  };
  const Case cases[] = {
      {"cache_cull", "on", "string for a bool"},
      {"cache_max_bytes", -1, "negative size"},
      {"cache_max_bytes", "64M", "size with a unit"},
      {"cache_max_bytes", 1.5, "fractional size"},
      {"cache_low_watermark", 0, "0% would empty the cache at every pass"},
      {"cache_low_watermark", 100, "100% would cull one object per pass, forever"},
      {"cache_low_watermark", "80%", "percent sign in a string"},
  };
  for (const auto& k : cases) {
    INFO(k.key << ": " << k.why << " (" << k.value.dump() << ")");
    auto bad = minimal();
    bad[k.key] = k.value;
    CHECK_THAT(error_for(bad), Catch::Contains(quoted(k.key)));
  }
}

TEST_CASE("parse_config refuses text that is not JSON", "[common][config]") {
  for (auto text : {"", "{", "{\"tag\": }", "cache_dir = /x", "{\"tag\":\"a\"} extra"}) {
    INFO("input: " << text);
    CHECK_THAT(error_for_text(text), Catch::Contains("not valid JSON"));
  }
}

TEST_CASE("parse_config refuses JSON that is not an object", "[common][config]") {
  for (auto text : {"[]", "\"config\"", "42", "null"}) {
    INFO("input: " << text);
    CHECK_THAT(error_for_text(text), Catch::Contains("JSON object"));
  }
}

TEST_CASE("parse_config refuses a key given twice instead of keeping the last", "[common][config]") {
  const auto text = R"({"cache_dir": "/c", "tag": "t", "blob_dir": "/b", "state_dir": "/s",
                        "max_inflight": 8, "max_inflight": 9})";
  CHECK_THAT(error_for_text(text), Catch::Contains(quoted("max_inflight")) && Catch::Contains("more than once"));
  // Keys of nested values are not top-level keys.
  CHECK(parse_config(R"({"cache_dir": "/c", "tag": "t", "blob_dir": "/b", "state_dir": "/s",
                         "control_uids": [1, 1]})").control_uids.size() == 2);
}

TEST_CASE("parse_config reports an out-of-range number as a config error, not a crash", "[common][config]") {
  // nlohmann reports 1e999 as out_of_range, not parse_error: once that
  // escaped as an internal error (exit 70, a crash loop instead of parking).
  for (auto text : {R"({"max_inflight": 1e999})", R"({"tag": "t", "fill_window": -1e400})"}) {
    INFO("input: " << text);
    CHECK_THAT(error_for_text(text), Catch::Contains("not valid JSON"));
  }
}

TEST_CASE("max_open_objects: off by default, cachefiles only, refused rather than ignored with fanotify",
          "[common][config]") {
  auto doc = minimal();
  CHECK(parse_config(doc.dump()).max_open_objects == 0);
  doc["max_open_objects"] = 1;
  CHECK(parse_config(doc.dump()).max_open_objects == 1);
  doc["frontend"] = "fanotify";
  CHECK_THAT(error_for(doc), Catch::Contains(quoted("max_open_objects")) && Catch::Contains("cachefiles front end"));
  doc["max_open_objects"] = 0;
  CHECK(parse_config(doc.dump()).max_open_objects == 0);
}

// No silent fallbacks: the fanotify worker has no READ windows to widen or
// fill ahead, no in-flight limit, no prefetch, no fd budget and no culler.
TEST_CASE("cachefiles-only keys that turn something on are refused with fanotify, naming the key; off is accepted",
          "[common][config]") {
  struct Case {
    const char* key;
    json on;
    std::optional<json> off;  // none: the key has no off value
  };
  const Case cases[] = {
      {"max_inflight", 8, std::nullopt},       {"fill_window_min", 4096, 0}, {"fill_ahead_windows", 2, 0},
      {"prefetch", true, false},               {"max_open_objects", 1, 0},   {"cache_cull", true, false},
      {"cache_max_bytes", 1 << 20, 0},         {"cache_low_watermark", 80, std::nullopt},
  };
  for (const auto& c : cases) {
    INFO("key " << c.key);
    auto doc = minimal();
    doc[c.key] = c.on;
    CHECK_NOTHROW(parse_config(doc.dump()));  // cachefiles (the default) takes it
    doc["frontend"] = "fanotify";
    CHECK_THAT(error_for(doc), Catch::Contains(quoted(c.key)) && Catch::Contains("cachefiles front end only"));
    if (c.off) {
      doc[c.key] = *c.off;
      CHECK_NOTHROW(parse_config(doc.dump()));
    }
    doc.erase(c.key);
    CHECK_NOTHROW(parse_config(doc.dump()));  // absent: fanotify's own behaviour, documented
  }
}

TEST_CASE("parse_config refuses a watchdog that would fire between two heartbeats", "[common][config]") {
  auto doc = minimal();
  doc["watchdog_timeout_ms"] = 100;  // the heartbeat period itself
  CHECK_THAT(error_for(doc), Catch::Contains(quoted("watchdog_timeout_ms")) && Catch::Contains("heartbeat"));
  doc["watchdog_timeout_ms"] = MIN_WATCHDOG_TIMEOUT_MS;
  CHECK(parse_config(doc.dump()).watchdog_timeout_ms == MIN_WATCHDOG_TIMEOUT_MS);
  doc["watchdog_timeout_ms"] = 0;  // off
  CHECK(parse_config(doc.dump()).watchdog_timeout_ms == 0);
}

TEST_CASE("load_config prefixes errors with the file name and reads valid files", "[common][config]") {
  test::TempDir dir;
  const auto good = dir.write("good.json", minimal().dump());
  CHECK(load_config(good).tag == "ondemand");

  auto doc = minimal();
  doc["bogus"] = 1;
  const auto bad = dir.write("bad.json", doc.dump());
  CHECK_THROWS_WITH(load_config(bad), Catch::Contains(bad.string()) && Catch::Contains("\"bogus\""));
  // An unreadable file says why.
  CHECK_THROWS_WITH(load_config(dir.path() / "absent.json"), Catch::Contains("No such file or directory"));
}

}  // namespace ondemand

namespace ondemand {

TEST_CASE("metrics_listen: loopback TCP addresses and Unix socket paths only", "[common][config][metrics]") {
  std::string why;
  auto v4 = parse_listen_address("127.0.0.1:9464", &why);
  REQUIRE(v4);
  CHECK(v4->host == "127.0.0.1");
  CHECK(v4->port == 9464);
  CHECK(!v4->is_unix());
  CHECK(parse_listen_address("127.3.4.5:1", &why)->host == "127.3.4.5");
  CHECK(parse_listen_address("localhost:80", &why)->host == "127.0.0.1");
  auto v6 = parse_listen_address("[::1]:9464", &why);
  REQUIRE(v6);
  CHECK(v6->host == "::1");
  auto path = parse_listen_address("/run/prometheus/ondemand.sock", &why);
  REQUIRE(path);
  CHECK(path->is_unix());
  CHECK(path->unix_path == "/run/prometheus/ondemand.sock");

  struct Case {
    const char* text;
    const char* why;
  };
  const Case refused[] = {
      {"0.0.0.0:9464", "not a loopback"},  {"10.0.0.1:9464", "not a loopback"},
      {"[::]:9464", "not a loopback"},     {"[::ffff:127.0.0.1]:9464", "not a loopback"},
      {"example.com:9464", "not a numeric"}, {"::1:9464", "not a numeric"},
      {"127.0.0.1", "neither"},            {"127.0.0.1:0", "port"},
      {"127.0.0.1:65536", "port"},         {"127.0.0.1:", "port"},
      {"127.0.0.1:94x", "port"},           {"metrics.sock", "neither"},
      {"/", nullptr},
  };
  for (const auto& c : refused) {
    INFO(c.text);
    if (!c.why) continue;  // "/" is a path: bind() refuses it, not the parser
    why.clear();
    CHECK(!parse_listen_address(c.text, &why));
    CHECK_THAT(why, Catch::Contains(c.why));
  }
  CHECK(!parse_listen_address("/" + std::string(200, 'a'), &why));
  CHECK_THAT(why, Catch::Contains("longer than"));
}

TEST_CASE("parse_config: metrics_listen is optional, validated, and names the key", "[common][config][metrics]") {
  auto base = nlohmann::json{{"cache_dir", "/var/cache/ondemand"},
                             {"tag", "ondemand"},
                             {"blob_dir", "/var/lib/ondemand/blobs"},
                             {"state_dir", "/run/ondemand"}};
  CHECK(!parse_config(base.dump()).metrics_listen);
  auto with = base;
  with["metrics_listen"] = "127.0.0.1:9464";
  CHECK(parse_config(with.dump()).metrics_listen->port == 9464);
  for (const auto& bad : {nlohmann::json("192.168.1.1:9464"), nlohmann::json(9464), nlohmann::json(""),
                          nlohmann::json("/run/ondemand/metrics.sock")}) {
    INFO(bad.dump());
    auto doc = base;
    doc["metrics_listen"] = bad;
    try {
      parse_config(doc.dump());
      FAIL("accepted");
    } catch (const ConfigError& e) {
      CHECK_THAT(e.what(), Catch::Contains("\"metrics_listen\""));
    }
  }
}

}  // namespace ondemand

namespace ondemand {
namespace {

json minimal_sandbox() {
  return {{"cache_dir", "/var/cache/ondemand"},
          {"tag", "ondemand"},
          {"blob_dir", "/var/lib/ondemand/blobs"},
          {"state_dir", "/run/ondemand"}};
}

std::string sandbox_error(json extra) {
  json doc = minimal_sandbox();
  for (auto& [k, v] : extra.items()) doc[k] = v;
  try {
    parse_config(doc.dump());
  } catch (const ConfigError& e) {
    return e.what();
  }
  FAIL("config was accepted: " << doc.dump());
  return {};
}

std::string identity_error(json extra) {
  json doc = minimal_sandbox();
  for (auto& [k, v] : extra.items()) doc[k] = v;
  try {
    resolve_worker_identity(parse_config(doc.dump()));
  } catch (const ConfigError& e) {
    return e.what();
  }
  FAIL("identity was resolved: " << doc.dump());
  return {};
}

Config with(json extra) {
  json doc = minimal_sandbox();
  for (auto& [k, v] : extra.items()) doc[k] = v;
  return parse_config(doc.dump());
}

TEST_CASE("sandbox keys: on by default, each a switch", "[config][sandbox]") {
  const auto c = with(json::object());
  CHECK(c.sandbox_drop_privileges);
  CHECK(c.sandbox_seccomp);
  CHECK(c.sandbox_landlock);
  CHECK(c.worker_user.empty());
  const auto off = with({{"sandbox_drop_privileges", false}, {"sandbox_seccomp", false}, {"sandbox_landlock", false}});
  CHECK_FALSE(off.sandbox_drop_privileges);
  CHECK_FALSE(off.sandbox_seccomp);
  CHECK_FALSE(off.sandbox_landlock);
  CHECK_THAT(sandbox_error({{"sandbox_seccomp", "yes"}}), Catch::Contains("\"sandbox_seccomp\""));
  CHECK_THAT(sandbox_error({{"worker_user", ""}}), Catch::Contains("\"worker_user\""));
  CHECK_THAT(sandbox_error({{"worker_group", "a:b"}}), Catch::Contains("\"worker_group\""));
  CHECK_THAT(sandbox_error({{"worker_user", -1}}), Catch::Contains("\"worker_user\""));
}

TEST_CASE("registry_connect_ports: TCP ports 1..65535, only with registries", "[config][sandbox]") {
  const json registries = {{"data_dir", "/var/lib/ondemand"},
                           {"registries", {{"registry.example:5000", json::object()}}}};
  auto doc = registries;
  CHECK(with(doc).registry_connect_ports.empty());
  doc["registry_connect_ports"] = {443, 8443};
  CHECK(with(doc).registry_connect_ports == std::vector<std::uint16_t>{443, 8443});
  for (const json& bad : {json(443), json({0}), json({65536}), json({"443"})}) {
    doc["registry_connect_ports"] = bad;
    CHECK_THAT(sandbox_error(doc), Catch::Contains("\"registry_connect_ports\""));
  }
  CHECK_THAT(sandbox_error({{"registry_connect_ports", {443}}}),
             Catch::Contains("\"registry_connect_ports\"") && Catch::Contains("registries"));
}

TEST_CASE("worker_user: a name, a number, the defaults, errors naming the key", "[config][sandbox]") {
  // nobody (65534) is in every Debian passwd; root is uid 0.
  auto id = resolve_worker_identity(with({{"worker_user", "nobody"}}));
  CHECK(id.uid == 65534);
  CHECK(id.gid == 65534);
  id = resolve_worker_identity(with({{"worker_user", 65534}, {"worker_group", "nogroup"}}));
  CHECK(id.uid == 65534);
  CHECK(id.gid == 65534);
  // A bare uid without a passwd entry needs its group spelled out.
  id = resolve_worker_identity(with({{"worker_user", "4000123"}, {"worker_group", "4000124"}}));
  CHECK(id.uid == 4000123);
  CHECK(id.gid == 4000124);
  CHECK_THAT(identity_error({{"worker_user", "4000123"}}), Catch::Contains("\"worker_group\""));
  // Unset: "ondemand" when it exists, else nobody.
  id = resolve_worker_identity(with(json::object()));
  CHECK((id.user == "ondemand" || (id.user == "nobody" && id.uid == 65534)));
  CHECK_THAT(identity_error({{"worker_user", "no-such-user-here"}}),
             Catch::Contains("\"worker_user\"") && Catch::Contains("no-such-user-here"));
  CHECK_THAT(identity_error({{"worker_user", "nobody"}, {"worker_group", "no-such-group-here"}}),
             Catch::Contains("\"worker_group\"") && Catch::Contains("no-such-group-here"));
  CHECK_THAT(identity_error({{"worker_user", "root"}}), Catch::Contains("\"worker_user\"") && Catch::Contains("root"));
  CHECK_THAT(identity_error({{"worker_user", 0}}), Catch::Contains("\"worker_user\""));
  CHECK_THAT(identity_error({{"worker_user", "nobody"}, {"worker_group", "root"}}), Catch::Contains("\"worker_group\""));
}

}  // namespace
}  // namespace ondemand
