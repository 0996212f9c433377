// Starting a worker process and reaping it, with a pidfd as its handle: a
// pidfd cannot be confused with a recycled pid, it becomes readable when the
// process dies, and waitid(P_PIDFD) reaps exactly that child.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace ondemand::supervisor {

struct SpawnedWorker {
  pid_t pid = -1;
  UniqueFd pidfd;
  UniqueFd channel;  // our end of the handoff channel
};

// Launches `binary` with `args` (common/spawn.h): the child's end of a fresh
// SOCK_SEQPACKET pair becomes its fd 3, and it inherits no other fd beyond
// 0..2 and only a filtered environment. Throws std::runtime_error when
// socketpair, fork or pidfd_open fail; an exec failure shows up as the
// child exiting with 127.
SpawnedWorker spawn_worker(const std::filesystem::path& binary, const std::vector<std::string>& args);

struct ExitStatus {
  bool exited = false;     // true: normal exit with `code`; false: killed by signal `code`
  int code = 0;
  bool known = true;       // false: not our child (adopted), so the status is unknown
};

// Reaps the child behind `pidfd`; nullopt if it has not ended yet. For a
// process that is not our child (a worker adopted from a previous
// supervisor) call it only once the pidfd is readable: it then reports an
// unknown status, the process having exited (and its fds closed).
std::optional<ExitStatus> try_reap(int pidfd);

// pidfd for an existing process (an adopted worker). Throws on failure.
UniqueFd open_pidfd(pid_t pid);

// Number of open fds of this process (for leak checks).
std::size_t count_open_fds();

}  // namespace ondemand::supervisor
