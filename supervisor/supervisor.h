// ondemand-supervisor's top object. Small on purpose: it holds the bound
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
// Rolling upgrade (ondemandctl upgrade): a second, "incoming" worker starts
// in standby, the current one hands it its objects over a socketpair and
// exits; see proto/channel.h for the conversation and its failure paths.
// Supervisor restart: a worker that outlived its supervisor is adopted
// (supervisor/adopt.h) instead of binding the device again.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "backends/bindings/bindings.h"
#include "config/config.h"
#include "common/shared_state.h"
#include "metrics/supervisor_metrics.h"
#include "proto/channel.h"
#include "supervisor/adopt.h"
#include "supervisor/cache_device.h"
#include "supervisor/control_server.h"
#include "supervisor/metrics_server.h"
#include "supervisor/restart_policy.h"
#include "supervisor/worker_process.h"

namespace ondemand::supervisor {

class Supervisor {
 public:
  // Fresh start: `cache` was just bound (or came back from systemd's fd store).
  Supervisor(Config config, std::filesystem::path config_path, BoundCache cache,
             RestartPolicyOptions policy = {});
  // Restart: take over a running worker and its device fd.
  Supervisor(Config config, std::filesystem::path config_path, AdoptedWorker adopted,
             RestartPolicyOptions policy = {});
  ~Supervisor();
  // Runs until SIGTERM/SIGINT or `ondemandctl stop`; returns the exit code.
  int run();

 private:
  struct Running;
  enum class Slot { CURRENT, INCOMING };

  void init_shared_state();
  std::unique_ptr<Running> spawn(const std::filesystem::path& binary, bool standby, std::string* why,
                                 bool spare = false);
  bool ours(const Running* w) const;
  void complete_handshake(Running* w, const proto::msg::Hello& hello);
  void begin_handover();
  void maybe_spawn_spare();
  bool promote_spare();
  void retire(std::unique_ptr<Running> w, const char* why);
  void start_worker();
  void watch_exit(Running* w);
  void watch_channel(Running* w);
  void on_message(Running* w, const proto::Message& m);
  void on_exit(Running* w, const ExitStatus& status);
  void report_seccomp_call_later(pid_t pid);
  void on_current_exit(const ExitStatus& status);
  void on_serving(Running* w);
  void check_health();
  void bind_control();
  void keep_state_dir();
  void warn_unreaped(Running* w);
  void kill(Running* w, const char* why);
  void shutdown();
  bool leave_worker_for_restart();
  void finish_shutdown_if_done();
  void write_pid_file(pid_t pid);
  void set_state(proto::WorkerState state);
  void handle_control(const proto::ControlRequest& request, ControlServer::Reply reply);
  proto::control::StatusReply status() const;
  proto::ControlReply reload();
  // Blob bindings (backends/bindings): the supervisor owns
  // <data_dir>/bindings.json and publishes the worker's copies in state_dir.
  void load_bindings();
  std::string publish_bindings();
  std::string publish_credentials(const Config& config);
  proto::ControlReply bind(const proto::control::Bind& request);
  proto::ControlReply unbind(const proto::control::Unbind& request);
  proto::control::BindingsReply list_bindings() const;
  // Writes `text` as the snapshot workers start from; "" or why not.
  std::string write_config_snapshot(const std::string& text);
  std::error_code reopen_state_dir();
  std::string snapshot_text_;  // what the snapshot file holds, to rewrite it if state_dir goes
  void restart_worker();
  void start_upgrade(const std::filesystem::path& binary, ControlServer::Reply reply);
  void finish_upgrade(bool ok, const std::string& message);

  Config config_;
  bindings::Bindings bindings_;  // what <data_dir>/bindings.json holds
  std::filesystem::path config_path_;
  std::filesystem::path snapshot_path_;  // <state_dir>/worker-config.json, what workers read
  BoundCache cache_;
  RestartPolicy policy_;
  boost::asio::io_context loop_{1};
  boost::asio::signal_set signals_;
  boost::asio::steady_timer restart_timer_;
  boost::asio::steady_timer health_timer_;
  boost::asio::steady_timer shutdown_timer_;
  boost::asio::steady_timer upgrade_timer_;
  std::optional<SharedStateMapping> shm_;
  WorkerLaunch worker_launch_;  // identity and shared memory every spawn gets (common/sandbox.h)
  std::unique_ptr<Running> worker_;    // the one serving (or starting)
  std::unique_ptr<Running> incoming_;  // an upgrade's successor, in standby
  std::unique_ptr<Running> spare_;     // warm standby for the next failover
  std::vector<std::unique_ptr<Running>> retired_;  // told to stop, not yet reaped
  boost::asio::steady_timer spare_timer_;
  unsigned spare_failures_ = 0;
  std::unique_ptr<ControlServer> control_;
  unsigned health_ticks_ = 0;
  std::string state_dir_error_;  // the last one logged, so it is logged once
  std::unique_ptr<MetricsServer> metrics_;
  metrics::SupervisorRecorder recorder_;
  ControlServer::Reply upgrade_reply_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_death_{};
  bool shutting_down_ = false;
  bool ready_notified_ = false;
};

}  // namespace ondemand::supervisor
