// Fakes shared by the unit tests: temp dirs, memfds, fd counting, bounded
// waits. Real kernel objects, no mocks.
#pragma once

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include "common/unique_fd.h"

namespace ondemand::test {

// A fresh directory under $TMPDIR, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    auto base = std::filesystem::temp_directory_path() / "ondemand-unit-XXXXXX";
    std::string tmpl = base.string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path write(const std::string& name, std::string_view content) const {
    auto p = path_ / name;
    std::ofstream out(p, std::ios::binary);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    if (!out) throw std::runtime_error("cannot write " + p.string());
    return p;
  }

 private:
  std::filesystem::path path_;
};

inline UniqueFd make_memfd(const char* name = "unit") {
  int fd = ::memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) throw std::runtime_error("memfd_create failed");
  return UniqueFd{fd};
}

struct Pipe {
  UniqueFd read, write;
};
inline Pipe make_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) throw std::runtime_error("pipe2 failed");
  return {UniqueFd{p[0]}, UniqueFd{p[1]}};
}

// True once every write end of the pipe is closed (POLLHUP on the read end).
inline bool pipe_writer_closed(int read_end, int timeout_ms = 0) {
  pollfd p{read_end, POLLIN, 0};
  int rc = ::poll(&p, 1, timeout_ms);
  return rc > 0 && (p.revents & POLLHUP);
}

inline std::size_t open_fd_count() {
  std::size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)entry;
    ++n;
  }
  return n - 1;  // the iterator's own fd
}

// What /proc/self/fd/<fd> points at, or "" when fd is not open.
inline std::string fd_target(int fd) {
  char buf[PATH_MAX];
  auto link = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
  return n < 0 ? std::string() : std::string(buf, static_cast<std::size_t>(n));
}

inline bool same_file(int a, int b) {
  struct stat sa{}, sb{};
  if (::fstat(a, &sa) < 0 || ::fstat(b, &sb) < 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

// Polls `pred` until it holds or `timeout` passes; returns the last value.
inline bool eventually(const std::function<bool()>& pred,
                       std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// Deterministic, position-dependent bytes, so misplaced data is detected.
inline std::string pattern_bytes(std::size_t n, unsigned seed = 1) {
  std::string s(n, '\0');
  std::uint32_t x = 2654435761u * (seed + 1);
  for (std::size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    s[i] = static_cast<char>((x >> 16) & 0xff);
  }
  return s;
}

}  // namespace ondemand::test
