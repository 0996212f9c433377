#include "worker/landlock.h"

#include <fcntl.h>
#include <linux/landlock.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "common/unique_fd.h"

// Debian 12's linux-libc-dev stops at ABI 2; the values are the kernel's
// (include/uapi/linux/landlock.h, 6.2 and 6.7).
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15)
#endif

namespace ondemand::worker {
namespace {

constexpr std::uint64_t READ = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
constexpr std::uint64_t WRITE = LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_FILE |
                                LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |
                                LANDLOCK_ACCESS_FS_TRUNCATE;
constexpr std::uint64_t REMOVE = LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR;

// Every right ABI `abi` knows (the kernel refuses a handled right it does
// not know with EINVAL).
std::uint64_t rights_of_abi(int abi) {
  std::uint64_t all = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;  // ABI 1: bits 0..12
  if (abi >= 2) all |= LANDLOCK_ACCESS_FS_REFER;
  if (abi >= 3) all |= LANDLOCK_ACCESS_FS_TRUNCATE;
  if (abi >= 5) all |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
  return all;
}

std::runtime_error failed(std::string_view step) {
  return std::runtime_error(fmt::format("landlock: {}: {}", step, std::strerror(errno)));
}

void add_rule(int ruleset, const std::filesystem::path& dir, std::uint64_t access) {
  UniqueFd fd{::open(dir.c_str(), O_PATH | O_CLOEXEC | O_DIRECTORY)};
  if (!fd) throw failed(fmt::format("open {}", dir.string()));
  landlock_path_beneath_attr rule{.allowed_access = access, .parent_fd = fd.get()};
  if (::syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0) < 0)
    throw failed(fmt::format("rule for {}", dir.string()));
}

}  // namespace

int landlock_abi() {
  const long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return abi < 0 ? 0 : static_cast<int>(abi);
}

LandlockOutcome restrict_file_access(const LandlockRules& rules) {
  LandlockOutcome out;
  const long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 0) {
    if (errno != ENOSYS && errno != EOPNOTSUPP) throw failed("probing the ABI");
    out.why_not = errno == ENOSYS ? "the kernel has no Landlock (CONFIG_SECURITY_LANDLOCK)"
                                  : "Landlock is not enabled at boot (lsm= does not list it)";
    return out;
  }
  out.abi = static_cast<int>(abi);
  const std::uint64_t handled = rights_of_abi(out.abi);
  landlock_ruleset_attr attr{.handled_access_fs = handled};
  UniqueFd ruleset{static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0))};
  if (!ruleset) throw failed("creating the ruleset");
  for (const auto& dir : rules.read_only) add_rule(ruleset.get(), dir, READ & handled);
  for (const auto& dir : rules.read_write) add_rule(ruleset.get(), dir, (READ | WRITE) & handled);
  for (const auto& dir : rules.read_remove) add_rule(ruleset.get(), dir, (READ | REMOVE) & handled);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) throw failed("PR_SET_NO_NEW_PRIVS");
  if (::syscall(SYS_landlock_restrict_self, ruleset.get(), 0) < 0) throw failed("restricting the worker");
  out.applied = true;
  return out;
}

}  // namespace ondemand::worker
