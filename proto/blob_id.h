// Blob ids come from the kernel's cookie key, which comes from a mount
// option an unprivileged container runtime may control: treat them as
// hostile. A valid id is one path component that cannot name anything but a
// file directly inside blob_dir.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ondemand::worker {

inline constexpr std::size_t MAX_BLOB_ID = 255;  // NAME_MAX

// nullopt when valid, else why not (for the log line).
std::optional<std::string> validate_blob_id(std::string_view id);

// Printable rendering of an arbitrary id for logs (escapes non-printables).
std::string escape_id(std::string_view id);

}  // namespace ondemand::worker
