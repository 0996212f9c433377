#include "supervisor/control_policy.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>

namespace ondemand::supervisor {

ControlAccess control_access(std::string_view cmd, bool names_binary) {
  constexpr std::array<std::string_view, 3> READ = {"status", "metrics", "bindings"};
  // bind/unbind are ROOT (not listed): a binding decides what bytes every
  // mount of that id sees, and writes root's durable data_dir.
  constexpr std::array<std::string_view, 4> OPERATE = {"restart-worker", "stop", "upgrade", "reload"};
  if (std::find(READ.begin(), READ.end(), cmd) != READ.end()) return ControlAccess::READ;
  if (std::find(OPERATE.begin(), OPERATE.end(), cmd) != OPERATE.end())
    return cmd == "upgrade" && names_binary ? ControlAccess::ROOT : ControlAccess::OPERATE;
  return ControlAccess::ROOT;
}

std::optional<std::string> control_refusal(std::string_view cmd, bool names_binary, uid_t uid,
                                           std::span<const uid_t> control_uids) {
  if (uid == 0) return std::nullopt;
  const bool listed = std::find(control_uids.begin(), control_uids.end(), uid) != control_uids.end();
  if (!listed) return fmt::format("uid {} is not allowed (not root, not in control_uids)", uid);
  if (control_access(cmd, names_binary) == ControlAccess::ROOT)
    return fmt::format("uid {} may not run \"{}\"{}: root only", uid, cmd,
                       names_binary ? " with a binary (it would run that program as root)" : "");
  return std::nullopt;
}

}  // namespace ondemand::supervisor
