// ondemand-worker with config frontend "fanotify": serves FAN_PRE_ACCESS
// events on the cache files the supervisor made, through the same engine
// and backends as the cachefiles Worker (worker.h).
//
// Startup, as steps:
//   1. hello both ways; receive the cache files (each with its writer fd)
//      and then "fanotify-group" with the group fd and the pending-event
//      record's fd (proto/channel.h);
//   2. attach the shared state, open the backend, lock down (sandbox.h);
//   3. unless in standby: recover the record (finish every event a dead
//      predecessor read and did not answer, frontends/fanotify/server.h),
//      start filling the metadata blobs whole, read events, say "serving".
// A standby (spare, or an upgrade's successor) holds everything but reads
// nothing until "takeover", or until its predecessor's hand-over is done.
// Like the cachefiles worker it keeps its own references (group, record,
// cache files) and serves on if the supervisor dies, listening on
// <state_dir>/worker.sock; the next supervisor adopts it and gets back
// everything it had handed out (proto/channel.h, "adopt-fanotify").
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "backends/backend.h"
#include "common/shared_state.h"
#include "common/unique_fd.h"
#include "config/config.h"
#include "engine/engine.h"
#include "frontends/fanotify/cache_file.h"
#include "frontends/fanotify/engine_filler.h"
#include "frontends/fanotify/pending_record.h"
#include "frontends/fanotify/server.h"
#include "proto/channel.h"
#include "proto/exit_codes.h"
#include "worker/adoption_listener.h"

namespace ondemand::worker {

class FanotifyWorker {
 public:
  FanotifyWorker(Config config, UniqueFd channel);
  ~FanotifyWorker();
  proto::ExitCode run();

 private:
  struct Handoff {
    UniqueFd group;
    UniqueFd record;
    proto::msg::FanotifyGroup group_msg;
    std::vector<proto::msg::CacheFileEntry> entries;
    std::vector<UniqueFd> writers;
  };
  Handoff handshake();
  // Appends cache files (handshake or run time). Returns how many were bad.
  void add_files(const std::vector<proto::msg::CacheFileEntry>& entries, std::vector<UniqueFd> writers);
  void fill_whole(fanotify::CacheFile& file);
  void start_serving(const char* why);
  void heartbeat();
  void stop(const char* why);
  void watch_channel();
  void on_channel_message(const proto::Message& m, std::vector<UniqueFd> fds);
  void hand_over(UniqueFd peer);
  void receive_hand_over(UniqueFd peer);
  void listen_for_supervisor();
  void finish_adoption(UniqueFd conn, pid_t peer_pid);

  Config config_;
  UniqueFd channel_;
  boost::asio::io_context loop_{1};
  std::optional<SharedStateMapping> shm_;
  proto::SharedState local_state_{};
  proto::SharedState* state_ = &local_state_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Engine> engine_;
  UniqueFd group_;
  std::optional<fanotify::PendingRecord> record_;
  UniqueFd record_fd_;  // kept to hand back to an adopting supervisor
  fanotify::CacheFileSet files_;
  std::vector<proto::msg::CacheFileEntry> entries_;  // by cache-file index
  std::unique_ptr<fanotify::EngineFiller> filler_;
  std::unique_ptr<fanotify::Server> server_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> channel_watch_;
  std::unique_ptr<AdoptionListener> adoption_;  // worker.sock
  boost::asio::signal_set signals_{loop_};
  boost::asio::steady_timer heartbeat_timer_{loop_};
  std::uint64_t generation_ = 0;
  bool serving_ = false;
  bool stopping_ = false;
  bool spare_ = false;
  bool supervisor_gone_ = false;
  proto::ExitCode exit_code_ = proto::ExitCode::OK;
};

}  // namespace ondemand::worker
