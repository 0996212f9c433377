#include "common/systemd.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/fd_passing.h"
#include "common/sys.h"
#include "common/unix_socket.h"

namespace ondemand::systemd {

bool notify(std::string_view state, std::span<const int> fds) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || !*path) return false;
  const std::string p = path;
  UnixAddress addr;
  try {
    addr = unix_address(p);
  } catch (const UnixSocketError& e) {
    spdlog::warn("sd_notify \"{}\": NOTIFY_SOCKET: {}", state, e.what());
    return false;
  }
  UniqueFd sock{::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  if (!sock || ::connect(sock.get(), reinterpret_cast<const sockaddr*>(&addr.addr), addr.len) < 0) {
    spdlog::warn("sd_notify \"{}\": cannot reach NOTIFY_SOCKET {}: {}", state, p, sys::errno_name(errno));
    return false;
  }
  if (int err = send_message(sock.get(), state, fds)) {
    spdlog::warn("sd_notify \"{}\": {}", state, sys::errno_name(err));
    return false;
  }
  return true;
}

std::optional<UniqueFd> take_listen_fd(std::string_view name) {
  const char* pid = std::getenv("LISTEN_PID");
  const char* count = std::getenv("LISTEN_FDS");
  const char* names = std::getenv("LISTEN_FDNAMES");
  if (!pid || !count || std::atol(pid) != ::getpid()) return std::nullopt;
  const int n = std::atoi(count);
  std::vector<std::string> fd_names;
  std::string all = names ? names : "";
  for (std::size_t start = 0; start <= all.size();) {
    auto colon = all.find(':', start);
    if (colon == std::string::npos) colon = all.size();
    fd_names.push_back(all.substr(start, colon - start));
    start = colon + 1;
  }
  std::optional<UniqueFd> found;
  for (int i = 0; i < n; ++i) {
    UniqueFd fd{3 + i};
    ::fcntl(fd.get(), F_SETFD, FD_CLOEXEC);
    if (!found && i < static_cast<int>(fd_names.size()) && fd_names[i] == name)
      found = std::move(fd);  // others close here
  }
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  return found;
}

}  // namespace ondemand::systemd
