// The sparse cache files the kernel reads (the EROFS image's blobs) and how
// an event's fd is mapped back to one of them.
//
// Each cache file has a WRITER fd opened before the file is marked: the
// fsnotify mode of a struct file is fixed at open (6.14+), so writes through
// it raise no pre-content event (measured on 6.18), while a write through an
// fd opened after the mark would raise one and wait for our own answer. The
// writer fds belong to whoever outlives workers (the supervisor; in the
// native tests the test process) and are inherited by each worker, so a
// successor can fill a dead worker's ranges without any event fd.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace ondemand::fanotify {

struct CacheFile {
  std::uint32_t index = 0;
  std::string path;
  std::uint64_t size = 0;
  dev_t dev = 0;
  ino_t ino = 0;
  UniqueFd writer;  // O_RDWR, opened before the mark
};

// Creates (or reuses) `path` as a file of `size` bytes, holes where nothing
// was written yet, and opens its writer fd. Throws std::system_error.
CacheFile open_cache_file(std::uint32_t index, const std::string& path, std::uint64_t size);

// A cache file from a writer fd someone handed us (SCM_RIGHTS): its inode
// and size from fstat, `path` only for logs. Throws std::system_error when
// the fd is not a regular file.
CacheFile cache_file_from_fd(std::uint32_t index, std::string path, UniqueFd writer);

// True when [0, size) has no hole (SEEK_HOLE finds only the implicit one at
// EOF). Fills are page-aligned, so an allocated page is a written page.
bool cache_file_complete(const CacheFile& file);
// True when [offset, offset+len) holds a hole (some byte never written).
bool range_has_hole(const CacheFile& file, std::uint64_t offset, std::uint64_t len);

class CacheFileSet {
 public:
  void add(CacheFile file) { files_.push_back(std::move(file)); }
  std::vector<CacheFile>& files() { return files_; }
  const std::vector<CacheFile>& files() const { return files_; }
  CacheFile* at(std::uint32_t index);
  // The cache file whose inode the fd refers to (fstat), if any.
  std::optional<std::uint32_t> resolve(int fd) const;

 private:
  std::vector<CacheFile> files_;
};

}  // namespace ondemand::fanotify
