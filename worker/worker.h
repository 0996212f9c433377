// ondemand-worker's top object: handshake with the supervisor, receive the
// device fd, restore, serve until told to stop.
//
// Startup, as steps:
//   1. hello both ways on the channel; agree on a protocol version;
//   2. receive "device" with the /dev/cachefiles fd and check it is the
//      character device the supervisor announced (fstat st_rdev);
//   3. attach the shared state and open the backend;
//   4. write `restore`: the supervisor only starts us once every previous
//      worker is reaped, so nothing else can hold a request we re-queue;
//   5. say "serving" and run the event loop.
// The worker keeps its own reference to the device: if the supervisor dies
// the worker finishes, and keeps serving, on its own.
#pragma once

#include <filesystem>

#include "common/config.h"
#include "common/unique_fd.h"
#include "proto/exit_codes.h"

namespace ondemand::worker {

class Worker {
 public:
  Worker(Config config, UniqueFd channel);
  // Returns the exit code for main(). Throws ConfigError on bad config.
  proto::ExitCode run();

 private:
  Config config_;
  UniqueFd channel_;
};

}  // namespace ondemand::worker
