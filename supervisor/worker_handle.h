// One worker process as the supervisor sees it: the pidfd that is its
// handle, our end of its channel, and the watches on both. It reads and
// decodes the channel and reports each message and the exit upward; it
// decides nothing about what they mean (supervisor/supervisor.h does).
//
// Events arrive only while the handle lives: destroying it closes the
// pidfd and the channel and cancels both watches, so a handler of a worker
// that is gone can never run.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/unique_fd.h"
#include "proto/channel.h"
#include "proto/control.h"
#include "supervisor/worker_process.h"

namespace ondemand::supervisor {

class WorkerHandle {
 public:
  using Clock = std::chrono::steady_clock;
  struct Events {
    std::function<void(WorkerHandle&, const proto::Message&)> message;
    std::function<void(WorkerHandle&, const ExitStatus&)> exit;
  };

  WorkerHandle(boost::asio::io_context& loop, pid_t pid, UniqueFd pidfd, UniqueFd channel);
  ~WorkerHandle();
  WorkerHandle(const WorkerHandle&) = delete;
  WorkerHandle& operator=(const WorkerHandle&) = delete;

  // Starts watching the pidfd and the channel. A message that does not
  // decode is answered "unrecognized"; before the handshake it kills the
  // worker instead (its hello could not be read: nothing later can be
  // trusted).
  void watch(Events events);
  // Kills the worker unless the handshake completed within `bound`.
  void bound_handshake(std::chrono::steady_clock::duration bound);
  void handshake_done();

  // Throws ChannelError.
  void send(const proto::Message& m, std::span<const int> fds = {});
  void send_quietly(const proto::Message& m);
  // SIGKILL through the pidfd (it cannot hit a recycled pid); logged once.
  void kill(const char* why);
  // "stop" over the channel; SIGKILL when the channel is gone.
  void stop(const char* why);
  // Its state for `ondemandctl status`.
  proto::control::WorkerInfo info() const;
  // Logs, every 10 s, that a worker we SIGKILLed is still not reaped.
  void warn_unreaped();

  const pid_t pid;
  const UniqueFd pidfd;
  const UniqueFd channel;
  std::uint64_t generation = 0;
  std::string version = "?";
  std::filesystem::path binary;
  Clock::time_point started = Clock::now();
  bool handshake_ok = false;
  bool standby = false;
  bool spare = false;
  std::uint64_t cache_files = 0;  // fanotify: cache files it holds (handed, or confirmed added)
  bool serving = false;
  bool adopted = false;
  bool handed_over = false;    // outgoing worker said "handed-over"
  bool handover_sent = false;  // we asked it to hand over
  bool killed_by_us = false;
  Clock::time_point killed_at{};  // when killed_by_us was set
  // Called once the handshake completed (the device fd was handed over).
  std::function<void()> on_ready;

 private:
  void watch_exit();
  void watch_channel();

  boost::asio::io_context& loop_;
  Events events_;
  std::shared_ptr<char> alive_ = std::make_shared<char>();  // handlers hold a weak_ptr to it
  std::unique_ptr<boost::asio::steady_timer> handshake_timer_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> exit_watch_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> channel_watch_;
  Clock::time_point unreaped_logged_{};
};

}  // namespace ondemand::supervisor
