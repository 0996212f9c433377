// What the worker's life cycle needs from a front end (the part that owns
// one kernel interface: its requests, its replies, its per-object state),
// and nothing more. The engine below it is shared (engine/engine.h); each
// front end decides which range a request needs and how it is answered.
//
// Event-loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace ondemand::worker {

class Frontend {
 public:
  virtual ~Frontend() = default;
  // Start taking requests from the kernel. Call once.
  virtual void start() = 0;
  // Stop taking new requests; those already taken are still answered.
  virtual void stop_reading() = 0;
  // Take requests again after stop_reading() (an upgrade called off).
  virtual void resume_reading() = 0;
  // Requests taken and not yet answered.
  virtual std::uint32_t inflight() const = 0;
  // Objects (files, blobs) the kernel has open with us.
  virtual std::size_t objects() const = 0;
  // Monotonic ns of the oldest last progress among requests in flight, 0 when
  // idle: what the supervisor's request limit judges.
  virtual std::uint64_t oldest_request_ns() const = 0;
  // That request in words ("READ msg_id=7 object_id=3 blob=..."), empty when
  // idle: what a worker that dies or is killed was stuck on.
  virtual std::string oldest_request_what() const = 0;
  // Called whenever a request is answered.
  virtual void on_request_done(std::function<void()> callback) = 0;
};

}  // namespace ondemand::worker
