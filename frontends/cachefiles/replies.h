// The replies a request engine gives to the kernel, behind an interface so
// the engine does not know which kernel front end it serves (cachefiles
// today; fanotify pre-content hooks may follow) and tests can record them.
#pragma once

#include <cstdint>

namespace ondemand::worker {

class Replies {
 public:
  virtual ~Replies() = default;
  // Accept (size >= 0) or refuse (negative errno) an OPEN. Event loop only.
  // Returns 0 or an errno.
  virtual int copen(std::uint32_t msg_id, std::int64_t size_or_negative_errno) = 0;
  // Tell the kernel a READ is done, whatever was written. Any thread.
  virtual int read_complete(int anon_fd, std::uint32_t msg_id) = 0;
  // Re-mark every pending request as new. Event loop only.
  virtual int restore() = 0;
};

}  // namespace ondemand::worker
