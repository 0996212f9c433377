// The cachefiles device I/O: reads requests from /dev/cachefiles, hands them
// to a RequestSink (the cachefiles front end), and writes the kernel's
// replies.
//
// Reading: wait until the device is readable, then drain. In on-demand mode
// read() returns 0, not EAGAIN, when nothing is pending
// (cachefiles_ondemand_daemon_read), so both end a drain. A failed read() of
// one message (EEXIST when a re-delivered OPEN finds its object already open,
// ENOMEM, EINTR...) is logged and the drain goes on: the kernel has already
// completed that request with the error. A read() that keeps failing is
// backed off and finally reported through on_fatal() (read_errors.h).
// Reading pauses while the sink is at capacity and resumes as requests
// finish.
#pragma once

#include <cstdint>
#include <functional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/unique_fd.h"
#include "frontends/cachefiles/read_errors.h"
#include "frontends/cachefiles/replies.h"
#include "proto/kernel_msg.h"
#include "proto/shm_layout.h"

namespace ondemand::worker {

// Where parsed requests go.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
  virtual bool has_capacity() const = 0;
  // `anon_fd` is the OPEN's fd, already adopted; empty for READ/CLOSE.
  virtual void handle(proto::KernelRequest request, UniqueFd anon_fd) = 0;
};

class CachefilesDevice final : public Replies {
 public:
  CachefilesDevice(boost::asio::io_context& loop, UniqueFd device, proto::WorkerCounters& counters,
                   ReadErrorOptions read_errors = {});

  // Starts the read loop feeding `sink`. Call once.
  void start(RequestSink& sink);
  // Called once, with the errno, when read() has failed for
  // ReadErrorOptions::give_up_after with nothing but errors; reading stops.
  void on_fatal(std::function<void(int err)> callback) { on_fatal_ = std::move(callback); }
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
  // false: stop this drain (backing off or given up).
  bool read_failed(int err);

  boost::asio::io_context& loop_;
  boost::asio::posix::stream_descriptor device_;
  proto::WorkerCounters& counters_;
  RequestSink* sink_ = nullptr;
  ReadErrors read_errors_;
  boost::asio::steady_timer backoff_;
  std::function<void(int)> on_fatal_;
  bool armed_ = false;
  bool paused_ = false;
  bool stopped_ = false;
};

}  // namespace ondemand::worker
