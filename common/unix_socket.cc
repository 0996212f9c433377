#include "common/unix_socket.h"

#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/sys.h"

namespace ondemand {

UnixAddress unix_address(std::string_view path) {
  UnixAddress out;
  out.addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof out.addr.sun_path)
    throw UnixSocketError(fmt::format("socket path \"{}\" is {} bytes; a Unix socket path must be 1 to {}", path,
                                      path.size(), sizeof out.addr.sun_path - 1),
                          ENAMETOOLONG);
  std::memcpy(out.addr.sun_path, path.data(), path.size());
  if (out.addr.sun_path[0] == '@') out.addr.sun_path[0] = '\0';
  // Abstract names are counted, not NUL-terminated; the length covers both.
  out.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + (path[0] == '@' ? 0 : 1));
  return out;
}

UniqueFd listen_seqpacket(const std::filesystem::path& path, mode_t mode, int backlog) {
  const auto tmp = fmt::format("{}.{}", path.string(), ::getpid());
  unix_address(path.string());  // the final name must fit as well as the temporary one
  const auto addr = unix_address(tmp);
  const auto fail = [&](const char* step, int err) {
    ::unlink(tmp.c_str());
    return UnixSocketError(fmt::format("cannot listen on {}: {}: {}", path.string(), step, sys::errno_name(err)), err);
  };
  UniqueFd fd{::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)};
  if (!fd) throw fail("socket", errno);
  ::unlink(tmp.c_str());  // a leftover of a process that had our pid
  const mode_t old_mask = ::umask(~mode & 0777);
  const int rc = ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr.addr), addr.len);
  const int err = errno;
  ::umask(old_mask);
  if (rc < 0) throw fail("bind", err);
  if (::listen(fd.get(), backlog) < 0) throw fail("listen", errno);
  if (::rename(tmp.c_str(), path.c_str()) < 0) throw fail("rename over", errno);
  return fd;
}

Connection connect_seqpacket(const std::filesystem::path& path, std::chrono::milliseconds timeout) {
  Connection out;
  UnixAddress addr;
  try {
    addr = unix_address(path.string());
  } catch (const UnixSocketError& e) {
    return {UniqueFd{}, e.err, e.what()};
  }
  UniqueFd fd{::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)};
  if (!fd) return {UniqueFd{}, errno, fmt::format("connect {}: socket: {}", path.string(), sys::errno_name(errno))};
  const auto set_timeout = [&](std::chrono::milliseconds t) {
    timeval tv{static_cast<time_t>(t.count() / 1000), static_cast<suseconds_t>(t.count() % 1000 * 1000)};
    return ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  };
  // Linux: a blocking connect to a full backlog waits up to SO_SNDTIMEO,
  // then fails with EAGAIN (unix_stream_connect).
  if (set_timeout(timeout < std::chrono::milliseconds(1) ? std::chrono::milliseconds(1) : timeout) < 0)
    return {UniqueFd{}, errno, fmt::format("connect {}: SO_SNDTIMEO: {}", path.string(), sys::errno_name(errno))};
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr.addr), addr.len);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    const int err = errno;
    if (err == EAGAIN)
      return {UniqueFd{}, err,
              fmt::format("connect {}: timed out after {} ms (the listener is not accepting)", path.string(),
                          timeout.count())};
    return {UniqueFd{}, err, fmt::format("connect {}: {}", path.string(), sys::errno_name(err))};
  }
  set_timeout(std::chrono::milliseconds(0));
  out.fd = std::move(fd);
  return out;
}

}  // namespace ondemand
