#include "config/config.h"

#include <arpa/inet.h>
#include <grp.h>
#include <pwd.h>
#include <sys/un.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace ondemand {
namespace {

using nlohmann::json;

std::string type_name(const json& v) { return v.type_name(); }

void require_type(std::string_view key, const json& v, json::value_t want, std::string_view what) {
  bool ok = v.type() == want ||
            (want == json::value_t::number_unsigned && v.type() == json::value_t::number_integer &&
             v.get<std::int64_t>() >= 0);
  if (!ok)
    throw ConfigError(fmt::format("config key \"{}\": expected {}, got {}", key, what, type_name(v)));
}

std::string as_string(std::string_view key, const json& v) {
  require_type(key, v, json::value_t::string, "a string");
  auto s = v.get<std::string>();
  if (s.empty()) throw ConfigError(fmt::format("config key \"{}\": must not be empty", key));
  // Values end up in newline-terminated device commands ("dir <path>").
  if (s.find_first_of(std::string_view("\n\0", 2)) != std::string::npos)
    throw ConfigError(fmt::format("config key \"{}\": contains a newline or NUL", key));
  return s;
}

std::filesystem::path as_abs_path(std::string_view key, const json& v) {
  std::filesystem::path p = as_string(key, v);
  if (!p.is_absolute())
    throw ConfigError(fmt::format("config key \"{}\": \"{}\" is not an absolute path", key, p.string()));
  return p;
}

std::uint64_t as_count(std::string_view key, const json& v, std::uint64_t lo, std::uint64_t hi) {
  require_type(key, v, json::value_t::number_unsigned, "a non-negative integer");
  auto n = v.get<std::uint64_t>();
  if (n < lo || n > hi)
    throw ConfigError(fmt::format("config key \"{}\": {} is outside [{}, {}]", key, n, lo, hi));
  return n;
}

bool as_bool(std::string_view key, const json& v) {
  require_type(key, v, json::value_t::boolean, "true or false");
  return v.get<bool>();
}

// A user or group: a name, or a numeric id (a string of digits or a JSON
// integer). Stored as text; resolve_worker_identity looks it up.
std::string as_id_name(std::string_view key, const json& v) {
  if (v.is_number_integer() || v.is_number_unsigned())
    return std::to_string(as_count(key, v, 0, 0xfffffffe));
  auto s = as_string(key, v);
  if (s.size() > 255 || s.find_first_of(" \t:/") != std::string::npos)
    throw ConfigError(fmt::format("config key \"{}\": \"{}\" is not a user/group name or a number", key, s));
  return s;
}

// Digits only, within uid_t/gid_t range except the (uid_t)-1 "no change".
std::optional<std::uint32_t> numeric_id(const std::string& s) {
  std::uint64_t n = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc() || end != s.data() + s.size() || n > 0xfffffffe) return std::nullopt;
  return static_cast<std::uint32_t>(n);
}

