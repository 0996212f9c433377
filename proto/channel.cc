#include "proto/channel.h"

#include <algorithm>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "proto/json_fields.h"

namespace ondemand::proto {
namespace {

using nlohmann::json;

// Wire names: the only place they are spelled.
namespace name {
constexpr const char* TYPE = "type";
constexpr const char* FDS = "fds";
constexpr const char* HELLO = "hello";
constexpr const char* DEVICE = "device";
constexpr const char* SERVING = "serving";
constexpr const char* STOP = "stop";
constexpr const char* TAKEOVER = "takeover";
constexpr const char* HANDOVER = "handover";
constexpr const char* HANDOVER_PEER = "handover-peer";
constexpr const char* OBJECTS = "objects";
constexpr const char* OBJECTS_DONE = "objects-done";
constexpr const char* HANDED_OVER = "handed-over";
constexpr const char* RESUME = "resume";
constexpr const char* ADOPT = "adopt";
constexpr const char* REFUSED = "refused";
constexpr const char* BUSY = "busy";
constexpr const char* UNRECOGNIZED = "unrecognized";
constexpr const char* FANOTIFY_GROUP = "fanotify-group";
constexpr const char* CACHE_FILES = "cache-files";
constexpr const char* CACHE_FILES_ADDED = "cache-files-added";
constexpr const char* ADOPT_FANOTIFY = "adopt-fanotify";
}  // namespace name

// Reads typed fields of one message body, remembering the first problem
// (proto/json_fields.h), plus the handover's array of objects.
class Fields : public JsonFields {
 public:
  Fields(const json& body, std::string_view type) : JsonFields(body, fmt::format("\"{}\"", type)) {}

