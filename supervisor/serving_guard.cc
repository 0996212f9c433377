#include "supervisor/serving_guard.h"

#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/serving_lock.h"
#include "proto/channel.h"

namespace ondemand::supervisor {

std::optional<AdoptedWorker> adopt_serving_worker(const std::filesystem::path& state_dir,
                                                  std::chrono::milliseconds wait,
                                                  std::chrono::milliseconds interval) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  bool warned = false;
  for (;;) {
    auto probe = probe_serving_lock(state_dir);
    if (!probe.error.empty()) {
      // Cannot tell: refuse rather than risk two readers.
      throw AdoptError(fmt::format("cannot check whether a worker reads the device: {}", probe.error));
    }
    if (!probe.held) {
      if (warned) spdlog::info("the worker that held {} is gone; starting our own", std::string(SERVING_LOCK_NAME));
      return std::nullopt;
    }
    const auto holder = probe.holder > 0 ? fmt::format("pid {}", probe.holder) : std::string("an unknown pid");
    if (!warned) {
      spdlog::warn("a worker ({}) holds {} and so reads the device, but does not answer on {}: retrying adoption "
                   "for up to {} ms, never starting a second reader",
                   holder, (state_dir / std::string(SERVING_LOCK_NAME)).string(), (state_dir / std::string(proto::WORKER_SOCKET_NAME)).string(),
                   wait.count());
      warned = true;
    }
    if (std::chrono::steady_clock::now() >= deadline)
      throw AdoptError(fmt::format(
          "a worker ({}) reads /dev/cachefiles (it holds {}) but cannot be adopted through {}; refusing to start a "
          "second reader. Restore its socket (or stop that worker) and start again",
          holder, (state_dir / std::string(SERVING_LOCK_NAME)).string(), (state_dir / std::string(proto::WORKER_SOCKET_NAME)).string()));
    std::this_thread::sleep_for(interval);
    if (auto adopted = try_adopt(state_dir)) return adopted;
  }
}

}  // namespace ondemand::supervisor
