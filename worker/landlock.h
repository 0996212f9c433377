// The worker's file access rules (config sandbox_landlock), on Landlock's
// raw system calls (<linux/landlock.h>; libc has no wrappers).
//
// Applied by the worker to itself once it holds every fd it needs from
// outside (the device, the shared memory, the blob_dir handle): fds opened
// before the rules keep their access, and the kernel's own cache work runs
// with the cache's credentials (cachefiles_begin_secure), which carry no
// Landlock domain. Landlock binds the calling thread and the threads it
// creates later, so it must run before the I/O pool and the culler's thread
// exist. What the worker opens by path afterwards, and so what the rules
// allow:
//   - blob_dir: read (the blobs, openat2 beneath it);
//   - state_dir: read and write (serving.lock, worker.sock: created under a
//     temporary name and renamed over the old one, and unlinked at exit);
//   - cache_dir: read (the culler's walk; only a root worker can enter it),
//     and for a worker that culls also removing files and directories: the
//     kernel buries culled objects in <cache_dir>/graveyard and the daemon
//     deletes them (cull.h); without that right the graveyard keeps every
//     culled byte and the cache fills (ENOBUFS at mount).
// Nothing else: not /proc, not /etc, not /dev. The anonymous fds of OPEN
// requests come from the kernel and are not opened by path.
//
// Handled rights are those of ABI 1..5 (execute, read/write files, read
// directories, create/remove every kind of entry, refer, truncate, ioctl on
// devices) as far as the running kernel has them; TCP rights (ABI 4) and
// scopes (ABI 6) are not handled.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace ondemand::worker {

struct LandlockRules {
  std::vector<std::filesystem::path> read_only;
  std::vector<std::filesystem::path> read_write;
  std::vector<std::filesystem::path> read_remove;  // read, and unlink/rmdir beneath
};

struct LandlockOutcome {
  int abi = 0;           // the kernel's Landlock ABI; 0: none
  bool applied = false;  // false: the kernel has no Landlock (why_not says so)
  std::string why_not;
};

// The running kernel's Landlock ABI version (LANDLOCK_CREATE_RULESET_VERSION),
// 0 when it has none (ENOSYS: not built in; EOPNOTSUPP: not enabled at boot).
int landlock_abi();

// Restricts the calling thread (and threads it starts later) to `rules`.
// A kernel without Landlock is not an error: the outcome says so. Throws
// std::runtime_error naming the path or the step on any other failure.
LandlockOutcome restrict_file_access(const LandlockRules& rules);

}  // namespace ondemand::worker
