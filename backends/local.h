// Blobs as files in one directory: id -> <blob_dir>/<id>. The reference's
// domain is not part of the path (one flat directory, as before domains were
// passed on); the deadline is ignored: a local pread cannot be interrupted,
// and the engine checks the deadline between its chunks.
//
// The directory is opened once and ids are resolved with openat2
// (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), so even an
// id that slipped past validate_blob_id, or a symlink planted in blob_dir,
// cannot open anything outside it. Only regular files are served (a FIFO or
// device node is refused without blocking).
#pragma once

#include <filesystem>

#include "common/unique_fd.h"
#include "backends/backend.h"

namespace ondemand::worker {

class LocalBackend final : public Backend {
 public:
  // Throws std::runtime_error naming the directory when it cannot be opened.
  explicit LocalBackend(const std::filesystem::path& blob_dir);
  OpenResult open(const proto::BlobRef& ref, Deadline deadline) override;
  std::string describe() const override;

 private:
  std::filesystem::path dir_path_;
  UniqueFd dir_;
};

}  // namespace ondemand::worker
