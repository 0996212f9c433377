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
//
// One object, one file per life cycle: supervisor.cc starts a worker and
// stops us, failover.cc replaces a worker that died (restart policy, spare
// pool), upgrade.cc runs a rolling upgrade, control_commands.cc answers
// ondemandctl. The parts that own something run alone: WorkerHandle (a
// process, its pidfd and channel), StateDir (the files workers read),
// BindingStore (blob bindings), ControlServer, MetricsServer.
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

#include "config/config.h"
#include "common/shared_state.h"
#include "metrics/supervisor_metrics.h"
#include "proto/channel.h"
#include "supervisor/adopt.h"
#include "supervisor/binding_store.h"
#include "supervisor/cache_device.h"
#include "supervisor/control_server.h"
#include "supervisor/fanotify_cache.h"
#include "supervisor/metrics_server.h"
#include "supervisor/restart_policy.h"
#include "supervisor/state_dir.h"
#include "supervisor/worker_handle.h"
#include "supervisor/worker_process.h"

namespace ondemand::supervisor {

class Supervisor {
 public:
  // Fresh start: `cache` was just bound (or came back from systemd's fd store).
  Supervisor(Config config, std::filesystem::path config_path, BoundCache cache,
             RestartPolicyOptions policy = {});
  // fanotify front end: `group` holds the group, the record, the cache files.
  Supervisor(Config config, std::filesystem::path config_path, FanotifyCache group,
             RestartPolicyOptions policy = {});
  // Restart: take over a running worker and its device fd.
  Supervisor(Config config, std::filesystem::path config_path, AdoptedWorker adopted,
             RestartPolicyOptions policy = {});
  ~Supervisor();
  // Runs until SIGTERM/SIGINT or `ondemandctl stop`; returns the exit code.
  int run();

 private:
  using Handle = std::unique_ptr<WorkerHandle>;

  // supervisor.cc: one worker's start (spawn, handshake, serving), the
  // health check, and our own stop.
  void init_shared_state();
  Handle spawn(const std::filesystem::path& binary, bool standby, std::string* why, bool spare = false);
  void watch(WorkerHandle& w);
  void complete_handshake(WorkerHandle& w, const proto::msg::Hello& hello);
  void start_worker();
  void on_message(WorkerHandle& w, const proto::Message& m);
  void on_serving(WorkerHandle& w);
  void on_exit(WorkerHandle& w, const ExitStatus& status);
  void check_health();
  void bind_control();
  void shutdown();
  bool leave_worker_for_restart();
  void finish_shutdown_if_done();
  void set_state(proto::WorkerState state);
  void retire(Handle w, const char* why);

  // failover.cc: the serving worker died; the restart policy, the spare pool.
  void on_current_exit(const ExitStatus& status);
  void name_death_request(pid_t pid, bool own_death);
  void count_spare_at_failover();
  void on_spare_exit();
  void report_seccomp_call_later(pid_t pid);
  void maybe_spawn_spare();
  bool promote_spare();
  bool spare_runnable();
  bool await_spare();
  void end_spare_wait(bool ready);

  // upgrade.cc: a rolling upgrade (ondemandctl upgrade).
  void start_upgrade(const std::filesystem::path& binary, ControlServer::Reply reply);
  void begin_handover();
  void on_incoming_exit(const std::string& desc);
  void finish_upgrade(bool ok, const std::string& message);

  // fanotify.cc: the fanotify front end's handshake and mounts.
  void hand_group(WorkerHandle& w);  // throws ChannelError
  void send_cache_files(WorkerHandle& w, const std::vector<std::size_t>& indexes);  // throws ChannelError
  void add_blobs(const proto::control::AddBlobs& request, ControlServer::Reply reply);
  void on_cache_files_added(WorkerHandle& w, std::uint64_t count);
  void answer_mounts(std::uint64_t count, const char* how);
  // Mount points of images mounted from our cache files (/proc/self/mountinfo).
  std::vector<std::string> fanotify_mounts() const;

  // control_commands.cc: what ondemandctl asks.
  void handle_control(const proto::ControlRequest& request, ControlServer::Reply reply);
  proto::control::StatusReply status() const;
  proto::ControlReply reload();
  void restart_worker();

  Config config_;
  std::filesystem::path config_path_;
  BoundCache cache_;                    // cachefiles front end
  std::optional<FanotifyCache> fanotify_;  // fanotify front end
  // add-blobs requests waiting for the serving worker to hold `count` files.
  struct PendingMount {
    std::uint64_t count = 0;
    std::vector<std::string> paths;
    ControlServer::Reply reply;
    std::shared_ptr<boost::asio::steady_timer> deadline;
  };
  std::vector<PendingMount> pending_mounts_;
  RestartPolicy policy_;
  boost::asio::io_context loop_{1};
  boost::asio::signal_set signals_;
  boost::asio::steady_timer restart_timer_;
  boost::asio::steady_timer health_timer_;
  boost::asio::steady_timer shutdown_timer_;
  boost::asio::steady_timer upgrade_timer_;
  boost::asio::steady_timer spare_timer_;
  boost::asio::steady_timer spare_wait_timer_;  // bounds a failover's wait for a starting spare
  std::optional<SharedStateMapping> shm_;
  WorkerLaunch worker_launch_;  // identity and shared memory every spawn gets (common/sandbox.h)
  std::optional<StateDir> state_dir_;        // config snapshot, worker.pid
  std::optional<BindingStore> bindings_;     // <data_dir>/bindings.json and the worker's copies
  Handle worker_;    // the one serving (or starting)
  Handle incoming_;  // an upgrade's successor, in standby
  Handle spare_;     // warm standby for the next failover
  std::vector<Handle> retired_;  // told to stop, not yet reaped
  unsigned spare_failures_ = 0;
  bool awaiting_spare_ = false;  // a failover waits for the spare's handshake (failover.cc await_spare)
  std::unique_ptr<ControlServer> control_;
  unsigned health_ticks_ = 0;
  std::unique_ptr<MetricsServer> metrics_;
  metrics::SupervisorRecorder recorder_;
  ControlServer::Reply upgrade_reply_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_death_{};
  // The request the last workers that died on their own were stuck on
  // (failover.cc name_death_request), and at how many deaths in a row.
  std::string death_request_;
  unsigned death_request_repeats_ = 0;
  bool shutting_down_ = false;
  bool ready_notified_ = false;
};

}  // namespace ondemand::supervisor
