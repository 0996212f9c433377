// One wrapper per syscall we use: errno is captured on the same line, EINTR
// is retried here and nowhere else. This is also the seam where tests can
// inject failures (see tests/unit/sys_fault_test.cc).
#pragma once

#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/unique_fd.h"

namespace ondemand::sys {

// rc >= 0 on success; rc == -1 and err set on failure.
struct Result {
  std::int64_t rc = 0;
  int err = 0;
  bool ok() const { return rc >= 0; }
};

Result read(int fd, void* buf, std::size_t len);
Result write(int fd, const void* buf, std::size_t len);
Result pread(int fd, void* buf, std::size_t len, std::uint64_t off);
Result pwrite(int fd, const void* buf, std::size_t len, std::uint64_t off);
Result ioctl(int fd, unsigned long request, unsigned long arg);

// Full-length helpers: loop over short transfers. A return of fewer bytes
// than asked from pread_full means end of file.
Result pread_full(int fd, void* buf, std::size_t len, std::uint64_t off);
Result pwrite_full(int fd, const void* buf, std::size_t len, std::uint64_t off);

struct OpenResult {
  UniqueFd fd;
  int err = 0;
};
OpenResult open(const char* path, int flags, mode_t mode = 0);
OpenResult openat(int dirfd, const char* path, int flags, mode_t mode = 0);

// F_DUPFD_CLOEXEC: a second fd for the same open file that a spawned child
// never inherits (plain dup(2) clears close-on-exec). For asio descriptors
// that must not own the original.
OpenResult dup_cloexec(int fd);

// Adds O_NONBLOCK to the open file description (shared with every dup and
// with the peer that passed it to us). Returns 0 or an errno.
int set_nonblocking(int fd);
// Metadata and the working directory (the cachefiles culler: its device
// commands act on the process's current directory).
Result fstatat(int dirfd, const char* path, struct stat* st, int flags);
Result statfs(const char* path, struct statfs* st);
Result fchdir(int fd);

// Writes a device command like "bind ondemand" in one write(2).
Result write_command(int fd, std::string_view command);

std::string errno_name(int err);  // "ENOENT (No such file or directory)"

// CLOCK_MONOTONIC in nanoseconds: the clock of every timestamp in shared
// memory (heartbeat, request ages, first reply).
std::uint64_t monotonic_ns();

// The state letter of /proc/<pid>/stat ('R', 'S', 'D', 'T' stopped, 't'
// traced, 'Z' zombie, ...), or 0 when it cannot be read (no such process).
char process_state(pid_t pid);

// Test hook: when set, every wrapper first asks it; a non-zero return is
// used as the errno of an injected failure. Only tests set this.
using FaultHook = int (*)(const char* syscall);
void set_fault_hook(FaultHook hook);

}  // namespace ondemand::sys
