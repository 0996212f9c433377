// A blob reference: what a front end asks the engine to open, whatever the
// kernel interface. `domain` scopes `blob_id`:
//   cachefiles: the OPEN's volume key is "erofs,<domain_id>" when the mount
//               named a domain (shared-domain images), else "erofs,<fsid>"
//               (erofs_fscache_register_volume, Linux 6.12); the cookie key
//               is the blob id (the fsid, or a `device=` blob).
//   fanotify:   the binding that made the cache file.
// Both fields come from mount options an unprivileged container runtime may
// control: treat them as hostile. validate_blob_ref() refuses anything that
// is not one harmless path component (proto/blob_id.h's rules), naming the
// field. An empty domain means "none" (a front end with no volume notion).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "proto/blob_id.h"

namespace ondemand::proto {

struct BlobRef {
  std::string domain;
  std::string blob_id;
  friend bool operator==(const BlobRef&, const BlobRef&) = default;
};

// nullopt when valid, else why not, naming the field ("blob id ...",
// "domain ...").
std::optional<std::string> validate_blob_ref(const BlobRef& ref);

inline constexpr std::string_view EROFS_VOLUME_PREFIX = "erofs,";

// The domain named by a cachefiles volume key ("erofs,<domain or fsid>", NUL
// already stripped by parse_kernel_msg), or why the key is not one.
struct VolumeKeyResult {
  std::optional<std::string> domain;
  std::string error;
};
VolumeKeyResult domain_from_volume_key(std::string_view volume_key);

// "domain/blob" for logs, both parts escaped.
std::string describe(const BlobRef& ref);

}  // namespace ondemand::proto
