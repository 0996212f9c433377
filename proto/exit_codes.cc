#include "proto/exit_codes.h"

#include <csignal>
#include <cstring>

#include <fmt/format.h>

namespace ondemand::proto {

ExitClass classify_exit(bool exited, int code_or_signal) {
  if (!exited) return ExitClass::CRASHED;
  switch (static_cast<ExitCode>(code_or_signal)) {
    case ExitCode::OK:
      return ExitClass::STOPPED;
    case ExitCode::USAGE:
    case ExitCode::CONFIG:
      return ExitClass::FATAL_CONFIG;
    case ExitCode::CACHE_DEAD:
      return ExitClass::CACHE_DEAD;
    default:
      return ExitClass::CRASHED;
  }
}

std::string describe_exit(bool exited, int code_or_signal) {
  if (!exited) {
    const char* name = sigabbrev_np(code_or_signal);
    return fmt::format("killed by SIG{}", name ? name : std::to_string(code_or_signal).c_str());
  }
  const char* meaning = "unknown";
  switch (static_cast<ExitCode>(code_or_signal)) {
    case ExitCode::OK: meaning = "clean stop"; break;
    case ExitCode::USAGE: meaning = "usage error"; break;
    case ExitCode::HANDOFF_FAILED: meaning = "handoff failed"; break;
    case ExitCode::INTERNAL: meaning = "internal error"; break;
    case ExitCode::DEVICE_READ_FAILING: meaning = "device read() kept failing"; break;
    case ExitCode::DEVICE_LOST: meaning = "device I/O error"; break;
    case ExitCode::TEMPORARY: meaning = "temporary failure"; break;
    case ExitCode::CONFIG: meaning = "configuration error"; break;
    case ExitCode::CACHE_DEAD: meaning = "cache dead after an I/O error on cache_dir"; break;
  }
  return fmt::format("exited with {} ({})", code_or_signal, meaning);
}

}  // namespace ondemand::proto
