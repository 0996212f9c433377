#include "proto/blob_ref.h"

#include <fmt/format.h>

namespace ondemand::proto {

std::optional<std::string> validate_blob_ref(const BlobRef& ref) {
  if (auto why = worker::validate_blob_id(ref.blob_id)) return "blob id " + *why;
  if (ref.domain.empty()) return std::nullopt;
  if (auto why = worker::validate_blob_id(ref.domain)) return "domain " + *why;
  return std::nullopt;
}

VolumeKeyResult domain_from_volume_key(std::string_view volume_key) {
  if (!volume_key.starts_with(EROFS_VOLUME_PREFIX))
    return {std::nullopt, fmt::format("volume key \"{}\" does not start with \"{}\"",
                                      worker::escape_id(volume_key), EROFS_VOLUME_PREFIX)};
  const auto domain = volume_key.substr(EROFS_VOLUME_PREFIX.size());
  if (domain.empty()) return {std::nullopt, "volume key names no domain or fsid"};
  return {std::string(domain), {}};
}

std::string describe(const BlobRef& ref) {
  if (ref.domain.empty()) return worker::escape_id(ref.blob_id);
  return fmt::format("{}/{}", worker::escape_id(ref.domain), worker::escape_id(ref.blob_id));
}

}  // namespace ondemand::proto
