#include "frontends/fanotify/fanotify_sys.h"

#include <fcntl.h>
#include <sys/fanotify.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>

namespace ondemand::fanotify::sys {
namespace {

template <typename F>
Result retry(F&& call) {
  for (;;) {
    auto rc = static_cast<std::int64_t>(call());
    if (rc >= 0) return {rc, 0};
    int err = errno;
    if (err != EINTR) return {-1, err};
  }
}

}  // namespace

Result fanotify_init(unsigned flags, unsigned event_f_flags) {
  return retry([&] { return ::fanotify_init(flags, event_f_flags); });
}

Result fanotify_mark(int group, unsigned flags, std::uint64_t mask, int dirfd, const char* path) {
  return retry([&] { return ::fanotify_mark(group, flags, mask, dirfd, path); });
}

Result mount(const char* source, const char* target, const char* fstype, unsigned long flags,
             const char* data) {
  return retry([&] { return ::mount(source, target, fstype, flags, data); });
}

Result umount2(const char* target, int flags) {
  return retry([&] { return ::umount2(target, flags); });
}

Result fstat(int fd, struct stat& st) {
  return retry([&] { return ::fstat(fd, &st); });
}

Result lseek(int fd, std::int64_t offset, int whence) {
  return retry([&] { return ::lseek(fd, offset, whence); });
}

Result ftruncate(int fd, std::uint64_t size) {
  return retry([&] { return ::ftruncate(fd, static_cast<off_t>(size)); });
}

Result statfs_type(const char* path, std::int64_t& type) {
  struct statfs st {};
  auto r = retry([&] { return ::statfs(path, &st); });
  if (r.ok()) type = static_cast<std::int64_t>(st.f_type);
  return r;
}

}  // namespace ondemand::fanotify::sys
