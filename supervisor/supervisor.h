// ondemand-supervisor's top object. Tiny on purpose: it holds the bound
// /dev/cachefiles fd for its whole life and keeps exactly one worker serving
// from it. It never reads a kernel request, never touches blob data and never
// holds an object's anonymous fd.
//
// Worker life cycle, as steps:
//   1. spawn (fork+exec), channel on fd 3, pidfd as the handle;
//   2. handshake: hello both ways, then "device" with the fd (SCM_RIGHTS);
//   3. wait for "serving"; from then on check its heartbeat;
//   4. on death (pidfd readable): reap, classify the exit, ask the restart
//      policy, spawn the next one. Only a reaped worker is certainly not
//      reading the device any more, and the next worker's `restore` relies
//      on that.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/config.h"
#include "common/shared_state.h"
#include "supervisor/cache_device.h"
#include "supervisor/control_server.h"
#include "supervisor/restart_policy.h"
#include "supervisor/worker_process.h"

namespace ondemand::supervisor {

class Supervisor {
 public:
  Supervisor(Config config, std::filesystem::path config_path, BoundCache cache,
             RestartPolicyOptions policy = {});
  ~Supervisor();
  // Runs until SIGTERM/SIGINT; returns the process exit code.
  int run();

 private:
  struct Running;
  void start_worker();
  void watch_worker();
  void watch_channel();
  void on_worker_exit(const ExitStatus& status);
  void check_health();
  void kill_worker(const char* why);
  void shutdown();
  void write_pid_file(pid_t pid);
  void handle_control(const proto::ControlRequest& request, ControlServer::Reply reply);
  nlohmann::json status() const;
  void restart_worker();

  Config config_;
  std::filesystem::path config_path_;
  BoundCache cache_;
  RestartPolicy policy_;
  boost::asio::io_context loop_{1};
  boost::asio::signal_set signals_;
  boost::asio::steady_timer restart_timer_;
  boost::asio::steady_timer health_timer_;
  boost::asio::steady_timer shutdown_timer_;
  std::optional<SharedStateMapping> shm_;
  std::unique_ptr<Running> worker_;
  std::unique_ptr<ControlServer> control_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_death_{};
  bool shutting_down_ = false;
};

}  // namespace ondemand::supervisor
