// What a registry request can end in. Every failure is a value that names
// the registry, the repository and the digest (never a credential), and maps
// to one errno for the one reader it concerns.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ondemand::registry {

enum class ErrorKind : std::uint8_t {
  none,
  not_found,    // 404: the blob or the repository does not exist
  permission,   // 401/403 after authenticating, bad credentials, TLS refused
  timeout,      // the request's deadline passed (stalls, retries exhausted)
  unavailable,  // connection refused/reset and not retryable any more
  protocol,     // a response we cannot trust (bad Content-Range, short body)
  invalid,      // a malformed reference or option: never sent
};

struct Error {
  ErrorKind kind = ErrorKind::none;
  std::string message;

  explicit operator bool() const { return kind != ErrorKind::none; }
};

std::string_view kind_name(ErrorKind kind);

// ENOENT for not_found, EACCES for permission, EINVAL for invalid, EIO for
// everything else: the worker turns these into the reader's error.
int to_errno(ErrorKind kind);

}  // namespace ondemand::registry
