// ondemandctl's logic: one request over the control socket, one reply,
// printed for humans or as JSON. Exit codes: 0 done, 1 the supervisor
// refused or failed the command, 2 usage, 3 supervisor not reachable.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace ondemand::ctl {

enum Exit { OK = 0, REFUSED = 1, USAGE = 2, UNREACHABLE = 3 };

struct CallResult {
  nlohmann::json reply;  // null when unreachable
  std::string error;     // why unreachable
};

CallResult call(const std::filesystem::path& socket_path, const nlohmann::json& request,
                std::chrono::milliseconds timeout);

// The `status` reply as an aligned table.
std::string format_status(const nlohmann::json& status);

}  // namespace ondemand::ctl
