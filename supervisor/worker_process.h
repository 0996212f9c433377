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
#include "config/config.h"

namespace ondemand::supervisor {

struct SpawnedWorker {
  pid_t pid = -1;
  UniqueFd pidfd;
  UniqueFd channel;  // our end of the handoff channel
};

// How every worker is started (common/sandbox.h): the user it runs as
// (none: it stays root with our capabilities) and the shared memory it
// inherits as WORKER_SHM_FD.
// Says which of the worker's files in state_dir open_state_dir_to_worker
// (common/sandbox.h) gave back, and why that happens; nothing when none.
void log_given_back(const std::filesystem::path& state_dir, const std::vector<std::string>& names,
                    const WorkerIdentity& id);

struct WorkerLaunch {
  std::optional<WorkerIdentity> identity;
  std::string shm_name;  // empty: no segment passed
  // The worker installs seccomp or Landlock (sandbox_seccomp,
  // sandbox_landlock). A sanitized supervisor then turns LeakSanitizer off
  // in the worker's ASAN_OPTIONS: its exit-time check needs ptrace, wait4
  // and /proc/<pid>/task, which the sandbox refuses, and the worker would
  // die by SIGSYS at every graceful exit instead of reporting.
  bool sandboxed = false;
};

// Resolves worker_user/worker_group when sandbox_drop_privileges is on,
// checks that user can read blob_dir and the config file, and opens
// state_dir to its group. Throws ConfigError naming the key or the path.
WorkerLaunch prepare_worker_launch(const Config& config, const std::filesystem::path& config_path,
                                   std::string shm_name);

// Launches `binary` with `args` (common/spawn.h): the child's end of a fresh
// SOCK_SEQPACKET pair becomes its fd 3, the shared memory its fd 4, and it
// inherits no other fd beyond 0..2 and only a filtered environment. With an
// identity it runs as that user and group, no supplementary groups, no
// capabilities (bounding set included) and no_new_privs. Throws
// std::runtime_error when socketpair, fork or pidfd_open fail; an exec or
// credential failure shows up as the child exiting with 127.
SpawnedWorker spawn_worker(const std::filesystem::path& binary, const std::vector<std::string>& args,
                           const WorkerLaunch& launch = {});

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
