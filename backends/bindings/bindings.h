// Blob bindings: which blob id is served from which registry blob
// (issue 10). The supervisor owns the durable file <data_dir>/bindings.json
// (root 0600) and writes a copy the worker can read into state_dir; the
// worker resolves ids against that copy.
//
// File format (version 1):
//   {"version": 1, "bindings": {"<id>": {"backend": "registry",
//     "registry": "host[:port]", "repository": "...", "digest": "sha256:...",
//     "size": N (optional)}}}
// parse_bindings() never throws: anything else (not JSON, a torn file, a
// field missing or of another type, an invalid id, repository or digest) is
// an error string naming the binding and the field. Never a partial result.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace ondemand::bindings {

inline constexpr int BINDINGS_VERSION = 1;
inline constexpr std::string_view BINDINGS_FILE_NAME = "bindings.json";
inline constexpr std::string_view REGISTRY_BACKEND = "registry";
inline constexpr std::size_t MAX_BINDINGS_BYTES = 16 << 20;

struct Binding {
  std::string registry;    // host[:port], a key of the config's "registries"
  std::string repository;  // "library/busybox"
  std::string digest;      // "sha256:<64 hex>"
  std::optional<std::uint64_t> size;
  bool operator==(const Binding&) const = default;
};
using Bindings = std::map<std::string, Binding, std::less<>>;

// "" when `id` -> `b` is a valid binding, else why not, naming the id and field.
std::string validate_binding(std::string_view id, const Binding& b);

std::variant<Bindings, std::string> parse_bindings(std::string_view text);
std::string serialize_bindings(const Bindings& bindings);

// Missing file: no bindings. Unreadable, torn or invalid: an error naming the file.
std::variant<Bindings, std::string> load_bindings_file(const std::filesystem::path& file);

// What the supervisor publishes in state_dir for the unprivileged worker:
// the bindings (root:<worker group> 0640) and, per registry with
// credentials, a copy of its credentials file owned by the worker's uid,
// mode 0600 (the client refuses a group-readable credentials file).
std::filesystem::path worker_bindings_path(const std::filesystem::path& state_dir);
std::filesystem::path worker_credentials_path(const std::filesystem::path& state_dir, std::string_view registry);

// Writes `text` to `file` atomically: a temp file beside it (mode `mode`,
// group `gid` when set), fsync, rename, fsync of the directory. "" or why not.
// Owner `uid` / group `gid` when set.
std::string write_file_atomic(const std::filesystem::path& file, std::string_view text, unsigned mode,
                              std::optional<unsigned> gid = std::nullopt, std::optional<unsigned> uid = std::nullopt);

}  // namespace ondemand::bindings
