#include "common/systemd.h"

#include <fcntl.h>
#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include <spdlog/spdlog.h>

#include "common/sys.h"

namespace ondemand::systemd {

bool notify(std::string_view state, std::span<const int> fds) {
  const std::string text(state);
  const int rc = ::sd_pid_notify_with_fds(0, /*unset_environment=*/0, text.c_str(), fds.data(),
                                          static_cast<unsigned>(fds.size()));
  if (rc < 0) {
    spdlog::warn("sd_notify \"{}\": {}", state, sys::errno_name(-rc));
    return false;
  }
  return rc > 0;  // 0: not under systemd ($NOTIFY_SOCKET unset)
}

std::optional<UniqueFd> take_listen_fd(std::string_view name) {
  char** names = nullptr;
  // Checks LISTEN_PID, sets FD_CLOEXEC on the passed fds, unsets the variables.
  const int n = ::sd_listen_fds_with_names(/*unset_environment=*/1, &names);
  if (n < 0) {
    spdlog::warn("LISTEN_FDS: {}", sys::errno_name(-n));
    return std::nullopt;
  }
  std::optional<UniqueFd> found;
  for (int i = 0; i < n; ++i) {
    UniqueFd fd{SD_LISTEN_FDS_START + i};
    ::fcntl(fd.get(), F_SETFD, FD_CLOEXEC);
    if (!found && names && names[i] && name == names[i]) found = std::move(fd);  // others close here
  }
  if (names) {
    for (int i = 0; names[i]; ++i) std::free(names[i]);
    std::free(names);
  }
  return found;
}

}  // namespace ondemand::systemd