  // Absent: nullopt. Unlike the control protocol, null is a wrong type here,
  // as for any other channel field.
  void optional_u64(const char* key, std::optional<std::uint64_t>& out) {
    if (!body().contains(key)) return;
    std::uint64_t v = 0;
    if (unsigned_field(key, v, std::numeric_limits<std::uint64_t>::max())) out = v;
  }
  // The array of objects.
  void objects(const char* key, std::vector<msg::ObjectEntry>& out) {
    const json* v = find(key);
    if (!v) return;
    if (!v->is_array()) return fail(key, "not an array");
    for (std::size_t i = 0; i < v->size(); ++i) {
      const json& e = (*v)[i];
      const std::string where = fmt::format("{}[{}]", key, i);
      if (!e.is_object()) return fail(where, "not an object");
      auto id = e.find("object_id");
      auto blob = e.find("blob_id");
      if (id == e.end() || !id->is_number_unsigned() ||
          id->get<std::uint64_t>() > std::numeric_limits<std::uint32_t>::max())
        return fail(where, "\"object_id\" is not a 32-bit unsigned integer");
      if (blob == e.end() || !blob->is_string()) return fail(where, "\"blob_id\" is not a string");
      auto domain = e.find("domain");
      if (domain != e.end() && !domain->is_string()) return fail(where, "\"domain\" is not a string");
      out.push_back({id->get<std::uint32_t>(), blob->get<std::string>(),
                     domain != e.end() ? domain->get<std::string>() : std::string()});
    }
  }
  // The array of cache files.
  void cache_files(const char* key, std::vector<msg::CacheFileEntry>& out) {
    const json* v = find(key);
    if (!v) return;
    if (!v->is_array()) return fail(key, "not an array");
    for (std::size_t i = 0; i < v->size(); ++i) {
      const json& e = (*v)[i];
      const std::string where = fmt::format("{}[{}]", key, i);
      if (!e.is_object()) return fail(where, "not an object");
      msg::CacheFileEntry entry;
      Fields f(e, where);
      f.str("blob_id", entry.blob_id);
      f.str("domain", entry.domain);
      f.u64("size", entry.size);
      f.boolean("whole", entry.whole);
      if (!f.error().empty()) return adopt_error(f);
      out.push_back(std::move(entry));
    }
  }
};

// Each message's body (without "type" and "fds").
json body_of(const msg::Hello& m) {
  return {{"role", m.role}, {"proto_min", m.proto_min}, {"proto_max", m.proto_max}, {"version", m.version},
          {"pid", m.pid}};
}
json body_of(const msg::Device& m) {
  return {{"generation", m.generation}, {"rdev", m.rdev},       {"shm", m.shm},
          {"restore", m.restore},       {"standby", m.standby}, {"spare", m.spare}};
}
json body_of(const msg::Serving& m) { return {{"generation", m.generation}}; }
json body_of(const msg::Stop&) { return json::object(); }
json body_of(const msg::Takeover& m) {
  json j = json::object();
  if (m.generation) j["generation"] = *m.generation;
  return j;
}
json body_of(const msg::Handover& m) { return {{"drain_ms", m.drain_ms}}; }
json body_of(const msg::HandoverPeer&) { return json::object(); }
// One handover entry; its "domain" only when there is one, so that an entry
// without is what a worker that predates the field sends.
json entry_json(const msg::ObjectEntry& o) {
  json e{{"object_id", o.object_id}, {"blob_id", o.blob_id}};
  if (!o.domain.empty()) e["domain"] = o.domain;
  return e;
}
json body_of(const msg::Objects& m) {
  json list = json::array();
  for (const auto& o : m.objects) list.push_back(entry_json(o));
  return {{"objects", std::move(list)}};
}
json body_of(const msg::ObjectsDone& m) { return {{"count", m.count}}; }
json body_of(const msg::HandedOver& m) { return {{"objects", m.objects}}; }
json body_of(const msg::Resume&) { return json::object(); }
json body_of(const msg::Adopt& m) {
  return {{"pid", m.pid},         {"generation", m.generation}, {"rdev", m.rdev},
          {"version", m.version}, {"serving", m.serving}};
}
json body_of(const msg::Refused& m) { return {{"why", m.why}}; }
json body_of(const msg::Busy& m) { return {{"why", m.why}, {"retry_ms", m.retry_ms}}; }
json body_of(const msg::Unrecognized& m) { return {{"what", m.what}}; }
json body_of(const msg::FanotifyGroup& m) {
  return {{"generation", m.generation}, {"shm", m.shm}, {"standby", m.standby}, {"spare", m.spare}};
}
json body_of(const msg::CacheFiles& m) {
  json list = json::array();
  for (const auto& f : m.files)
    list.push_back({{"blob_id", f.blob_id}, {"domain", f.domain}, {"size", f.size}, {"whole", f.whole}});
  return {{"files", std::move(list)}};
}
json body_of(const msg::CacheFilesAdded& m) { return {{"count", m.count}}; }
json body_of(const msg::AdoptFanotify& m) {
  return {{"pid", m.pid}, {"generation", m.generation}, {"version", m.version}, {"serving", m.serving}};
}

const char* type_name(const msg::Hello&) { return name::HELLO; }
const char* type_name(const msg::Device&) { return name::DEVICE; }
const char* type_name(const msg::Serving&) { return name::SERVING; }
const char* type_name(const msg::Stop&) { return name::STOP; }
const char* type_name(const msg::Takeover&) { return name::TAKEOVER; }
const char* type_name(const msg::Handover&) { return name::HANDOVER; }
const char* type_name(const msg::HandoverPeer&) { return name::HANDOVER_PEER; }
const char* type_name(const msg::Objects&) { return name::OBJECTS; }
const char* type_name(const msg::ObjectsDone&) { return name::OBJECTS_DONE; }
const char* type_name(const msg::HandedOver&) { return name::HANDED_OVER; }
const char* type_name(const msg::Resume&) { return name::RESUME; }
const char* type_name(const msg::Adopt&) { return name::ADOPT; }
const char* type_name(const msg::Refused&) { return name::REFUSED; }
const char* type_name(const msg::Busy&) { return name::BUSY; }
const char* type_name(const msg::Unrecognized&) { return name::UNRECOGNIZED; }
const char* type_name(const msg::FanotifyGroup&) { return name::FANOTIFY_GROUP; }
const char* type_name(const msg::CacheFiles&) { return name::CACHE_FILES; }
const char* type_name(const msg::CacheFilesAdded&) { return name::CACHE_FILES_ADDED; }
const char* type_name(const msg::AdoptFanotify&) { return name::ADOPT_FANOTIFY; }

// Reads the body of a message of type T; fields missing or mistyped fail.
template <class T>
std::variant<Message, std::string> read_body(const json& j, std::string_view type);

template <>
std::variant<Message, std::string> read_body<msg::Hello>(const json& j, std::string_view type) {
  msg::Hello m;
  Fields f(j, type);
  f.str("role", m.role);
  f.u32("proto_min", m.proto_min);
  f.u32("proto_max", m.proto_max);
  f.str("version", m.version);
  f.i64("pid", m.pid);
  if (!f.error().empty()) return f.error();
  return m;
}
template <>
std::variant<Message, std::string> read_body<msg::Device>(const json& j, std::string_view type) {
  msg::Device m;
  Fields f(j, type);
  f.u64("generation", m.generation);
  f.u64("rdev", m.rdev);
  f.str("shm", m.shm);
  f.boolean("restore", m.restore);
  f.boolean("standby", m.standby);
  f.boolean("spare", m.spare);
  if (!f.error().empty()) return f.error();
  return m;
}
template <>
std::variant<Message, std::string> read_body<msg::Serving>(const json& j, std::string_view type) {
  msg::Serving m;
  Fields f(j, type);
  f.u64("generation", m.generation);
  if (!f.error().empty()) return f.error();
  return m;
}
template <>
std::variant<Message, std::string> read_body<msg::Stop>(const json&, std::string_view) {
  return msg::Stop{};
}
template <>
std::variant<Message, std::string> read_body<msg::Takeover>(const json& j, std::string_view type) {
  msg::Takeover m;
  Fields f(j, type);
  f.optional_u64("generation", m.generation);
  if (!f.error().empty()) return f.error();
  return m;
}
template <>
std::variant<Message, std::string> read_body<msg::Handover>(const json& j, std::string_view type) {
  msg::Handover m;
  Fields f(j, type);
  f.u64("drain_ms", m.drain_ms);
  if (!f.error().empty()) return f.error();
  return m;
}
template <>
std::variant<Message, std::string> read_body<msg::HandoverPeer>(const json&, std::string_view) {
  return msg::HandoverPeer{};
}
template <>
std::variant<Message, std::string> read_body<msg::Objects>(const json& j, std::string_view type) {
  msg::Objects m;
  Fields f(j, type);
  f.objects("objects", m.objects);
  if (!f.error().empty()) return f.error();
  return m;
}
template <>
std::variant<Message, std::string> read_body<msg::ObjectsDone>(const json& j, std::string_view type) {
  msg::ObjectsDone m;
  Fields f(j, type);
  f.u64("count", m.count);
  if (!f.error().empty()) return f.error();
  return m;
}
template <>
std::variant<Message, std::string> read_body<msg::HandedOver>(const json& j, std::string_view type) {
  msg::HandedOver m;
  Fields f(j, type);
  f.u64("objects", m.objects);
  if (!f.error().empty()) return f.error();
  return m;
}
template <>
std::variant<Message, std::string> read_body<msg::Resume>(const json&, std::string_view) {
  return msg::Resume{};
}
template <>
std::variant<Message, std::string> read_body<msg::Adopt>(const json& j, std::string_view type) {
  msg::Adopt m;
  Fields f(j, type);
  f.i64("pid", m.pid);
  f.u64("generation", m.generation);
  f.u64("rdev", m.rdev);
  f.str("version", m.version);
  f.boolean("serving", m.serving);
  if (!f.error().empty()) return f.error();
  return m;
}
template <>
std::variant<Message, std::string> read_body<msg::Refused>(const json& j, std::string_view type) {
  msg::Refused m;
  Fields f(j, type);
  f.str("why", m.why);
  if (!f.error().empty()) return f.error();
  return m;
}
template <>
std::variant<Message, std::string> read_body<msg::Busy>(const json& j, std::string_view type) {
  msg::Busy m;
  Fields f(j, type);
  f.str("why", m.why);
  f.u64("retry_ms", m.retry_ms);
  if (!f.error().empty()) return f.error();
  return m;
}
template <>
std::variant<Message, std::string> read_body<msg::Unrecognized>(const json& j, std::string_view type) {
  msg::Unrecognized m;
  Fields f(j, type);
  f.str("what", m.what);
  if (!f.error().empty()) return f.error();
  return m;
}

template <>
std::variant<Message, std::string> read_body<msg::FanotifyGroup>(const json& j, std::string_view type) {
  msg::FanotifyGroup m;
  Fields f(j, type);
  f.u64("generation", m.generation);
  f.str("shm", m.shm);
  f.boolean("standby", m.standby);
  f.boolean("spare", m.spare);
  if (!f.error().empty()) return f.error();
  return m;
}
template <>
std::variant<Message, std::string> read_body<msg::CacheFiles>(const json& j, std::string_view type) {
  msg::CacheFiles m;
  Fields f(j, type);
  f.cache_files("files", m.files);
  if (!f.error().empty()) return f.error();
  return m;
}
template <>
std::variant<Message, std::string> read_body<msg::CacheFilesAdded>(const json& j, std::string_view type) {
  msg::CacheFilesAdded m;
  Fields f(j, type);
  f.u64("count", m.count);
  if (!f.error().empty()) return f.error();
  return m;
}

template <>
std::variant<Message, std::string> read_body<msg::AdoptFanotify>(const json& j, std::string_view type) {
  msg::AdoptFanotify m;
  Fields f(j, type);
  f.i64("pid", m.pid);
  f.u64("generation", m.generation);
  f.str("version", m.version);
  f.boolean("serving", m.serving);
  if (!f.error().empty()) return f.error();
  return m;
}

// type -> reader, and how many fds the type carries (-1: as many as its
// objects).
struct Kind {
  const char* type;
  std::variant<Message, std::string> (*read)(const json&, std::string_view);
  int fds;
};
constexpr int PER_OBJECT = -1;
constexpr Kind KINDS[] = {
    {name::HELLO, read_body<msg::Hello>, 0},
    {name::DEVICE, read_body<msg::Device>, 1},
    {name::SERVING, read_body<msg::Serving>, 0},
    {name::STOP, read_body<msg::Stop>, 0},
    {name::TAKEOVER, read_body<msg::Takeover>, 0},
    {name::HANDOVER, read_body<msg::Handover>, 1},
    {name::HANDOVER_PEER, read_body<msg::HandoverPeer>, 1},
    {name::OBJECTS, read_body<msg::Objects>, PER_OBJECT},
    {name::OBJECTS_DONE, read_body<msg::ObjectsDone>, 0},
    {name::HANDED_OVER, read_body<msg::HandedOver>, 0},
    {name::RESUME, read_body<msg::Resume>, 0},
    {name::ADOPT, read_body<msg::Adopt>, 1},
    {name::REFUSED, read_body<msg::Refused>, 0},
    {name::BUSY, read_body<msg::Busy>, 0},
    {name::UNRECOGNIZED, read_body<msg::Unrecognized>, 0},
    {name::FANOTIFY_GROUP, read_body<msg::FanotifyGroup>, 2},
    {name::CACHE_FILES, read_body<msg::CacheFiles>, PER_OBJECT},
    {name::CACHE_FILES_ADDED, read_body<msg::CacheFilesAdded>, 0},
    {name::ADOPT_FANOTIFY, read_body<msg::AdoptFanotify>, 2},
};
static_assert(std::size(KINDS) == std::variant_size_v<Message>);

}  // namespace

std::variant<Message, DecodeError> decode(std::string_view bytes, std::size_t fds_received) {
  if (bytes.size() > MAX_MESSAGE_BYTES) return DecodeError{"message too large", {}, false};
  const json body = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return DecodeError{"not JSON", {}, false};
  if (!body.is_object()) return DecodeError{"not a JSON object", {}, false};
  auto type_it = body.find(name::TYPE);
  if (type_it == body.end() || !type_it->is_string()) return DecodeError{"missing string \"type\"", {}, false};
  const std::string type = type_it->get<std::string>();

  const Kind* kind = nullptr;
  for (const auto& k : KINDS)
    if (type == k.type) kind = &k;
  if (!kind) return DecodeError{fmt::format("unknown message type \"{}\"", type), type, false};

  std::size_t announced = 0;
  if (auto fds = body.find(name::FDS); fds != body.end()) {
    if (!fds->is_number_unsigned() || fds->get<std::uint64_t>() > MAX_FDS_PER_MESSAGE)
      return DecodeError{fmt::format("\"{}\": field \"fds\" is not a count between 0 and {}", type, MAX_FDS_PER_MESSAGE),
                         type, true};
    announced = fds->get<std::size_t>();
  }
  auto read = kind->read(body, type);
  if (auto* error = std::get_if<std::string>(&read)) return DecodeError{std::move(*error), type, true};
  Message m = std::move(std::get<Message>(read));
  const std::size_t carried = fds_of(m);
  if (announced != carried || fds_received != carried)
    return DecodeError{fmt::format("\"{}\" carries {} fds, announced {}, received {}", type, carried, announced,
                                   fds_received),
                       type, true};
  return m;
}

std::size_t fds_of(const Message& m) {
  if (const auto* objects = std::get_if<msg::Objects>(&m)) return objects->objects.size();
  if (const auto* files = std::get_if<msg::CacheFiles>(&m)) return files->files.size();
  const std::string_view type = type_of(m);
  for (const auto& k : KINDS)
    if (type == k.type) return static_cast<std::size_t>(std::max(k.fds, 0));
  return 0;
}

std::string_view type_of(const Message& m) {
  return std::visit([](const auto& v) -> std::string_view { return type_name(v); }, m);
}

std::string encode(const Message& m) {
  json j = std::visit([](const auto& v) { return body_of(v); }, m);
  j[name::TYPE] = type_of(m);
  if (const std::size_t n = fds_of(m)) j[name::FDS] = n;
  // Replace invalid UTF-8 (a blob id, a log text) instead of throwing.
  std::string out = j.dump(-1, ' ', false, json::error_handler_t::replace);
  if (out.size() > MAX_MESSAGE_BYTES) return {};
  return out;
}

msg::Hello make_hello(std::string_view role, std::int64_t pid) {
  return msg::Hello{std::string(role), HANDOFF_PROTO_MIN, HANDOFF_PROTO_MAX, std::string(VERSION), pid};
}

std::optional<std::uint32_t> negotiate(std::uint32_t our_min, std::uint32_t our_max, std::uint32_t peer_min,
                                       std::uint32_t peer_max) {
  const auto lo = std::max(our_min, peer_min);
  const auto hi = std::min(our_max, peer_max);
  if (lo > hi) return std::nullopt;
  return hi;
}

std::optional<std::vector<std::size_t>> split_objects(const std::vector<msg::ObjectEntry>& objects) {
  // The envelope around the entries, measured with no entries and a
  // three-digit fd count; each entry then costs its own encoding plus a comma.
  const std::size_t envelope = encode(msg::Objects{}).size() + std::string_view(",\"fds\":253").size();
  std::vector<std::size_t> batches;
  std::size_t count = 0, bytes = envelope;
  for (const auto& o : objects) {
    const std::size_t entry =
        entry_json(o).dump(-1, ' ', false, json::error_handler_t::replace)
            .size() +
        1;
    if (envelope + entry > MAX_MESSAGE_BYTES) return std::nullopt;
    if (count == MAX_FDS_PER_MESSAGE || bytes + entry > MAX_MESSAGE_BYTES) {
      batches.push_back(count);
      count = 0;
      bytes = envelope;
    }
    ++count;
    bytes += entry;
  }
  if (count) batches.push_back(count);
  return batches;
}

}  // namespace ondemand::proto
