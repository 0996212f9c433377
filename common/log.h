// One logger per process (spdlog): syslog-style levels to stderr, role and
// pid on every line. Request lines carry msg_id= and object_id= so a
// failover can be reconstructed from the logs. Never log from a signal
// handler: signals arrive through asio::signal_set.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

namespace ondemand {

// `role` is "supervisor", "worker" or "ctl". Level from $ONDEMAND_LOG_LEVEL
// (see parse_log_level), default info. The sink is thread-safe: the
// worker logs from its I/O pool threads as well as from its event loop.
//
// Where lines go: to the journal, with fields, when stderr is the journal
// stream systemd set up ($JOURNAL_STREAM names stderr's device and inode,
// as for a unit's StandardError=journal); otherwise to stderr as text.
//
// Also ignores SIGPIPE for the whole process: stderr is often a pipe (a
// journal, a log shipper, a test harness), and the reader going away must
// turn our writes into EPIPE, not kill a process that holds the cache. Every
// program that logs calls this first; spawned children start with SIGPIPE
// at its default and set it here themselves.
//
// Returns "" or, when $ONDEMAND_LOG_LEVEL names no level, the error (also
// logged, at the default level): callers exit with a usage/config error
// rather than run with logging silently off.
[[nodiscard]] std::string init_logging(std::string_view role);

// trace, debug, info, warn (warning), error (err), critical, off, in any
// case; nullopt for anything else (spdlog's own from_str turns an unknown
// name into "off", which hid even critical errors).
std::optional<spdlog::level::level_enum> parse_log_level(std::string_view name);

// Journal fields (NAME=value, NAME upper case) for the lines this thread
// logs while the object lives, e.g. a MESSAGE_ID from proto/log_events.h:
//   LogFields f({{"MESSAGE_ID", proto::log_event::WORKER_DIED}, {"WORKER_PID", "42"}});
//   spdlog::warn("worker pid=42 ...");
// The text line is the same either way; on stderr the fields are not shown.
class LogFields {
 public:
  LogFields(std::initializer_list<std::pair<std::string_view, std::string>> fields);
  ~LogFields();
  LogFields(const LogFields&) = delete;
  LogFields& operator=(const LogFields&) = delete;

 private:
  std::size_t added_ = 0;
};

// The journal fields in effect on this thread ("NAME=value" each).
const std::vector<std::string>& current_log_fields();

// True when init_logging chose the journal.
bool logging_to_journal();

}  // namespace ondemand