// getpwnam_r/getgrnam_r with a buffer that grows on ERANGE.
template <typename Entry, typename Lookup>
std::optional<Entry> lookup_entry(Lookup lookup) {
  std::vector<char> buf(4096);
  for (;;) {
    Entry entry{};
    Entry* found = nullptr;
    const int rc = lookup(&entry, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < (1u << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (rc != 0 || found == nullptr) return std::nullopt;
    return entry;  // only the ids are used after buf goes
  }
}

std::optional<passwd> find_user(const std::string& name) {
  return lookup_entry<passwd>([&](passwd* e, char* b, std::size_t n, passwd** r) {
    return ::getpwnam_r(name.c_str(), e, b, n, r);
  });
}
std::optional<passwd> find_uid(uid_t uid) {
  return lookup_entry<passwd>([&](passwd* e, char* b, std::size_t n, passwd** r) {
    return ::getpwuid_r(uid, e, b, n, r);
  });
}
std::optional<group> find_group(const std::string& name) {
  return lookup_entry<group>([&](group* e, char* b, std::size_t n, group** r) {
    return ::getgrnam_r(name.c_str(), e, b, n, r);
  });
}

struct KeySpec {
  bool required;
  std::function<void(Config&, std::string_view, const json&)> apply;
};

const std::map<std::string, KeySpec, std::less<>>& key_table() {
  static const std::map<std::string, KeySpec, std::less<>> table = {
      {"cache_dir", {true, [](Config& c, auto k, auto& v) { c.cache_dir = as_abs_path(k, v); }}},
      {"tag", {true, [](Config& c, auto k, auto& v) {
         c.tag = as_string(k, v);
         // The tag also names the shared memory ("ondemand-<tag>" in /dev/shm).
         if (c.tag.find_first_of(" \t/") != std::string::npos)
           throw ConfigError(fmt::format("config key \"{}\": must not contain whitespace or '/'", k));
         if (c.tag.size() > 64)
           throw ConfigError(fmt::format("config key \"{}\": longer than 64 bytes", k));
       }}},
      {"frontend", {false, [](Config& c, auto k, auto& v) {
         const auto name = as_string(k, v);
         if (name == "cachefiles") c.frontend = Frontend::CACHEFILES;
         else if (name == "fanotify") c.frontend = Frontend::FANOTIFY;
         else throw ConfigError(fmt::format("config key \"{}\": \"{}\" is neither \"cachefiles\" nor \"fanotify\"", k, name));
       }}},
      {"blob_dir", {true, [](Config& c, auto k, auto& v) { c.blob_dir = as_abs_path(k, v); }}},
      {"state_dir", {true, [](Config& c, auto k, auto& v) { c.state_dir = as_abs_path(k, v); }}},
      {"worker_binary", {false, [](Config& c, auto k, auto& v) { c.worker_binary = as_abs_path(k, v); }}},
      {"max_inflight", {false, [](Config& c, auto k, auto& v) {
         c.max_inflight = static_cast<std::uint32_t>(as_count(k, v, 1, 4096)); }}},
      {"io_threads", {false, [](Config& c, auto k, auto& v) {
         c.io_threads = static_cast<std::uint32_t>(as_count(k, v, 1, 256)); }}},
      {"fill_window", {false, [](Config& c, auto k, auto& v) {
         c.fill_window = as_count(k, v, 4096, std::uint64_t{64} << 20);
         if (c.fill_window % 4096 != 0)
           throw ConfigError(fmt::format("config key \"{}\": must be a multiple of 4096", k));
       }}},
      {"fill_window_min", {false, [](Config& c, auto k, auto& v) {
         c.fill_window_min = as_count(k, v, 0, std::uint64_t{64} << 20);
         if (c.fill_window_min % 4096 != 0)
           throw ConfigError(fmt::format("config key \"{}\": must be a multiple of 4096", k));
       }}},
      {"fill_ahead_windows", {false, [](Config& c, auto k, auto& v) {
         c.fill_ahead_windows = static_cast<std::uint32_t>(as_count(k, v, 0, 16)); }}},
      {"prefetch", {false, [](Config& c, auto k, auto& v) { c.prefetch = as_bool(k, v); }}},
      {"max_open_objects", {false, [](Config& c, auto k, auto& v) {
         c.max_open_objects = static_cast<std::uint32_t>(as_count(k, v, 0, 1'000'000)); }}},
      {"spare_worker", {false, [](Config& c, auto k, auto& v) { c.spare_worker = as_bool(k, v); }}},
      {"watchdog_timeout_ms", {false, [](Config& c, auto k, auto& v) {
         c.watchdog_timeout_ms = static_cast<std::uint32_t>(as_count(k, v, 0, 3'600'000)); }}},
      {"control_uids", {false, [](Config& c, auto k, auto& v) {
         require_type(k, v, json::value_t::array, "an array of uids");
         for (const auto& uid : v)
           c.control_uids.push_back(static_cast<std::uint32_t>(as_count(k, uid, 0, 0xfffffffe)));
       }}},
      {"restart_backoff_ms", {false, [](Config& c, auto k, auto& v) {
         c.restart_backoff_ms = static_cast<std::uint32_t>(as_count(k, v, 0, 3'600'000)); }}},
      {"restart_backoff_max_ms", {false, [](Config& c, auto k, auto& v) {
         c.restart_backoff_max_ms = static_cast<std::uint32_t>(as_count(k, v, 0, 3'600'000)); }}},
      {"crash_loop_limit", {false, [](Config& c, auto k, auto& v) {
         c.crash_loop_limit = static_cast<std::uint32_t>(as_count(k, v, 1, 1'000'000)); }}},
      {"crash_loop_window_ms", {false, [](Config& c, auto k, auto& v) {
         c.crash_loop_window_ms = static_cast<std::uint32_t>(as_count(k, v, 1, 86'400'000)); }}},
      {"park_retry_ms", {false, [](Config& c, auto k, auto& v) {
         c.park_retry_ms = static_cast<std::uint32_t>(as_count(k, v, 100, 86'400'000)); }}},
      {"cache_cull", {false, [](Config& c, auto k, auto& v) { c.cache_cull = as_bool(k, v); }}},
      {"cache_max_bytes", {false, [](Config& c, auto k, auto& v) {
         c.cache_max_bytes = as_count(k, v, 0, std::uint64_t{1} << 62); }}},
      {"cache_low_watermark", {false, [](Config& c, auto k, auto& v) {
         c.cache_low_watermark = static_cast<std::uint32_t>(as_count(k, v, 1, 99)); }}},
      {"request_timeout_ms", {false, [](Config& c, auto k, auto& v) {
         c.request_timeout_ms = static_cast<std::uint32_t>(as_count(k, v, 0, 3'600'000)); }}},
      {"serve_timeout_ms", {false, [](Config& c, auto k, auto& v) {
         c.serve_timeout_ms = static_cast<std::uint32_t>(as_count(k, v, 0, 3'600'000)); }}},
      {"worker_user", {false, [](Config& c, auto k, auto& v) { c.worker_user = as_id_name(k, v); }}},
      {"worker_group", {false, [](Config& c, auto k, auto& v) { c.worker_group = as_id_name(k, v); }}},
      {"sandbox_drop_privileges", {false, [](Config& c, auto k, auto& v) { c.sandbox_drop_privileges = as_bool(k, v); }}},
      {"sandbox_seccomp", {false, [](Config& c, auto k, auto& v) { c.sandbox_seccomp = as_bool(k, v); }}},
      {"sandbox_landlock", {false, [](Config& c, auto k, auto& v) { c.sandbox_landlock = as_bool(k, v); }}},
      {"data_dir", {false, [](Config& c, auto k, auto& v) { c.data_dir = as_abs_path(k, v); }}},
      {"registry_request_timeout_ms", {false, [](Config& c, auto k, auto& v) {
         c.registry_request_timeout_ms = static_cast<std::uint32_t>(as_count(k, v, 100, 3'600'000)); }}},
      {"registry_connect_ports", {false, [](Config& c, auto k, auto& v) {
         require_type(k, v, json::value_t::array, "an array of TCP ports");
         for (const auto& port : v)
           c.registry_connect_ports.push_back(static_cast<std::uint16_t>(as_count(k, port, 1, 65535)));
       }}},
      {"registries", {false, [](Config& c, auto k, auto& v) {
         require_type(k, v, json::value_t::object, "an object of host[:port] -> options");
         for (const auto& [host, entry] : v.items()) {
           const auto key = fmt::format("{}.{}", k, host);
           if (host.empty() || host.size() > 255 ||
               host.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") !=
                   std::string::npos)
             throw ConfigError(fmt::format("config key \"{}\": \"{}\" is not host[:port]", k, host));
           require_type(key, entry, json::value_t::object, "an object");
           RegistryConfig r;
           for (const auto& [option, value] : entry.items()) {
             const auto okey = fmt::format("{}.{}", key, option);
             if (option == "insecure_http") r.insecure_http = as_bool(okey, value);
             else if (option == "ca_file") r.ca_file = as_abs_path(okey, value).string();
             else if (option == "credentials_file") r.credentials_file = as_abs_path(okey, value);
             else throw ConfigError(fmt::format("unknown config key \"{}\"", okey));
           }
           c.registries.emplace(host, std::move(r));
         }
       }}},
      {"metrics_listen", {false, [](Config& c, auto k, auto& v) {
         std::string why;
         c.metrics_listen = parse_listen_address(as_string(k, v), &why);
         if (!c.metrics_listen) throw ConfigError(fmt::format("config key \"{}\": {}", k, why));
       }}},
  };
  return table;
}

}  // namespace

std::optional<ListenAddress> parse_listen_address(std::string_view text, std::string* why) {
  ListenAddress out;
  if (text.starts_with('/')) {
    if (text.size() >= sizeof(sockaddr_un::sun_path)) {
      *why = fmt::format("Unix socket path \"{}\" is longer than {} bytes", text, sizeof(sockaddr_un::sun_path) - 1);
      return std::nullopt;
    }
    out.unix_path = std::string(text);
    return out;
  }
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    *why = fmt::format("\"{}\" is neither HOST:PORT nor an absolute Unix socket path", text);
    return std::nullopt;
  }
  auto host = text.substr(0, colon);
  const auto port_text = text.substr(colon + 1);
  unsigned port = 0;
  const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 ||
      port > 65535) {
    *why = fmt::format("port \"{}\" in \"{}\" is not a number in [1, 65535]", port_text, text);
    return std::nullopt;
  }
  out.port = static_cast<std::uint16_t>(port);
  if (host == "localhost") host = "127.0.0.1";
  const bool bracketed = host.size() >= 2 && host.front() == '[' && host.back() == ']';
  if (bracketed) host = host.substr(1, host.size() - 2);
  const std::string h(host);
  in_addr v4{};
  in6_addr v6{};
  if (!bracketed && ::inet_pton(AF_INET, h.c_str(), &v4) == 1) {
    if ((ntohl(v4.s_addr) >> 24) != 127) {
      *why = fmt::format("{} is not a loopback address (127.0.0.0/8, [::1] or a Unix socket path only)", h);
      return std::nullopt;
    }
  } else if (bracketed && ::inet_pton(AF_INET6, h.c_str(), &v6) == 1) {
    if (!IN6_IS_ADDR_LOOPBACK(&v6)) {
      *why = fmt::format("[{}] is not a loopback address (127.0.0.0/8, [::1] or a Unix socket path only)", h);
      return std::nullopt;
    }
  } else {
    *why = fmt::format("\"{}\" is not a numeric IPv4 address, [IPv6] address or localhost", std::string(host));
    return std::nullopt;
  }
  out.host = h;
  return out;
}

