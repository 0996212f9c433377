// The worker's half of its sandbox (the supervisor's: common/sandbox.h):
// what it maps, what it gives up, what it locks itself into.
#pragma once

#include <string>

#include "common/shared_state.h"
#include "config/config.h"

namespace ondemand::worker {

// The supervisor's segment: the inherited fd named by ONDEMAND_SHM_FD when
// there is one (then closed), else opened by name. Throws SharedStateError.
SharedStateMapping attach_worker_shm(const std::string& name);

// Whether this worker can cull: walking <cache_dir> needs root (cachefiles'
// directories are 0700 root). Logs once why not when cache_cull is on.
bool culling_possible(const Config& config);

// Locks the worker in, as config sandbox_landlock and sandbox_seccomp say:
// Landlock first (worker/landlock.h: blob_dir read, state_dir read/write,
// cache_dir read), then the system call filter (worker/seccomp_filter.h).
// Call once the worker holds the device, the shared memory and the
// blob_dir handle, before any thread is started and before the first
// kernel message is read. A kernel without Landlock gets one warning;
// anything else that fails throws ConfigError naming the key (set it to
// false to run without), so a worker that cannot lock itself in parks
// instead of serving unconfined or crash-looping.
void lock_down(const Config& config);

}  // namespace ondemand::worker
