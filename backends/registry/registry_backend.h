// The registry client behind the worker's Backend interface. Deliberately
// thin: which blob id means which repository/digest is the resolver's
// business (blob bindings, a later step), the HTTP work is the client's.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "backends/backend.h"
#include "backends/registry/client.h"

namespace ondemand::registry {

struct RegistrySource {
  BlobRef blob;
  std::uint64_t size = 0;  // from the binding when known; 0: ask the registry (HEAD)
};

// Maps a blob id to its source; nullopt when the id is not bound here.
using Resolver = std::function<std::optional<RegistrySource>(std::string_view id)>;

// The client's error as the Backend interface's; nullopt for none.
std::optional<worker::BackendError> to_backend_error(const Error& err);

class RegistryBackend final : public worker::Backend {
 public:
  // `request_timeout`: each open and read gets now + this as its deadline
  // (keep it below the kernel request timeout).
  RegistryBackend(std::shared_ptr<RegistryClient> client, Resolver resolver,
                  std::chrono::milliseconds request_timeout);

  // Unbound id: ENOENT. Otherwise the size (binding or HEAD), errors mapped
  // by to_errno().
  worker::OpenResult open(const proto::BlobRef& ref, worker::Deadline deadline) override;
  std::string describe() const override;

 private:
  std::shared_ptr<RegistryClient> client_;
  Resolver resolver_;
  std::chrono::milliseconds request_timeout_;
};

}  // namespace ondemand::registry
