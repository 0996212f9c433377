// Syscall wrappers the fanotify front end needs beyond common/sys.h, in the
// same style: errno captured on the line, EINTR retried here. (Candidates to move into common/sys.h once the reshape
// settles; kept here so this front end stays additive.)
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>

#include "common/sys.h"

namespace ondemand::fanotify::sys {

using ondemand::sys::Result;

// fanotify_init(2): rc is the new group fd.
Result fanotify_init(unsigned flags, unsigned event_f_flags);
Result fanotify_mark(int group, unsigned flags, std::uint64_t mask, int dirfd, const char* path);
Result mount(const char* source, const char* target, const char* fstype, unsigned long flags,
             const char* data);
Result umount2(const char* target, int flags);
Result fstat(int fd, struct stat& st);
Result lseek(int fd, std::int64_t offset, int whence);
Result ftruncate(int fd, std::uint64_t size);
Result statfs_type(const char* path, std::int64_t& type);

}  // namespace ondemand::fanotify::sys
