// vt-writebench: the physical limit of a daemon that fills a cache file.
// A daemon cannot do less than write every byte of the blob once into the
// cache file system; this does exactly that and nothing else, timed with
// CLOCK_MONOTONIC inside the process:
//
//   vt-writebench [--writers N] [--window BYTES] [--bs BYTES] SRC DST
//
// SRC (the blob) is read whole into page-aligned memory first, not timed:
// the blob in RAM, no backend cost. Then N threads write it into DST, a new
// file (O_CREAT|O_TRUNC), with O_DIRECT, as the daemon's I/O pool writes
// the cachefiles anonymous fd (a direct write into the cache file,
// __cachefiles_write with IOCB_DIRECT): each thread takes the next
// --window bytes (default 4 MiB, the default fill_window) and writes them
// in pwrite()s of --bs bytes (default 1 MiB, the engine's chunk). The
// tail is written up to the next page, zero-padded, as the daemon does.
// Prints one JSON line on stdout:
//   {"bytes":B,"seconds":S,"mb_per_s":X,"writers":N,"window":W,"bs":BS}
// (MB = 10^6 bytes; B is SRC's size). Exit status 1 on any error.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "clock.h"

namespace {

constexpr std::uint64_t PAGE = 4096;

using vt::now_s;

int usage(int status) {
  std::fprintf(status ? stderr : stdout,
               "usage: vt-writebench [--writers N] [--window BYTES] [--bs BYTES] SRC DST\n");
  return status;
}

bool parse_size(const char* text, std::uint64_t& out) {
  char* end = nullptr;
  errno = 0;
  const auto v = std::strtoull(text, &end, 0);
  if (errno != 0 || *end != '\0' || v == 0) return false;
  out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t writers = 4, window = 4 << 20, bs = 1 << 20;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") return usage(0);
    if (arg == "--writers" || arg == "--window" || arg == "--bs") {
      if (i + 1 >= argc) return usage(2);
      auto& v = arg == "--writers" ? writers : arg == "--window" ? window : bs;
      if (!parse_size(argv[++i], v)) return usage(2);
    } else if (arg.starts_with("--")) {
      return usage(2);
    } else {
      paths.emplace_back(arg);
    }
  }
  if (paths.size() != 2 || writers > 256 || window % PAGE || bs % PAGE) return usage(2);

  const int src = ::open(paths[0].c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st {};
  if (src < 0 || ::fstat(src, &st) != 0) {
    std::fprintf(stderr, "vt-writebench: open %s: %s\n", paths[0].c_str(), std::strerror(errno));
    return 1;
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const auto padded = (size + PAGE - 1) / PAGE * PAGE;
  // Anonymous memory is page-aligned, as O_DIRECT wants the user buffer.
  auto* blob = static_cast<char*>(
      ::mmap(nullptr, std::max<std::uint64_t>(padded, PAGE), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (blob == MAP_FAILED) {
    std::fprintf(stderr, "vt-writebench: mmap %llu bytes: %s\n", static_cast<unsigned long long>(padded),
                 std::strerror(errno));
    return 1;
  }
  for (std::uint64_t got = 0; got < size;) {
    const ssize_t n = ::pread(src, blob + got, size - got, static_cast<off_t>(got));
    if (n <= 0) {
      std::fprintf(stderr, "vt-writebench: read %s: %s\n", paths[0].c_str(), n ? std::strerror(errno) : "short");
      return 1;
    }
    got += static_cast<std::uint64_t>(n);
  }
  ::close(src);

  const int dst = ::open(paths[1].c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
  if (dst < 0) {
    std::fprintf(stderr, "vt-writebench: open %s: %s\n", paths[1].c_str(), std::strerror(errno));
    return 1;
  }
  std::atomic<std::uint64_t> next{0};
  std::atomic<int> errors{0};
  auto writer = [&] {
    for (;;) {
      const auto start = next.fetch_add(window);
      if (start >= padded) return;
      const auto end = std::min(padded, start + window);
      for (auto pos = start; pos < end;) {
        const auto n = std::min(bs, end - pos);
        const ssize_t w = ::pwrite(dst, blob + pos, n, static_cast<off_t>(pos));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          std::fprintf(stderr, "vt-writebench: pwrite at %llu: %s\n", static_cast<unsigned long long>(pos),
                       w ? std::strerror(errno) : "wrote nothing");
          errors.fetch_add(1);
          return;
        }
        pos += static_cast<std::uint64_t>(w);
      }
    }
  };
  const double t0 = now_s();
  std::vector<std::thread> threads;
  for (std::uint64_t i = 0; i < writers; ++i) threads.emplace_back(writer);
  for (auto& t : threads) t.join();
  const double secs = now_s() - t0;
  ::close(dst);
  std::printf("{\"bytes\":%llu,\"seconds\":%.6f,\"mb_per_s\":%.3f,\"writers\":%llu,\"window\":%llu,\"bs\":%llu}\n",
              static_cast<unsigned long long>(size), secs, secs > 0 ? static_cast<double>(size) / 1e6 / secs : 0.0,
              static_cast<unsigned long long>(writers), static_cast<unsigned long long>(window),
              static_cast<unsigned long long>(bs));
  return errors.load() ? 1 : 0;
}
