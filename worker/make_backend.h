// The backend a worker serves from, either front end: local files in
// blob_dir, and, with data_dir, blob ids bound to a registry ahead of them.
#pragma once

#include <memory>

#include "backends/backend.h"
#include "backends/bindings/bound_backend.h"
#include "backends/local.h"
#include "config/config.h"

namespace ondemand::worker {

// Throws what the backends throw on a bad configuration (the caller exits
// CONFIG).
inline std::unique_ptr<Backend> make_backend(const Config& config) {
  std::unique_ptr<Backend> backend = std::make_unique<LocalBackend>(config.blob_dir);
  // With data_dir, bound ids come from their registry, the rest as before.
  if (!config.data_dir.empty()) backend = std::make_unique<bindings::BoundBackend>(std::move(backend), config);
  return backend;
}

}  // namespace ondemand::worker
