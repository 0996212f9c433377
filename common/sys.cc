#include "common/sys.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string_view>

#include <fmt/format.h>

namespace ondemand::sys {
namespace {

std::atomic<FaultHook> fault_hook{nullptr};

int injected(const char* name) {
  auto hook = fault_hook.load(std::memory_order_relaxed);
  return hook ? hook(name) : 0;
}

template <typename F>
Result retry(const char* name, F&& call) {
  if (int err = injected(name)) return {-1, err};
  for (;;) {
    auto rc = static_cast<std::int64_t>(call());
    if (rc >= 0) return {rc, 0};
    int err = errno;
    if (err != EINTR) return {-1, err};
  }
}

}  // namespace

void set_fault_hook(FaultHook hook) { fault_hook.store(hook); }

Result read(int fd, void* buf, std::size_t len) {
  return retry("read", [&] { return ::read(fd, buf, len); });
}
Result write(int fd, const void* buf, std::size_t len) {
  return retry("write", [&] { return ::write(fd, buf, len); });
}
Result pread(int fd, void* buf, std::size_t len, std::uint64_t off) {
  return retry("pread", [&] { return ::pread(fd, buf, len, static_cast<off_t>(off)); });
}
Result pwrite(int fd, const void* buf, std::size_t len, std::uint64_t off) {
  return retry("pwrite", [&] { return ::pwrite(fd, buf, len, static_cast<off_t>(off)); });
}
Result ioctl(int fd, unsigned long request, unsigned long arg) {
  return retry("ioctl", [&] { return ::ioctl(fd, request, arg); });
}

Result pread_full(int fd, void* buf, std::size_t len, std::uint64_t off) {
  std::size_t done = 0;
  auto* p = static_cast<char*>(buf);
  while (done < len) {
    auto r = pread(fd, p + done, len - done, off + done);
    if (!r.ok()) return r;
    if (r.rc == 0) break;
    done += static_cast<std::size_t>(r.rc);
  }
  return {static_cast<std::int64_t>(done), 0};
}

Result pwrite_full(int fd, const void* buf, std::size_t len, std::uint64_t off) {
  std::size_t done = 0;
  const auto* p = static_cast<const char*>(buf);
  while (done < len) {
    auto r = pwrite(fd, p + done, len - done, off + done);
    if (!r.ok()) return r;
    if (r.rc == 0) return {-1, EIO};
    done += static_cast<std::size_t>(r.rc);
  }
  return {static_cast<std::int64_t>(done), 0};
}

Result fstatat(int dirfd, const char* path, struct stat* st, int flags) {
  return retry("fstatat", [&] { return ::fstatat(dirfd, path, st, flags); });
}
Result statfs(const char* path, struct statfs* st) {
  return retry("statfs", [&] { return ::statfs(path, st); });
}
Result fchdir(int fd) {
  return retry("fchdir", [&] { return ::fchdir(fd); });
}

OpenResult open(const char* path, int flags, mode_t mode) {
  auto r = retry("open", [&] { return ::open(path, flags, mode); });
  if (!r.ok()) return {UniqueFd{}, r.err};
  return {UniqueFd{static_cast<int>(r.rc)}, 0};
}

OpenResult openat(int dirfd, const char* path, int flags, mode_t mode) {
  auto r = retry("openat", [&] { return ::openat(dirfd, path, flags, mode); });
  if (!r.ok()) return {UniqueFd{}, r.err};
  return {UniqueFd{static_cast<int>(r.rc)}, 0};
}

OpenResult dup_cloexec(int fd) {
  auto r = retry("fcntl", [&] { return ::fcntl(fd, F_DUPFD_CLOEXEC, 0); });
  if (!r.ok()) return {UniqueFd{}, r.err};
  return {UniqueFd{static_cast<int>(r.rc)}, 0};
}

int set_nonblocking(int fd) {
  auto flags = retry("fcntl", [&] { return ::fcntl(fd, F_GETFL); });
  if (!flags.ok()) return flags.err;
  if (flags.rc & O_NONBLOCK) return 0;
  auto r = retry("fcntl", [&] { return ::fcntl(fd, F_SETFL, static_cast<int>(flags.rc) | O_NONBLOCK); });
  return r.ok() ? 0 : r.err;
}

Result write_command(int fd, std::string_view command) {
  auto r = write(fd, command.data(), command.size());
  if (r.ok() && static_cast<std::size_t>(r.rc) != command.size()) return {-1, EIO};
  return r;
}

std::uint64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
}

std::string errno_name(int err) {
  const char* name = strerrorname_np(err);
  return fmt::format("{} ({})", name ? name : std::to_string(err).c_str(), std::strerror(err));
}

char process_state(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[512];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return 0;
  // "pid (comm) S ...": comm may hold spaces and parentheses, so the state
  // follows the last ')'.
  const std::string_view stat(buf, static_cast<std::size_t>(n));
  const auto close_paren = stat.rfind(')');
  if (close_paren == std::string_view::npos || close_paren + 2 >= stat.size()) return 0;
  return stat[close_paren + 2];
}

}  // namespace ondemand::sys