Config parse_config(std::string_view json_text) {
  // nlohmann keeps the last of two equal keys without a word; a config with
  // a key twice is a mistake whose half would be silently ignored. The
  // parser callback sees every key of the top-level object (depth 1).
  std::set<std::string, std::less<>> seen;
  std::string duplicate;
  const json::parser_callback_t note_keys = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string() &&
        !seen.insert(parsed.get<std::string>()).second && duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  json doc = json::parse(json_text, note_keys, /*allow_exceptions=*/false, /*ignore_comments=*/false);
  if (doc.is_discarded()) {
    // Re-parse with exceptions only to get the position for the message.
    // Any json::exception: a number like 1e999 is out_of_range, not a
    // parse_error, and must still be a configuration error (exit 78, park)
    // rather than an internal one (exit 70, crash loop).
    try {
      const json again = json::parse(json_text);
      (void)again;
    } catch (const json::exception& e) {
      throw ConfigError(fmt::format("config is not valid JSON: {}", e.what()));
    }
    throw ConfigError("config is not valid JSON");
  }
  if (!doc.is_object()) throw ConfigError("config must be a JSON object");
  if (!duplicate.empty()) throw ConfigError(fmt::format("config key \"{}\" appears more than once", duplicate));
  Config config;
  const auto& table = key_table();
  for (const auto& [key, value] : doc.items()) {
    auto spec = table.find(key);
    if (spec == table.end()) throw ConfigError(fmt::format("unknown config key \"{}\"", key));
    spec->second.apply(config, key, value);
  }
  for (const auto& [key, spec] : table)
    if (spec.required && !doc.contains(key))
      throw ConfigError(fmt::format("missing required config key \"{}\"", key));
  // Mechanisms only the cachefiles front end has: given with fanotify, a
  // key that would turn one on is refused, not ignored. (The fanotify
  // front end answers each event from one fill and bounds nothing in
  // flight; its supervisor holds one writer fd per cache file, which no
  // budget covers; it neither prefetches nor culls.) Off is accepted, so
  // one config can say so for both.
  if (config.frontend == Frontend::FANOTIFY) {
    const std::pair<std::string_view, bool> turns_on[] = {
        {"max_inflight", true},
        {"fill_window_min", config.fill_window_min != 0},
        {"fill_ahead_windows", config.fill_ahead_windows != 0},
        {"prefetch", config.prefetch},
        {"max_open_objects", config.max_open_objects != 0},
        {"cache_cull", config.cache_cull},
        {"cache_max_bytes", config.cache_max_bytes != 0},
        {"cache_low_watermark", true},
    };
    for (const auto& [key, on] : turns_on)
      if (on && doc.contains(key))
        throw ConfigError(fmt::format(
            "config key \"{}\": applies to the cachefiles front end only (frontend is \"fanotify\")", key));
  }
  if (config.fill_window_min > config.fill_window)
    throw ConfigError(fmt::format("config key \"fill_window_min\": {} is above fill_window ({})",
                                  config.fill_window_min, config.fill_window));
  // The worker beats every HEARTBEAT_PERIOD_MS from its event loop; a
  // watchdog that does not allow a few missed beats kills healthy workers.
  if (config.watchdog_timeout_ms != 0 && config.watchdog_timeout_ms < MIN_WATCHDOG_TIMEOUT_MS)
    throw ConfigError(fmt::format(
        "config key \"watchdog_timeout_ms\": {} ms is below {} ms (the worker's heartbeat comes every {} ms); "
        "use 0 to turn the watchdog off",
        config.watchdog_timeout_ms, MIN_WATCHDOG_TIMEOUT_MS, HEARTBEAT_PERIOD_MS));
  if (!config.registries.empty() && config.request_timeout_ms != 0 &&
      config.registry_request_timeout_ms >= config.request_timeout_ms)
    throw ConfigError(fmt::format(
        "config key \"registry_request_timeout_ms\": {} ms is not below request_timeout_ms ({} ms): a slow "
        "registry would be taken for a hung worker",
        config.registry_request_timeout_ms, config.request_timeout_ms));
  if (config.registries.empty() && !config.registry_connect_ports.empty())
    throw ConfigError("config key \"registry_connect_ports\": set registries too (the ports are for reaching them)");
  if (!config.registries.empty() && config.data_dir.empty())
    throw ConfigError("config key \"registries\": set data_dir too (bindings, which name registries, live there)");
  // Binding it would replace the socket the supervisor always serves there.
  if (config.metrics_listen && config.metrics_listen->unix_path == config.state_dir / METRICS_SOCKET_NAME)
    throw ConfigError(fmt::format("config key \"metrics_listen\": {} is already the metrics socket in state_dir",
                                  config.metrics_listen->unix_path.string()));
  return config;
}

