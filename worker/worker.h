// ondemand-worker's top object: handshake with the supervisor, receive the
// device fd, restore, serve until told to stop; hand the object table over
// on upgrade; let a new supervisor adopt it when the old one died.
//
// Startup, as steps:
//   1. hello both ways on the channel; agree on a protocol version;
//   2. receive "device" with the /dev/cachefiles fd and check it is the
//      character device the supervisor announced (fstat st_rdev);
//   3. attach the shared state and open the backend;
//   4. unless started as an upgrade's standby: write `restore` (the
//      supervisor starts us only once every previous worker is reaped, so
//      nothing else can hold a request we re-queue) and read;
//   5. say "serving", listen on <state_dir>/worker.sock for a future
//      supervisor, and run the event loop.
// The worker keeps its own reference to the device: if the supervisor dies
// the worker serves on, and a new supervisor can adopt it.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "config/config.h"
#include "common/shared_state.h"
#include "common/unique_fd.h"
#include "proto/exit_codes.h"
#include "proto/channel.h"
#include "backends/backend.h"
#include "frontends/cachefiles/cachefiles_device.h"
#include "frontends/cachefiles/cachefiles_frontend.h"
#include "frontends/cachefiles/cull.h"
#include "engine/engine.h"
#include "worker/adoption_listener.h"

namespace ondemand::worker {

class Worker {
 public:
  Worker(Config config, UniqueFd channel);
  ~Worker();
  // Returns the exit code for main(). Throws ConfigError on bad config.
  proto::ExitCode run();

 private:
  struct Handoff {
    UniqueFd device;
    std::uint64_t generation = 0;
    std::uint64_t rdev = 0;
    std::string shm_name;
    bool restore = true;
    bool standby = false;
    bool spare = false;
  };
  Handoff handshake();
  void start_reading(bool restore);
  void stop(std::string_view why);
  void on_request_done();
  void heartbeat();
  void note_oldest_request();
  void report_serving();

  void watch_channel();
  void on_channel_message(const proto::Message& m, std::vector<UniqueFd> fds);

  // Upgrade, as the outgoing worker (A).
  void hand_over(UniqueFd peer, std::chrono::milliseconds drain);
  void stop_reading_for_handover(std::chrono::milliseconds drain);
  void call_off_handover(const std::string& why);
  void send_objects();
  // Upgrade, as the incoming worker (B).
  void receive_objects(UniqueFd peer);

  // Adoption by a new supervisor.
  void listen_for_supervisor();
  void finish_adoption(UniqueFd connection, pid_t peer_pid);
  bool listener_at_path() const { return adoption_ && adoption_->at_path(); }

  Config config_;
  UniqueFd channel_;
  boost::asio::io_context loop_{1};
  std::optional<SharedStateMapping> shm_;
  proto::SharedState local_state_{};
  proto::SharedState* state_ = &local_state_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<CachefilesDevice> device_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<CachefilesFrontend> frontend_;  // destroyed before the engine it uses
  std::unique_ptr<DeviceCullCommands> cull_commands_;
  std::unique_ptr<Culler> culler_;  // also notices a dead cache
  proto::ExitCode exit_code_ = proto::ExitCode::OK;
  std::unique_ptr<boost::asio::posix::stream_descriptor> channel_watch_;
  std::unique_ptr<AdoptionListener> adoption_;  // worker.sock
  std::optional<std::string> noted_request_;  // what the shared memory's oldest_request says
  boost::asio::signal_set signals_{loop_};
  boost::asio::steady_timer heartbeat_timer_{loop_};
  boost::asio::steady_timer drain_deadline_{loop_};
  std::uint64_t generation_ = 0;
  std::uint64_t rdev_ = 0;
  bool reading_ = false;
  std::uint64_t reading_since_ns_ = 0;  // CLOCK_MONOTONIC of start_reading()
  bool first_reply_logged_ = false;
  UniqueFd serving_lock_;  // common/serving_lock.h: held from the first read() to exit
  boost::asio::steady_timer serving_lock_retry_{loop_};
  unsigned serving_lock_tries_ = 0;
  bool stopping_ = false;
  bool supervisor_gone_ = false;
  bool spare_ = false;  // standby kept for failover (not an upgrade's successor)
  // Set while handing over: the peer socket, waiting for the successor's
  // hello (greeting_, still reading), then for in-flight == 0
  // (handing_over_, not reading).
  UniqueFd handover_peer_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> peer_watch_;  // watches handover_peer_
  boost::asio::steady_timer greeting_deadline_{loop_};
  bool greeting_ = false;
  bool handing_over_ = false;
};

}  // namespace ondemand::worker
