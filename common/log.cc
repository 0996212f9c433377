#include "common/log.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace ondemand {

std::optional<spdlog::level::level_enum> parse_log_level(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  using spdlog::level::level_enum;
  if (lower == "trace") return level_enum::trace;
  if (lower == "debug") return level_enum::debug;
  if (lower == "info") return level_enum::info;
  if (lower == "warn" || lower == "warning") return level_enum::warn;
  if (lower == "error" || lower == "err") return level_enum::err;
  if (lower == "critical") return level_enum::critical;
  if (lower == "off") return level_enum::off;
  return std::nullopt;
}

std::string init_logging(std::string_view role) {
  struct sigaction ignore{};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  ::sigaction(SIGPIPE, &ignore, nullptr);

  // _mt: the sink's formatter keeps per-call state (cached time fields), so
  // concurrent callers must be serialized.
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>(std::string(role), sink);
  // "2026-11-22T05:04:28.123 info worker[1234] message"
  logger->set_pattern(fmt::format("%Y-%m-%dT%H:%M:%S.%e %l {}[{}] %v", role, ::getpid()));
  logger->set_level(spdlog::level::info);
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  if (const char* name = std::getenv("ONDEMAND_LOG_LEVEL")) {
    if (auto level = parse_log_level(name)) {
      logger->set_level(*level);
    } else {
      std::string error = fmt::format(
          "ONDEMAND_LOG_LEVEL=\"{}\" is not a log level (trace, debug, info, warn, error, critical, off)",
          name);
      spdlog::critical("{}", error);
      return error;
    }
  }
  return {};
}

}  // namespace ondemand