WorkerIdentity resolve_worker_identity(const Config& config) {
  WorkerIdentity id;
  std::optional<std::uint32_t> primary_gid;
  if (config.worker_user.empty()) {
    for (auto name : DEFAULT_WORKER_USERS)
      if (auto pw = find_user(std::string(name))) {
        id = {pw->pw_uid, pw->pw_gid, std::string(name)};
        primary_gid = pw->pw_gid;
        break;
      }
    if (!primary_gid)
      throw ConfigError(fmt::format(
          "config key \"worker_user\": not set and neither default user ({}) exists; create one "
          "(e.g. useradd --system ondemand), name another, or set sandbox_drop_privileges to false",
          fmt::join(DEFAULT_WORKER_USERS, ", ")));
  } else if (auto pw = find_user(config.worker_user)) {
    id = {pw->pw_uid, pw->pw_gid, config.worker_user};
    primary_gid = pw->pw_gid;
  } else if (auto uid = numeric_id(config.worker_user)) {
    // A bare uid need not have a passwd entry (containers, static ids).
    id = {*uid, 0, config.worker_user};
    if (auto by_uid = find_uid(*uid)) primary_gid = by_uid->pw_gid;
  } else {
    throw ConfigError(fmt::format("config key \"worker_user\": no user \"{}\"", config.worker_user));
  }
  if (id.uid == 0)
    throw ConfigError(fmt::format("config key \"worker_user\": \"{}\" is root (uid 0); name an unprivileged "
                                  "user or set sandbox_drop_privileges to false", id.user));
  if (!config.worker_group.empty()) {
    if (auto gr = find_group(config.worker_group)) id.gid = gr->gr_gid;
    else if (auto gid = numeric_id(config.worker_group)) id.gid = *gid;
    else throw ConfigError(fmt::format("config key \"worker_group\": no group \"{}\"", config.worker_group));
  } else if (primary_gid) {
    id.gid = *primary_gid;
  } else {
    throw ConfigError(fmt::format("config key \"worker_group\": uid {} has no passwd entry, so no primary "
                                  "group; set worker_group", id.uid));
  }
  if (id.gid == 0)
    throw ConfigError(fmt::format("config key \"worker_group\": the worker's group is root (gid 0); name an "
                                  "unprivileged group"));
  return id;
}

Config load_config(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw ConfigError(fmt::format("cannot read config file {}: {}", file.string(), std::strerror(errno)));
  std::stringstream text;
  text << in.rdbuf();
  try {
    return parse_config(text.str());
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("{}: {}", file.string(), e.what()));
  }
}

}  // namespace ondemand
