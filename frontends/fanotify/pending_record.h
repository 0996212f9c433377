// The crash-safe pending-event record (layout: proto/fanotify_pending.h) in
// a shared-memory file, e.g. /dev/shm/ondemand-<tag>-fanotify. Created by
// the process that outlives workers; each worker attaches by path.
#pragma once

#include <string>

#include "proto/fanotify_pending.h"

namespace ondemand::fanotify {

class PendingRecord {
 public:
  // Creates the file (or re-creates a stale one) zero-filled with a fresh
  // header. Throws std::system_error.
  static PendingRecord create(const std::string& path);
  // Maps an existing record; throws std::runtime_error naming the path when
  // its magic, version or size is wrong.
  static PendingRecord attach(const std::string& path);
  // The same for an open file (a worker gets the record as an fd); `what`
  // names it in errors.
  static PendingRecord attach_fd(int fd, const std::string& what);

  PendingRecord(PendingRecord&& other) noexcept;
  PendingRecord& operator=(PendingRecord&&) = delete;
  ~PendingRecord();

  proto::fanotify::PendingRecordLayout& layout() { return *layout_; }

 private:
  PendingRecord(void* map, std::size_t len);
  proto::fanotify::PendingRecordLayout* layout_ = nullptr;
  std::size_t len_ = 0;
};

}  // namespace ondemand::fanotify
