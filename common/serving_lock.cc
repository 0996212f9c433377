#include "common/serving_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <thread>

#include <fmt/format.h>

#include "common/sys.h"

namespace ondemand {
namespace {

pid_t read_holder(int fd) {
  char buf[32] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return -1;
  pid_t pid = -1;
  auto [end, ec] = std::from_chars(buf, buf + n, pid);
  return ec == std::errc{} && pid > 0 ? pid : -1;
}

}  // namespace

ServingLock take_serving_lock(const std::filesystem::path& state_dir, std::chrono::milliseconds wait) {
  const auto path = state_dir / std::string(SERVING_LOCK_NAME);
  ServingLock out;
  UniqueFd fd{::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)};
  if (!fd) {
    out.error = fmt::format("cannot open {}: {}", path.string(), sys::errno_name(errno));
    return out;
  }
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) break;
    const int err = errno;
    if (err == EINTR) continue;
    if (err != EWOULDBLOCK) {
      out.error = fmt::format("flock {}: {}", path.string(), sys::errno_name(err));
      return out;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      out.holder = read_holder(fd.get());
      out.error = fmt::format("{} is held by {}: another process reads the device", path.string(),
                              out.holder > 0 ? fmt::format("pid {}", out.holder) : std::string("an unknown pid"));
      return out;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Best effort: the pid only makes the probe's message better.
  const auto pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) == 0) (void)!::pwrite(fd.get(), pid.data(), pid.size(), 0);
  out.fd = std::move(fd);
  return out;
}

ServingLockProbe probe_serving_lock(const std::filesystem::path& state_dir) {
  const auto path = state_dir / std::string(SERVING_LOCK_NAME);
  ServingLockProbe out;
  UniqueFd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)};
  if (!fd) {
    if (errno != ENOENT) out.error = fmt::format("cannot open {}: {}", path.string(), sys::errno_name(errno));
    return out;
  }
  int rc;
  do {
    rc = ::flock(fd.get(), LOCK_SH | LOCK_NB);
  } while (rc < 0 && errno == EINTR);
  if (rc == 0) return out;  // nobody holds it; closing fd drops our shared lock
  if (errno != EWOULDBLOCK) {
    out.error = fmt::format("flock {}: {}", path.string(), sys::errno_name(errno));
    return out;
  }
  out.held = true;
  out.holder = read_holder(fd.get());
  return out;
}

}  // namespace ondemand
