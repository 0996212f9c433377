// Who may run which control command (issue 9, hole 11). Pure: the control
// server asks it with the command's name and the peer's SO_PEERCRED uid.
//
// Three levels:
//   READ     status (and read-only listings: metrics, bindings): root and
//            control_uids;
//   OPERATE  commands that change what runs but only ever run the configured
//            worker binary (restart-worker, stop, upgrade without a binary,
//            reload): root and control_uids. Listing a uid delegates
//            operating the cache to it, stop included;
//   ROOT     upgrade with a "binary": the supervisor runs as root, so naming
//            the program it starts is running any program as root. bind and
//            unbind: they decide which bytes every mount of an id sees and
//            write root's data_dir. Root only.
// Any command not named here is ROOT: a new command is root-only until it is
// classified. Everyone else (neither root nor listed) may run nothing.
#pragma once

#include <sys/types.h>

#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace ondemand::supervisor {

enum class ControlAccess { READ, OPERATE, ROOT };

// `names_binary`: the request carries a program path to run (upgrade's
// "binary").
ControlAccess control_access(std::string_view cmd, bool names_binary);

// nullopt when `uid` may run it; else the refusal, for the peer and the log.
std::optional<std::string> control_refusal(std::string_view cmd, bool names_binary, uid_t uid,
                                           std::span<const uid_t> control_uids);

}  // namespace ondemand::supervisor
