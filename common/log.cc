#include "common/log.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include <fmt/format.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace ondemand {
namespace {

thread_local std::vector<std::string> t_fields;
bool g_journal = false;

// stderr is the journal stream systemd connected (JOURNAL_STREAM=dev:ino).
bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (!stream) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st{};
  return ::fstat(STDERR_FILENO, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

int syslog_priority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug: return LOG_DEBUG;
    case spdlog::level::info: return LOG_INFO;
    case spdlog::level::warn: return LOG_WARNING;
    case spdlog::level::err: return LOG_ERR;
    case spdlog::level::critical: return LOG_CRIT;
    default: return LOG_INFO;
  }
}

// One journal entry per line: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, the
// role, and the fields of the LogFields in effect. If the journal refuses
// (it is restarting), the line goes to stderr, which is its stream anyway.
class JournalSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit JournalSink(std::string role)
      : identifier_("SYSLOG_IDENTIFIER=ondemand-" + role), role_("ONDEMAND_ROLE=" + role) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    const std::string message = "MESSAGE=" + std::string(msg.payload.data(), msg.payload.size());
    const std::string priority = fmt::format("PRIORITY={}", syslog_priority(msg.level));
    std::vector<iovec> iov;
    auto add = [&](const std::string& field) { iov.push_back({const_cast<char*>(field.data()), field.size()}); };
    add(message);
    add(priority);
    add(identifier_);
    add(role_);
    for (const auto& field : t_fields) add(field);
    if (::sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) < 0) {
      spdlog::memory_buf_t text;
      formatter_->format(msg, text);
      (void)!::write(STDERR_FILENO, text.data(), text.size());
    }
  }
  void flush_() override {}

 private:
  std::string identifier_;
  std::string role_;
};

}  // namespace

LogFields::LogFields(std::initializer_list<std::pair<std::string_view, std::string>> fields) {
  for (const auto& [name, value] : fields) {
    t_fields.push_back(fmt::format("{}={}", name, value));
    ++added_;
  }
}

LogFields::~LogFields() { t_fields.resize(t_fields.size() - added_); }

const std::vector<std::string>& current_log_fields() { return t_fields; }

bool logging_to_journal() { return g_journal; }

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
  g_journal = stderr_is_journal();
  spdlog::sink_ptr sink;
  if (g_journal)
    sink = std::make_shared<JournalSink>(std::string(role));
  else
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
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
