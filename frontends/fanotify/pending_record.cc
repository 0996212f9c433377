#include "frontends/fanotify/pending_record.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>
#include <system_error>

#include <fmt/format.h>

#include "common/sys.h"
#include "frontends/fanotify/fanotify_sys.h"

namespace ondemand::fanotify {
namespace {

using proto::fanotify::PendingRecordLayout;

void* map_fd(int fd, std::size_t len, const std::string& path) {
  void* map = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap " + path);
  return map;
}

}  // namespace

PendingRecord::PendingRecord(void* map, std::size_t len)
    : layout_(static_cast<PendingRecordLayout*>(map)), len_(len) {}

PendingRecord::PendingRecord(PendingRecord&& other) noexcept
    : layout_(std::exchange(other.layout_, nullptr)), len_(std::exchange(other.len_, 0)) {}

PendingRecord::~PendingRecord() {
  if (layout_) ::munmap(layout_, len_);
}

PendingRecord PendingRecord::create(const std::string& path) {
  auto opened = ondemand::sys::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (!opened.fd) throw std::system_error(opened.err, std::generic_category(), "create " + path);
  const std::size_t len = sizeof(PendingRecordLayout);
  if (auto r = sys::ftruncate(opened.fd.get(), len); !r.ok())
    throw std::system_error(r.err, std::generic_category(), "ftruncate " + path);
  PendingRecord record(map_fd(opened.fd.get(), len, path), len);
  // A fresh file is zero: every inbox INBOX_EMPTY, every file FILE_UNKNOWN
  // is set lazily (only positions an event occupies are ever read).
  auto& h = record.layout_->header;
  h.magic = proto::fanotify::PENDING_MAGIC;
  h.version = proto::fanotify::PENDING_VERSION;
  h.size = len;
  return record;
}

PendingRecord PendingRecord::attach(const std::string& path) {
  auto opened = ondemand::sys::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (!opened.fd) throw std::system_error(opened.err, std::generic_category(), "open " + path);
  return attach_fd(opened.fd.get(), path);
}

PendingRecord PendingRecord::attach_fd(int fd, const std::string& what) {
  struct stat st {};
  if (auto r = sys::fstat(fd, st); !r.ok())
    throw std::system_error(r.err, std::generic_category(), "fstat " + what);
  const std::size_t len = sizeof(PendingRecordLayout);
  if (!S_ISREG(st.st_mode) || static_cast<std::size_t>(st.st_size) < len)
    throw std::runtime_error(fmt::format("{}: pending record is {} bytes{}, need {}", what, st.st_size,
                                         S_ISREG(st.st_mode) ? "" : " and not a regular file", len));
  PendingRecord record(map_fd(fd, len, what), len);
  const auto& h = record.layout_->header;
  if (h.magic != proto::fanotify::PENDING_MAGIC || h.version != proto::fanotify::PENDING_VERSION ||
      h.size < len)
    throw std::runtime_error(fmt::format("{}: bad pending record header (magic {:#x}, version {}, size {})",
                                         what, h.magic, h.version, h.size));
  return record;
}

}  // namespace ondemand::fanotify
