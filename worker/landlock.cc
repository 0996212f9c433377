#include "worker/landlock.h"

#include <fcntl.h>
#include <linux/landlock.h>
#include <sys/prctl.h>
#include <sys/stat.h>
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

// ABI 4 (Linux 6.7), include/uapi/linux/landlock.h, which Debian 12's
// headers lack: the ruleset gained handled_access_net, and rules of type
// LANDLOCK_RULE_NET_PORT name one port. The kernel copies the attribute
// with copy_min_struct_from_user (syscalls.c), which accepts a larger
// struct whose extra bytes are zero: a kernel of ABI < 4 takes this one
// with handled_access_net 0.
struct RulesetAttr {
  std::uint64_t handled_access_fs;
  std::uint64_t handled_access_net;
};
struct NetPortAttr {
  std::uint64_t allowed_access;
  std::uint64_t port;
};
constexpr int RULE_NET_PORT = 2;  // after LANDLOCK_RULE_PATH_BENEATH (1)
constexpr std::uint64_t NET_BIND_TCP = 1ULL << 0;
constexpr std::uint64_t NET_CONNECT_TCP = 1ULL << 1;
constexpr int NET_ABI = 4;

constexpr std::uint64_t READ = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
constexpr std::uint64_t WRITE = LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_FILE |
                                LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |
                                LANDLOCK_ACCESS_FS_TRUNCATE;
constexpr std::uint64_t REMOVE = LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR;
// The rights a rule on a non-directory may carry (the kernel refuses a
// directory right there with EINVAL).
constexpr std::uint64_t FILE_RIGHTS = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |
                                      LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_TRUNCATE |
                                      LANDLOCK_ACCESS_FS_IOCTL_DEV;

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

void add_path_rule(int ruleset, const std::filesystem::path& path, int fd, std::uint64_t access) {
  landlock_path_beneath_attr rule{.allowed_access = access, .parent_fd = fd};
  if (::syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0) < 0)
    throw failed(fmt::format("rule for {}", path.string()));
}

void add_rule(int ruleset, const std::filesystem::path& dir, std::uint64_t access) {
  UniqueFd fd{::open(dir.c_str(), O_PATH | O_CLOEXEC | O_DIRECTORY)};
  if (!fd) throw failed(fmt::format("open {}", dir.string()));
  add_path_rule(ruleset, dir, fd.get(), access);
}

// A directory or a file (symlinks followed: the rule holds what the path
// names now); false when it does not exist or the worker's own uid cannot
// reach it (then it could not read it without Landlock either).
bool add_read_rule_if_present(int ruleset, const std::filesystem::path& path, std::uint64_t handled) {
  UniqueFd fd{::open(path.c_str(), O_PATH | O_CLOEXEC)};
  if (!fd) {
    if (errno == ENOENT || errno == ENOTDIR || errno == EACCES) return false;
    throw failed(fmt::format("open {}", path.string()));
  }
  struct stat st{};
  if (::fstat(fd.get(), &st) < 0) throw failed(fmt::format("fstat {}", path.string()));
  const std::uint64_t access = S_ISDIR(st.st_mode) ? READ : LANDLOCK_ACCESS_FS_READ_FILE;
  add_path_rule(ruleset, path, fd.get(), access & handled);
  return true;
}

void add_port_rule(int ruleset, std::uint16_t port) {
  NetPortAttr rule{.allowed_access = NET_CONNECT_TCP, .port = port};
  if (::syscall(SYS_landlock_add_rule, ruleset, RULE_NET_PORT, &rule, 0) < 0)
    throw failed(fmt::format("rule for TCP port {}", port));
}

}  // namespace

int landlock_abi() {
  const long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return abi < 0 ? 0 : static_cast<int>(abi);
}

LandlockOutcome restrict_access(const LandlockRules& rules) {
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
  // A handled right with no rule granting it is refused: handling TCP bind
  // and connect and granting connect to a few ports refuses the rest
  // (security/landlock/net.c, -EACCES).
  out.tcp_handled = out.abi >= NET_ABI;
  RulesetAttr attr{.handled_access_fs = handled,
                   .handled_access_net = out.tcp_handled ? NET_BIND_TCP | NET_CONNECT_TCP : 0};
  UniqueFd ruleset{static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0))};
  if (!ruleset) throw failed("creating the ruleset");
  for (const auto& dir : rules.read_only) add_rule(ruleset.get(), dir, READ & handled);
  for (const auto& dir : rules.read_write) add_rule(ruleset.get(), dir, (READ | WRITE) & handled);
  for (const auto& dir : rules.read_remove) add_rule(ruleset.get(), dir, (READ | REMOVE) & handled);
  for (const auto& path : rules.read_if_present)
    if (!add_read_rule_if_present(ruleset.get(), path, handled)) out.skipped.push_back(path);
  if (out.tcp_handled)
    for (const std::uint16_t port : rules.tcp_connect_ports) add_port_rule(ruleset.get(), port);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) throw failed("PR_SET_NO_NEW_PRIVS");
  if (::syscall(SYS_landlock_restrict_self, ruleset.get(), 0) < 0) throw failed("restricting the worker");
  out.applied = true;
  return out;
}

}  // namespace ondemand::worker
