// Move-only owner of one file descriptor. A raw int exists only at the
// syscall boundary: adopt kernel-given fds (OPEN anonymous fds, SCM_RIGHTS
// fds) into a UniqueFd on the line they arrive.
#pragma once

#include <unistd.h>

#include <utility>

namespace ondemand {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }

  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }

  // close(2) errors are ignored on purpose: after close the fd is gone
  // whatever it returns (Linux never retries), and EINTR must not be retried.
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace ondemand
