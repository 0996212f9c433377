#include "proto/control.h"

#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "proto/json_fields.h"

namespace ondemand::proto {
namespace {

using nlohmann::json;

// Wire names: the only place they are spelled.
namespace name {
constexpr const char* V = "v";
constexpr const char* CMD = "cmd";
constexpr const char* OK = "ok";
constexpr const char* ERROR = "error";
constexpr const char* MESSAGE = "message";
constexpr const char* BINARY = "binary";
constexpr const char* STATUS = "status";
constexpr const char* RESTART_WORKER = "restart-worker";
constexpr const char* STOP = "stop";
constexpr const char* UPGRADE = "upgrade";
constexpr const char* RELOAD = "reload";
constexpr const char* BIND = "bind";
constexpr const char* UNBIND = "unbind";
constexpr const char* BINDINGS = "bindings";
constexpr const char* ID = "id";
constexpr const char* REGISTRY = "registry";
constexpr const char* REPOSITORY = "repository";
constexpr const char* DIGEST = "digest";
constexpr const char* SIZE = "size";
constexpr const char* ADD_BLOBS = "add-blobs";
constexpr const char* FORCE = "force";
constexpr const char* BLOBS = "blobs";
constexpr const char* PATHS = "paths";
}  // namespace name

// Printable, bounded: a peer's bytes go into our error text and logs.
std::string shown(std::string_view s) {
  std::string out(s.substr(0, 64));
  for (auto& ch : out)
    if (ch < 0x20 || ch > 0x7e) ch = '?';
  return out;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Reads typed fields of one object, remembering the first problem
// (proto/json_fields.h), plus the replies' composite fields. `what` names
// the message in errors ("status" reply, "upgrade" request).
class Fields : public JsonFields {
 public:
  Fields(const json& body, std::string what) : JsonFields(body, std::move(what)) {}

  // Absent or null: nullopt.
  void worker(const char* key, std::optional<control::WorkerInfo>& out) {
    const json* it = find_optional(key);
    if (!it) return;
    if (!it->is_object()) return fail(key, "not an object or null");
    control::WorkerInfo w;
    Fields f(*it, fmt::format("{} field \"{}\"", what(), key));
    f.i64("pid", w.pid);
    f.u64("generation", w.generation);
    f.str("version", w.version);
    f.str("binary", w.binary);
    f.boolean("serving", w.serving);
    f.boolean("adopted", w.adopted);
    f.real("uptime_s", w.uptime_s);
    f.optional_real("killed_s_ago", w.killed_s_ago);
    if (!f.error().empty()) return adopt_error(f);
    out = std::move(w);
  }
  void counters(const char* key, std::map<std::string, std::uint64_t>& out) {
    const json* v = find(key);
    if (!v) return;
    if (!v->is_object()) return fail(key, "not an object");
    for (const auto& [counter, value] : v->items()) {
      if (!value.is_number_unsigned())
        return fail(fmt::format("{}.{}", key, shown(counter)), "not an unsigned integer");
      out[counter] = value.get<std::uint64_t>();
    }
  }

  // A non-empty string of at most 4096 bytes without NUL or newline.
  void name_str(const char* key, std::string& out) {
    str(key, out);
    if (!error().empty()) return;
    if (out.empty()) return fail(key, "is empty");
    if (out.size() > CONTROL_MAX_PATH) return fail(key, "is too long");
    if (out.find_first_of(std::string_view("\0\n", 2)) != std::string::npos) return fail(key, "contains NUL or a newline");
  }
  // A non-empty array of at most `max` strings, each checked by name_str's rules.
  void name_list(const char* key, std::vector<std::string>& out, std::size_t max) {
    const json* v = find(key);
    if (!v) return;
    if (!v->is_array()) return fail(key, "not an array");
    if (v->empty()) return fail(key, "is empty");
    if (v->size() > max) return fail(key, fmt::format("has more than {} entries", max));
    for (std::size_t i = 0; i < v->size(); ++i) {
      const json& e = (*v)[i];
      const auto where = fmt::format("{}[{}]", key, i);
      if (!e.is_string()) return fail(where, "is not a string");
      const auto& text = e.get_ref<const std::string&>();
      if (text.empty()) return fail(where, "is empty");
      if (text.size() > CONTROL_MAX_PATH) return fail(where, "is too long");
      if (text.find_first_of(std::string_view("\0\n", 2)) != std::string::npos)
        return fail(where, "contains NUL or a newline");
      out.push_back(text);
    }
  }
  void binding_list(const char* key, std::vector<control::BindingInfo>& out) {
    const json* v = find(key);
    if (!v) return;
    if (!v->is_array()) return fail(key, "not an array");
    for (const auto& item : *v) {
      if (!item.is_object()) return fail(key, "has an element that is not an object");
      control::BindingInfo b;
      Fields f(item, fmt::format("{} field \"{}\"", what(), key));
      f.str(name::ID, b.id);
      f.str(name::REGISTRY, b.registry);
      f.str(name::REPOSITORY, b.repository);
      f.str(name::DIGEST, b.digest);
      f.optional_u64(name::SIZE, b.size);
      if (!f.error().empty()) return adopt_error(f);
      out.push_back(std::move(b));
    }
  }

};

// The envelope both directions share: a JSON object with our "v".
std::variant<json, std::string> read_envelope(std::string_view bytes, const char* what) {
  if (bytes.size() > CONTROL_MAX_BYTES) return fmt::format("{} too large ({} bytes)", what, bytes.size());
  auto body = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return fmt::format("malformed {}: not JSON", what);
  if (!body.is_object()) return fmt::format("malformed {}: not a JSON object", what);
  auto v = body.find(name::V);
  if (v == body.end() || !v->is_number_integer()) return fmt::format("malformed {}: missing integer \"v\"", what);
  if (v->is_number_unsigned() ? v->get<std::uint64_t>() != std::uint64_t(CONTROL_VERSION)
                              : v->get<std::int64_t>() != CONTROL_VERSION)
    return fmt::format("unsupported control protocol version {} (we speak {})", dump(*v), CONTROL_VERSION);
  return body;
}

std::string finish(json j) {
  j[name::V] = CONTROL_VERSION;
  std::string out = dump(j);
  if (out.size() > CONTROL_MAX_BYTES) return {};
  return out;
}

json worker_json(const std::optional<control::WorkerInfo>& w) {
  if (!w) return nullptr;
  return {{"pid", w->pid},         {"generation", w->generation}, {"version", w->version},
          {"binary", w->binary},   {"serving", w->serving},       {"adopted", w->adopted},
          {"uptime_s", w->uptime_s},
          {"killed_s_ago", w->killed_s_ago ? json(*w->killed_s_ago) : json(nullptr)}};
}

template <class... F>
struct overloaded : F... {
  using F::operator()...;
};
template <class... F>
overloaded(F...) -> overloaded<F...>;

}  // namespace

std::string_view command_of(const ControlRequest& request) {
  return std::visit(overloaded{[](const control::Status&) { return name::STATUS; },
                               [](const control::RestartWorker&) { return name::RESTART_WORKER; },
                               [](const control::Stop&) { return name::STOP; },
                               [](const control::Upgrade&) { return name::UPGRADE; },
                               [](const control::Reload&) { return name::RELOAD; },
                               [](const control::Bind&) { return name::BIND; },
                               [](const control::Unbind&) { return name::UNBIND; },
                               [](const control::ListBindings&) { return name::BINDINGS; },
                               [](const control::AddBlobs&) { return name::ADD_BLOBS; }},
                    request);
}

std::string encode_request(const ControlRequest& request) {
  json j = {{name::CMD, command_of(request)}};
  if (const auto* u = std::get_if<control::Upgrade>(&request); u && u->binary) j[name::BINARY] = *u->binary;
  if (const auto* b = std::get_if<control::Bind>(&request)) {
    j[name::ID] = b->id;
    j[name::REGISTRY] = b->registry;
    j[name::REPOSITORY] = b->repository;
    j[name::DIGEST] = b->digest;
    if (b->size) j[name::SIZE] = *b->size;
  }
  if (const auto* u = std::get_if<control::Unbind>(&request)) j[name::ID] = u->id;
  if (const auto* a = std::get_if<control::AddBlobs>(&request)) j[name::BLOBS] = a->blobs;
  if (const auto* s = std::get_if<control::Stop>(&request); s && s->force) j[name::FORCE] = true;
  return finish(std::move(j));
}

std::variant<ControlRequest, std::string> decode_request(std::string_view bytes) {
  auto envelope = read_envelope(bytes, "request");
  if (auto* error = std::get_if<std::string>(&envelope)) return std::move(*error);
  const json& body = std::get<json>(envelope);
  auto cmd = body.find(name::CMD);
  if (cmd == body.end() || !cmd->is_string()) return std::string("malformed request: missing string \"cmd\"");
  const auto& command = cmd->get_ref<const std::string&>();
  if (command == name::STATUS) return control::Status{};
  if (command == name::RESTART_WORKER) return control::RestartWorker{};
  if (command == name::STOP) {
    // "force" is optional: an older ondemandctl sends none.
    control::Stop stop;
    if (auto force = body.find(name::FORCE); force != body.end()) {
      if (!force->is_boolean()) return std::string("malformed \"stop\" request: \"force\" is not a boolean");
      stop.force = force->get<bool>();
    }
    return stop;
  }
  if (command == name::RELOAD) return control::Reload{};
  if (command == name::BINDINGS) return control::ListBindings{};
  if (command == name::BIND) {
    control::Bind b;
    Fields f(body, "\"bind\" request");
    f.name_str(name::ID, b.id);
    f.name_str(name::REGISTRY, b.registry);
    f.name_str(name::REPOSITORY, b.repository);
    f.name_str(name::DIGEST, b.digest);
    f.optional_u64(name::SIZE, b.size);
    if (!f.error().empty()) return f.error();
    return b;
  }
  if (command == name::UNBIND) {
    control::Unbind u;
    Fields f(body, "\"unbind\" request");
    f.name_str(name::ID, u.id);
    if (!f.error().empty()) return f.error();
    return u;
  }
  if (command == name::ADD_BLOBS) {
    control::AddBlobs a;
    Fields f(body, "\"add-blobs\" request");
    f.name_list(name::BLOBS, a.blobs, control::MAX_BLOBS_PER_MOUNT);
    if (!f.error().empty()) return f.error();
    return a;
  }
  if (command == name::UPGRADE) {
    control::Upgrade u;
    auto b = body.find(name::BINARY);
    if (b == body.end()) return u;
    const auto bad = [](std::string_view why) {
      return fmt::format("\"upgrade\" request: field \"binary\" {}", why);
    };
    if (!b->is_string()) return bad("is not a string");
    const auto& path = b->get_ref<const std::string&>();
    if (path.empty() || path[0] != '/') return bad("must be an absolute path");
    if (path.size() > CONTROL_MAX_PATH) return bad(fmt::format("is longer than {} bytes", CONTROL_MAX_PATH));
    if (path.find('\0') != std::string::npos) return bad("contains a NUL byte");
    u.binary = path;
    return u;
  }
  return fmt::format("unrecognized command \"{}\"", shown(command));
}

std::string encode_reply(const ControlReply& reply) {
  json j = std::visit(
      overloaded{
          [](const control::Error& e) -> json { return {{name::OK, false}, {name::ERROR, e.error}}; },
          [](const control::Done& d) -> json { return {{name::OK, true}, {name::MESSAGE, d.message}}; },
          [](const control::Upgraded& u) -> json {
            return {{name::OK, true},
                    {name::MESSAGE, u.message},
                    {"pid", u.pid},
                    {"generation", u.generation},
                    {"version", u.version}};
          },
          [](const control::StatusReply& s) -> json {
            json counters = json::object();
            for (const auto& [counter, value] : s.counters) counters[counter] = value;
            return {{name::OK, true},
                    {"supervisor_pid", s.supervisor_pid},
                    {"version", s.version},
                    {"uptime_s", s.uptime_s},
                    {"state", s.state},
                    {"worker", worker_json(s.worker)},
                    {"incoming_worker", worker_json(s.incoming_worker)},
                    {"spare_worker", worker_json(s.spare_worker)},
                    {"worker_binary", s.worker_binary},
                    {"generation", s.generation},
                    {"restarts", s.restarts},
                    {"hangs_detected", s.hangs_detected},
                    {"inflight", s.inflight},
                    {"counters", std::move(counters)}};
          },
          [](const control::BindingsReply& r) -> json {
            json list = json::array();
            for (const auto& b : r.bindings)
              list.push_back({{name::ID, b.id},
                              {name::REGISTRY, b.registry},
                              {name::REPOSITORY, b.repository},
                              {name::DIGEST, b.digest},
                              {name::SIZE, b.size ? json(*b.size) : json(nullptr)}});
            return {{name::OK, true}, {name::BINDINGS, std::move(list)}};
          },
          [](const control::CacheFilesReply& r) -> json { return {{name::OK, true}, {name::PATHS, r.paths}}; }},
      reply);
  return finish(std::move(j));
}

std::variant<ControlReply, std::string> decode_reply(std::string_view bytes, const ControlRequest& answered) {
  auto envelope = read_envelope(bytes, "reply");
  if (auto* error = std::get_if<std::string>(&envelope)) return std::move(*error);
  const json& body = std::get<json>(envelope);
  const std::string what = fmt::format("\"{}\" reply", command_of(answered));
  Fields f(body, what);
  bool ok = false;
  f.boolean(name::OK, ok);
  if (!f.error().empty()) return f.error();
  if (!ok) {
    control::Error e;
    f.str(name::ERROR, e.error);
    if (!f.error().empty()) return f.error();
    return e;
  }
  if (std::holds_alternative<control::Status>(answered)) {
    control::StatusReply s;
    f.i64("supervisor_pid", s.supervisor_pid);
    f.str("version", s.version);
    f.real("uptime_s", s.uptime_s);
    f.str("state", s.state);
    f.worker("worker", s.worker);
    f.worker("incoming_worker", s.incoming_worker);
    f.worker("spare_worker", s.spare_worker);
    f.str("worker_binary", s.worker_binary);
    f.u64("generation", s.generation);
    f.u64("restarts", s.restarts);
    f.u64("hangs_detected", s.hangs_detected);
    f.u64("inflight", s.inflight);
    f.counters("counters", s.counters);
    if (!f.error().empty()) return f.error();
    return s;
  }
  if (std::holds_alternative<control::Upgrade>(answered)) {
    control::Upgraded u;
    f.str(name::MESSAGE, u.message);
    f.i64("pid", u.pid);
    f.u64("generation", u.generation);
    f.str("version", u.version);
    if (!f.error().empty()) return f.error();
    return u;
  }
  if (std::holds_alternative<control::ListBindings>(answered)) {
    control::BindingsReply r;
    f.binding_list(name::BINDINGS, r.bindings);
    if (!f.error().empty()) return f.error();
    return r;
  }
  if (std::holds_alternative<control::AddBlobs>(answered)) {
    control::CacheFilesReply r;
    f.name_list(name::PATHS, r.paths, control::MAX_BLOBS_PER_MOUNT);
    if (!f.error().empty()) return f.error();
    return r;
  }
  control::Done d;
  f.str(name::MESSAGE, d.message);
  if (!f.error().empty()) return f.error();
  return d;
}

}  // namespace ondemand::proto
