// The worker's backend when bindings are configured (data_dir set): per blob
// id, the binding's registry blob if there is one, else blob_dir as before.
//
// Bindings come from the copy the supervisor publishes in state_dir
// (worker_bindings_path), re-read whenever that file changed (checked at
// each open, one stat): a `bind` is seen by the running worker at the next
// open of the id, no restart. Credentials come from the worker-owned copies
// beside it (worker_credentials_path), never argv or the environment.
//
// Integrity: reads of a registry blob that cover it from offset 0 onwards
// without a gap feed a SHA-256; when they reach its end, the digest is
// compared with the binding's. A mismatch is logged naming the blob id and
// the registry, and every later read of that blob fails with EIO.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "backends/backend.h"
#include "backends/bindings/bindings.h"
#include "backends/registry/registry_backend.h"
#include "config/config.h"

namespace ondemand::bindings {

class BoundBackend final : public worker::Backend {
 public:
  // `fallback`: the blob_dir backend for unbound ids.
  BoundBackend(std::unique_ptr<worker::Backend> fallback, const Config& config);
  worker::OpenResult open(const proto::BlobRef& ref, worker::Deadline deadline) override;
  std::string describe() const override;

  // The binding of `id` as the published file says now (re-read if changed).
  std::optional<Binding> lookup(std::string_view id);

 private:
  struct Stamp {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = -1;
    std::int64_t mtime_ns = -1;
    bool operator==(const Stamp&) const = default;
  };
  void refresh_locked();

  std::unique_ptr<worker::Backend> fallback_;
  std::filesystem::path file_;
  std::chrono::milliseconds timeout_;
  std::mutex mutex_;
  Stamp stamp_;
  Bindings bindings_;
  std::string last_error_;  // the last unusable-file error logged, logged once
  // One client per configured registry; the construction error instead when
  // its options were refused (a missing CA file).
  std::map<std::string, std::shared_ptr<registry::RegistryBackend>, std::less<>> registries_;
  std::map<std::string, std::string, std::less<>> registry_errors_;
};

// The verifying wrapper, exposed for tests: `inner`'s bytes must hash to
// `digest` ("sha256:<hex>"; other algorithms are not checked).
std::shared_ptr<worker::Blob> verifying_blob(std::shared_ptr<worker::Blob> inner, std::string digest,
                                             std::string what);

}  // namespace ondemand::bindings
