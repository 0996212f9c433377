// AF_UNIX sockets by path: the one place a sockaddr_un is filled in.
//
// Listening binds under a private temporary name and renames it over the
// well-known path, so the path always names a live listener: a successor
// (an upgraded worker, a restarted supervisor) replaces its predecessor's
// socket atomically and a client never sees it missing. The socket is
// created with its final mode (umask during bind), so there is no window in
// which others may connect.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

#include "common/unique_fd.h"

namespace ondemand {

struct UnixSocketError : std::runtime_error {
  UnixSocketError(const std::string& what, int err) : std::runtime_error(what), err(err) {}
  int err;  // errno of the failing call
};

struct UnixAddress {
  sockaddr_un addr{};
  socklen_t len = 0;
};

// `path` as an address; a leading '@' means the abstract namespace (as in
// $NOTIFY_SOCKET). Throws UnixSocketError (ENAMETOOLONG) naming the path
// when it does not fit sun_path.
UnixAddress unix_address(std::string_view path);

// A SOCK_SEQPACKET listener (CLOEXEC, non-blocking) on `path` with
// permissions `mode`, replacing whatever `path` was. Throws UnixSocketError
// naming the path and the failing step.
UniqueFd listen_seqpacket(const std::filesystem::path& path, mode_t mode, int backlog);

struct Connection {
  UniqueFd fd;
  int err = 0;        // errno: ENOENT/ECONNREFUSED nobody listens, EAGAIN timed out
  std::string error;  // names the path, empty on success
};

// A blocking, CLOEXEC SOCK_SEQPACKET connection to `path`. A listener whose
// backlog is full (alive but not accepting) makes connect(2) wait: that wait
// is bounded by `timeout` (SO_SNDTIMEO, reset to none once connected).
Connection connect_seqpacket(const std::filesystem::path& path, std::chrono::milliseconds timeout);

}  // namespace ondemand
