#include "proto/blob_id.h"

#include <fmt/format.h>

namespace ondemand::worker {

std::optional<std::string> validate_blob_id(std::string_view id) {
  if (id.empty()) return "empty id";
  if (id.size() > MAX_BLOB_ID) return fmt::format("id longer than {} bytes", MAX_BLOB_ID);
  if (id == "." || id == "..") return "id is a dot entry";
  for (unsigned char c : id) {
    if (c == '/') return "id contains '/'";
    if (c == '\0') return "id contains NUL";
    // Registry digests and image names need only these; anything else
    // (control characters, spaces, non-ASCII) is refused rather than guessed.
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-' || c == ':' || c == '+' || c == '@' || c == '=';
    if (!ok) return fmt::format("id contains byte 0x{:02x}", c);
  }
  return std::nullopt;
}

std::string escape_id(std::string_view id) {
  std::string out;
  for (unsigned char c : id.substr(0, 300)) {
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"')
      out.push_back(static_cast<char>(c));
    else
      out += fmt::format("\\x{:02x}", c);
  }
  if (id.size() > 300) out += "...";
  return out;
}

}  // namespace ondemand::worker
