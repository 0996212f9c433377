#include "backends/backend.h"

#include <cerrno>

namespace ondemand::worker {

std::string_view to_string(BackendError::Kind kind) {
  using K = BackendError::Kind;
  switch (kind) {
    case K::NOT_FOUND: return "not found";
    case K::ACCESS: return "access denied";
    case K::IO: return "I/O error";
    case K::TIMEOUT: return "timed out";
    case K::INTEGRITY: return "integrity check failed";
    case K::PROTOCOL: return "protocol error";
    case K::INVALID: return "invalid reference";
  }
  return "unknown";
}

BackendError error_from_errno(int err, std::string message) {
  using K = BackendError::Kind;
  K kind = K::IO;
  switch (err) {
    case ENOENT: kind = K::NOT_FOUND; break;
    case EACCES:
    case EPERM: kind = K::ACCESS; break;
    case ETIMEDOUT: kind = K::TIMEOUT; break;
    case EINVAL: kind = K::INVALID; break;
    default: break;
  }
  return {kind, err, std::move(message)};
}

BackendError timeout_error(std::string message) {
  return {BackendError::Kind::TIMEOUT, ETIMEDOUT, std::move(message)};
}

}  // namespace ondemand::worker
