// One logger per process (spdlog): syslog-style levels to stderr, role and
// pid on every line. Request lines carry msg_id= and object_id= so a
// failover can be reconstructed from the logs. Never log from a signal
// handler: signals arrive through asio::signal_set.
#pragma once

#include <string_view>

#include <spdlog/spdlog.h>

namespace ondemand {

// `role` is "supervisor", "worker" or "ctl". Level from $ONDEMAND_LOG_LEVEL
// (trace|debug|info|warn|error), default info.
void init_logging(std::string_view role);

}  // namespace ondemand
