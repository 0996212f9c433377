#include "supervisor/seccomp_report.h"

#include <fcntl.h>
#include <seccomp.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>

#include <fmt/format.h>

#include "common/unique_fd.h"

namespace ondemand::supervisor {
namespace {

// The decimal number after `key` (which includes its leading space and
// '='), if the record has one.
std::optional<long> number_after(std::string_view text, std::string_view key) {
  const auto at = text.find(key);
  if (at == std::string_view::npos) return std::nullopt;
  const char* begin = text.data() + at + key.size();
  long value = 0;
  const auto [end, ec] = std::from_chars(begin, text.data() + text.size(), value);
  if (ec != std::errc() || end == begin) return std::nullopt;
  return value;
}

}  // namespace

std::optional<long> seccomp_syscall_of(std::string_view record, pid_t pid) {
  if (record.find("type=1326") == std::string_view::npos) return std::nullopt;
  const auto record_pid = number_after(record, " pid=");
  if (!record_pid || *record_pid != pid) return std::nullopt;
  return number_after(record, " syscall=");
}

std::optional<long> find_seccomp_syscall(pid_t pid) {
  UniqueFd kmsg{::open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC)};
  if (!kmsg) return std::nullopt;
  std::optional<long> found;
  char record[8192];
  // One record per read(), oldest first; EAGAIN at the end. EPIPE: records
  // were overwritten under us, the next read goes on from the oldest left.
  for (int budget = 100000; budget > 0; --budget) {
    const ssize_t n = ::read(kmsg.get(), record, sizeof record);
    if (n < 0 && (errno == EPIPE || errno == EINTR)) continue;
    if (n <= 0) break;
    if (auto nr = seccomp_syscall_of(std::string_view(record, static_cast<std::size_t>(n)), pid)) found = nr;
  }
  return found;
}

std::string syscall_name(long nr) {
  char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, static_cast<int>(nr));
  if (name == nullptr) return {};
  std::string out(name);
  std::free(name);
  return out;
}

std::string describe_seccomp_kill(std::optional<long> syscall) {
  if (!syscall) return "killed by seccomp (SIGSYS)";
  const auto name = syscall_name(*syscall);
  return fmt::format("killed by seccomp (SIGSYS) in system call {}{}", *syscall,
                     name.empty() ? std::string() : fmt::format(" ({})", name));
}

}  // namespace ondemand::supervisor
