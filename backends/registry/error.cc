#include "backends/registry/error.h"

#include <cerrno>

namespace ondemand::registry {

std::string_view kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::none: return "ok";
    case ErrorKind::not_found: return "NOT_FOUND";
    case ErrorKind::permission: return "PERMISSION";
    case ErrorKind::timeout: return "TIMEOUT";
    case ErrorKind::unavailable: return "UNAVAILABLE";
    case ErrorKind::protocol: return "PROTOCOL";
    case ErrorKind::invalid: return "INVALID";
  }
  return "UNKNOWN";
}

int to_errno(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::none: return 0;
    case ErrorKind::not_found: return ENOENT;
    case ErrorKind::permission: return EACCES;
    case ErrorKind::invalid: return EINVAL;
    default: return EIO;
  }
}

}  // namespace ondemand::registry
