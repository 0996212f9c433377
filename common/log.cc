#include "common/log.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace ondemand {

void init_logging(std::string_view role) {
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
  if (const char* level = std::getenv("ONDEMAND_LOG_LEVEL"))
    logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

}  // namespace ondemand
