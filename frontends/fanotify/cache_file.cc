#include "frontends/fanotify/cache_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <system_error>

#include "common/sys.h"
#include "frontends/fanotify/fanotify_sys.h"

namespace ondemand::fanotify {

CacheFile open_cache_file(std::uint32_t index, const std::string& path, std::uint64_t size) {
  auto opened = ondemand::sys::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (!opened.fd)
    throw std::system_error(opened.err, std::generic_category(), "open cache file " + path);
  struct stat st {};
  if (auto r = sys::fstat(opened.fd.get(), st); !r.ok())
    throw std::system_error(r.err, std::generic_category(), "fstat cache file " + path);
  if (static_cast<std::uint64_t>(st.st_size) != size) {
    if (auto r = sys::ftruncate(opened.fd.get(), size); !r.ok())
      throw std::system_error(r.err, std::generic_category(), "ftruncate cache file " + path);
  }
  CacheFile file;
  file.index = index;
  file.path = path;
  file.size = size;
  file.dev = st.st_dev;
  file.ino = st.st_ino;
  file.writer = std::move(opened.fd);
  return file;
}

CacheFile cache_file_from_fd(std::uint32_t index, std::string path, UniqueFd writer) {
  struct stat st {};
  if (auto r = sys::fstat(writer.get(), st); !r.ok())
    throw std::system_error(r.err, std::generic_category(), "fstat cache file " + path);
  if (!S_ISREG(st.st_mode)) throw std::system_error(EINVAL, std::generic_category(), path + " is not a regular file");
  CacheFile file;
  file.index = index;
  file.path = std::move(path);
  file.size = static_cast<std::uint64_t>(st.st_size);
  file.dev = st.st_dev;
  file.ino = st.st_ino;
  file.writer = std::move(writer);
  return file;
}

bool range_has_hole(const CacheFile& file, std::uint64_t offset, std::uint64_t len) {
  if (offset >= file.size || len == 0) return false;
  auto r = sys::lseek(file.writer.get(), static_cast<std::int64_t>(offset), SEEK_HOLE);
  // An lseek failure is treated as "hole": the caller then fills, which is
  // always correct.
  if (!r.ok()) return true;
  return static_cast<std::uint64_t>(r.rc) < std::min(file.size, offset + len);
}

bool cache_file_complete(const CacheFile& file) { return !range_has_hole(file, 0, file.size); }

CacheFile* CacheFileSet::at(std::uint32_t index) {
  for (auto& f : files_)
    if (f.index == index) return &f;
  return nullptr;
}

std::optional<std::uint32_t> CacheFileSet::resolve(int fd) const {
  struct stat st {};
  if (!sys::fstat(fd, st).ok()) return std::nullopt;
  for (const auto& f : files_)
    if (f.dev == st.st_dev && f.ino == st.st_ino) return f.index;
  return std::nullopt;
}

}  // namespace ondemand::fanotify
