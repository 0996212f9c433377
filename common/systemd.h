// The two pieces of the systemd protocol the supervisor uses, through
// Debian's libsystemd: sd_notify datagrams to $NOTIFY_SOCKET, with fds for
// the fd store (sd_pid_notify_with_fds), and the LISTEN_FDS/LISTEN_FDNAMES
// hand-back at start (sd_listen_fds_with_names). Both are no-ops outside
// systemd.
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "common/unique_fd.h"

namespace ondemand::systemd {

// Sends `state` ("READY=1", "FDSTORE=1\nFDNAME=cachefiles", ...) with `fds`.
// Returns false when not under systemd or on error (logged).
bool notify(std::string_view state, std::span<const int> fds = {});

// Takes the fd named `name` from LISTEN_FDS (fds 3.. with LISTEN_PID == our
// pid), sets CLOEXEC on every passed fd and unsets the variables. Other
// passed fds are closed.
std::optional<UniqueFd> take_listen_fd(std::string_view name);

}  // namespace ondemand::systemd
