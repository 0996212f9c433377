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

}  // namespace ondemand::worker
