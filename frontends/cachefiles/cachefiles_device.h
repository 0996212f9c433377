// The cachefiles front end: reads requests from /dev/cachefiles, hands them
// to the Engine, and writes the kernel's replies.
//
// Reading: wait until the device is readable, then drain. In on-demand mode
// read() returns 0, not EAGAIN, when nothing is pending
// (cachefiles_ondemand_daemon_read), so both end a drain. A failed read() of
// one message (EEXIST when a re-delivered OPEN finds its object already open,
// ENOMEM, EINTR...) is logged and the drain goes on: the kernel has already
// completed that request with the error. Reading pauses while the engine is
// at max_inflight and resumes as requests finish.
#pragma once

#include <cstdint>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "common/unique_fd.h"
#include "proto/kernel_msg.h"
#include "proto/shm_layout.h"
#include "engine/engine.h"
#include "frontends/cachefiles/replies.h"

namespace ondemand::worker {

class CachefilesDevice final : public Replies {
 public:
  CachefilesDevice(boost::asio::io_context& loop, UniqueFd device, proto::WorkerCounters& counters);

  // Starts the read loop feeding `engine`. Call once.
  void start(Engine& engine);
  // Stops taking new requests; those already read are still answered.
  void stop_reading();
  // Reads again after stop_reading() (an upgrade that was called off).
  void resume_reading();
  // Call when a request finished: resumes a drain paused at max_inflight.
  void on_capacity();
  int fd() { return device_.native_handle(); }

  int copen(std::uint32_t msg_id, std::int64_t size_or_negative_errno) override;
  int read_complete(int anon_fd, std::uint32_t msg_id) override;
  int restore() override;

 private:
  void arm();
  void drain();
  void dispatch(std::span<const std::byte> bytes);
  void reject(const proto::ParseError& error);

  boost::asio::io_context& loop_;
  boost::asio::posix::stream_descriptor device_;
  proto::WorkerCounters& counters_;
  Engine* engine_ = nullptr;
  bool armed_ = false;
  bool paused_ = false;
  bool stopped_ = false;
};

}  // namespace ondemand::worker
