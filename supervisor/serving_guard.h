// Before a supervisor starts a worker of its own (fd store or fresh bind), it
// makes sure no worker already reads the device (issue 9, hole 5): a worker
// that outlived its supervisor but does not answer on worker.sock (a handover
// in progress, a removed socket file, a state_dir path too long for a unix
// socket) still holds <state_dir>/serving.lock (common/serving_lock.h).
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>

#include "supervisor/adopt.h"

namespace ondemand::supervisor {

// How long a restarted supervisor keeps retrying worker.sock while the lock
// is held: longer than an upgrade's drain and object transfer.
inline constexpr std::chrono::milliseconds SERVING_WORKER_WAIT{10'000};

// nullopt when no worker holds the lock (starting one is safe). While one
// does, retries try_adopt every `interval` up to `wait`: the adopted worker
// when it answers; throws AdoptError, naming the holder's pid and the lock,
// when the bound passes (starting a second reader is never the answer).
std::optional<AdoptedWorker> adopt_serving_worker(const std::filesystem::path& state_dir,
                                                  std::chrono::milliseconds wait = SERVING_WORKER_WAIT,
                                                  std::chrono::milliseconds interval = std::chrono::milliseconds(200));

}  // namespace ondemand::supervisor
