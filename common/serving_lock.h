// Who may read /dev/cachefiles: an exclusive flock(2) on
// <state_dir>/serving.lock, taken by a worker before its first read() of the
// device and held until it exits (issue 9, hole 5: two readers of one device).
//
// Why a file in state_dir and not a lock on the device itself: flock and OFD
// locks belong to the open file description, and the supervisor, the worker
// and its spare all share one description of /dev/cachefiles (it travels over
// SCM_RIGHTS), so such a lock cannot tell one reader from another; and every
// cache (each tag) opens the same /dev/cachefiles inode, so an inode-wide lock
// would make two unrelated caches exclude each other. A state_dir belongs to
// exactly one cache, so its lock file does not.
//
// A supervisor that finds no listener on worker.sock probes this lock before
// it starts a worker of its own (supervisor/serving_guard.h). The holder
// writes its pid into the file, so the probe can name it. The lock dies with
// its holder's last fd, so a killed worker frees it once the kernel has closed
// its files (before its pidfd reports the exit).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/unique_fd.h"

namespace ondemand {

inline constexpr std::string_view SERVING_LOCK_NAME = "serving.lock";

struct ServingLock {
  UniqueFd fd;        // valid while held; closing it releases the lock
  pid_t holder = -1;  // when not taken: the pid the holder wrote (-1 unknown)
  std::string error;  // when not taken: why, naming the path
  bool held() const { return fd.valid(); }
};

// Takes the lock, retrying for up to `wait` while someone else holds it (a
// predecessor that is handing over and about to exit, or a supervisor's
// probe). Writes our pid into the file. The fd is O_CLOEXEC.
ServingLock take_serving_lock(const std::filesystem::path& state_dir,
                              std::chrono::milliseconds wait = std::chrono::milliseconds(0));

struct ServingLockProbe {
  bool held = false;
  pid_t holder = -1;  // when held: the pid in the file (-1 unknown)
  std::string error;  // the probe itself failed (then held is false)
};

// Whether some process holds the lock now. A missing file means no holder.
ServingLockProbe probe_serving_lock(const std::filesystem::path& state_dir);

}  // namespace ondemand
