#include "backends/bindings/bindings.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backends/registry/client.h"
#include "common/unique_fd.h"
#include "proto/blob_id.h"

namespace ondemand::bindings {
namespace {

using nlohmann::json;

namespace name {
constexpr const char* VERSION = "version";
constexpr const char* BINDINGS = "bindings";
constexpr const char* BACKEND = "backend";
constexpr const char* REGISTRY = "registry";
constexpr const char* REPOSITORY = "repository";
constexpr const char* DIGEST = "digest";
constexpr const char* SIZE = "size";
}  // namespace name

std::string shown(std::string_view id) { return worker::escape_id(id.substr(0, 255)); }

// host[:port]: letters, digits, '.', '-', one optional :port.
std::string validate_registry_name(std::string_view r) {
  if (r.empty() || r.size() > 255) return "must be host[:port] of 1 to 255 bytes";
  for (char c : r)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']'))
      return "must be host[:port] (letters, digits, '.', '-', ':')";
  return {};
}

std::string sys_error(std::string_view what, const std::filesystem::path& p) {
  return fmt::format("cannot {} {}: {}", what, p.string(), std::strerror(errno));
}

}  // namespace

std::string validate_binding(std::string_view id, const Binding& b) {
  const auto bad = [&](const char* field, std::string_view why) {
    return fmt::format("binding \"{}\": {} {}", shown(id), field, why);
  };
  // These three name their subject themselves ("digest must be ...").
  const auto said = [&](std::string_view why) { return fmt::format("binding \"{}\": {}", shown(id), why); };
  if (auto why = worker::validate_blob_id(id)) return said(*why);
  if (auto why = validate_registry_name(b.registry); !why.empty()) return bad(name::REGISTRY, why);
  if (auto why = registry::validate_repository(b.repository); !why.empty()) return said(why);
  if (auto why = registry::validate_digest(b.digest); !why.empty()) return said(why);
  if (b.size && *b.size == 0) return bad(name::SIZE, "must be positive when given");
  return {};
}

std::variant<Bindings, std::string> parse_bindings(std::string_view text) {
  if (text.size() > MAX_BINDINGS_BYTES) return fmt::format("larger than {} bytes", MAX_BINDINGS_BYTES);
  const json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return std::string("not valid JSON (torn or corrupt)");
  if (!doc.is_object()) return std::string("not a JSON object");
  auto v = doc.find(name::VERSION);
  if (v == doc.end() || !v->is_number_unsigned() || v->get<std::uint64_t>() != BINDINGS_VERSION)
    return fmt::format("field \"{}\" must be {}", name::VERSION, BINDINGS_VERSION);
  auto all = doc.find(name::BINDINGS);
  if (all == doc.end() || !all->is_object()) return fmt::format("field \"{}\" must be an object", name::BINDINGS);
  Bindings out;
  for (const auto& item : all->items()) {
    // Named references, not a structured binding: clang before 16 cannot
    // capture those in the lambdas below (the fuzz build uses clang).
    const std::string& id = item.key();
    const json& entry = item.value();
    const auto bad = [&](const char* field, std::string_view why) {
      return fmt::format("binding \"{}\": field \"{}\" {}", shown(id), field, why);
    };
    if (!entry.is_object()) return fmt::format("binding \"{}\": not an object", shown(id));
    const auto string_field = [&](const char* field, std::string& to) -> std::string {
      auto it = entry.find(field);
      if (it == entry.end()) return bad(field, "missing");
      if (!it->is_string()) return bad(field, "not a string");
      to = it->get<std::string>();
      return {};
    };
    std::string backend;
    Binding b;
    for (auto [field, to] : {std::pair{name::BACKEND, &backend}, std::pair{name::REGISTRY, &b.registry},
                             std::pair{name::REPOSITORY, &b.repository}, std::pair{name::DIGEST, &b.digest}})
      if (auto e = string_field(field, *to); !e.empty()) return e;
    if (backend != REGISTRY_BACKEND)
      return bad(name::BACKEND, fmt::format("must be \"{}\"", REGISTRY_BACKEND));
    if (auto it = entry.find(name::SIZE); it != entry.end() && !it->is_null()) {
      if (!it->is_number_unsigned()) return bad(name::SIZE, "not an unsigned integer");
      b.size = it->get<std::uint64_t>();
    }
    if (auto e = validate_binding(id, b); !e.empty()) return e;
    out.emplace(id, std::move(b));
  }
  return out;
}

std::string serialize_bindings(const Bindings& bindings) {
  json all = json::object();
  for (const auto& [id, b] : bindings) {
    json e = {{name::BACKEND, REGISTRY_BACKEND},
              {name::REGISTRY, b.registry},
              {name::REPOSITORY, b.repository},
              {name::DIGEST, b.digest}};
    if (b.size) e[name::SIZE] = *b.size;
    all[id] = std::move(e);
  }
  json doc = {{name::VERSION, BINDINGS_VERSION}, {name::BINDINGS, std::move(all)}};
  return doc.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::variant<Bindings, std::string> load_bindings_file(const std::filesystem::path& file) {
  UniqueFd fd{::open(file.c_str(), O_RDONLY | O_CLOEXEC)};
  if (!fd) {
    if (errno == ENOENT) return Bindings{};
    return sys_error("read", file);
  }
  std::string text;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("read", file);
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > MAX_BINDINGS_BYTES) break;
  }
  auto parsed = parse_bindings(text);
  if (auto* e = std::get_if<std::string>(&parsed)) return fmt::format("{}: {}", file.string(), *e);
  return parsed;
}

std::filesystem::path worker_bindings_path(const std::filesystem::path& state_dir) {
  return state_dir / BINDINGS_FILE_NAME;
}

std::filesystem::path worker_credentials_path(const std::filesystem::path& state_dir, std::string_view registry) {
  std::string name = "registry-";
  for (char c : registry) name += std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' ? c : '_';
  return state_dir / (name + ".credentials");
}

std::string write_file_atomic(const std::filesystem::path& file, std::string_view text, unsigned mode,
                              std::optional<unsigned> gid, std::optional<unsigned> uid) {
  const std::filesystem::path tmp = file.string() + ".tmp";
  UniqueFd fd{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
  if (!fd) return sys_error("create", tmp);
  if ((gid || uid) && ::fchown(fd.get(), uid ? static_cast<uid_t>(*uid) : static_cast<uid_t>(-1),
                               gid ? static_cast<gid_t>(*gid) : static_cast<gid_t>(-1)) < 0)
    return sys_error("chown", tmp);
  if (::fchmod(fd.get(), mode) < 0) return sys_error("chmod", tmp);
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("write", tmp);
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd.get()) < 0) return sys_error("fsync", tmp);
  fd = UniqueFd{};
  if (::rename(tmp.c_str(), file.c_str()) < 0) return sys_error("rename into place", file);
  const auto dir = file.has_parent_path() ? file.parent_path() : std::filesystem::path(".");
  UniqueFd dfd{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (!dfd || ::fsync(dfd.get()) < 0) return sys_error("fsync directory", dir);
  return {};
}

}  // namespace ondemand::bindings
