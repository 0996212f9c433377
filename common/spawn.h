// Starting a child process from one launch description. The child gets
// exactly what the description names: its argv, its environment (explicit,
// never the parent's wholesale), the fds of `fds` at the numbers given, and
// nothing else: every other fd is closed between fork and exec whatever its
// close-on-exec flag, so a leaked dup(2) in the parent cannot reach it.
// Stdin, stdout and stderr (0..2) are inherited unless `fds` maps them.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"

namespace ondemand {

struct FdMapping {
  int child_fd;   // number in the child
  int parent_fd;  // borrowed from the caller; may be any number, even another mapping's child_fd
};

struct LaunchSpec {
  std::filesystem::path binary;
  std::vector<std::string> args;  // after argv[0], which is `binary`
  std::vector<std::string> env;   // "NAME=value": the child's whole environment
  std::vector<FdMapping> fds;

  // Credentials, applied in the child before exec when set, in this order:
  // drop_capabilities empties the bounding and ambient sets (that needs
  // CAP_SETPCAP, so it comes while still root), then supplementary groups,
  // setresgid, setresuid (real, effective and saved: no way back), then
  // drop_capabilities clears the permitted, effective and inheritable sets
  // (a uid change from root already empties permitted and effective unless
  // SECBIT_KEEP_CAPS; this makes it explicit), then no_new_privs. Any of
  // them failing is exit 127: a child never runs with half its privileges
  // dropped.
  std::optional<std::vector<gid_t>> groups;
  std::optional<gid_t> gid;
  std::optional<uid_t> uid;
  bool drop_capabilities = false;
  bool no_new_privs = false;
};

struct Launched {
  pid_t pid = -1;
  UniqueFd pidfd;  // CLOEXEC; readable once the child ends; waitid(P_PIDFD) reaps it
};

// fork + exec. Only async-signal-safe calls run in the child; it starts with
// an empty signal mask and every handler at SIG_DFL (a program that ignores
// SIGPIPE sets that itself). Throws std::runtime_error when fork or
// pidfd_open fail or the spec is invalid (a child_fd twice or negative).
// Failures in the child (dup2, credentials, exec) show up as exit 127.
Launched launch(const LaunchSpec& spec);

// The parent's environment entries whose names are in `names`; an entry
// ending in '*' is a prefix ("ONDEMAND_*"). For building LaunchSpec::env.
std::vector<std::string> environment_subset(std::span<const std::string_view> names);

}  // namespace ondemand
