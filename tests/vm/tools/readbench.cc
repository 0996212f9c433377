// vt-readbench: reads files start to end with read(2) and reports the
// throughput, timed with CLOCK_MONOTONIC inside the process (the guest's
// /proc/uptime only has 10 ms resolution and fork+exec under TCG is slow).
//
//   vt-readbench [--bs BYTES] [--random COUNT [--seed N]] [--list FILE|-] [FILE...]
//
// Files come from the arguments and/or --list (one path per line, "-" for
// stdin), and are read one after the other in that order, each with a
// buffer of --bs bytes (default 1 MiB). With --random, instead, COUNT
// pread()s of --bs bytes at --bs-aligned offsets drawn uniformly over all
// the files' bytes (a random-access reader: POSIX_FADV_RANDOM, so the
// kernel's read-ahead does not widen them; the generator is seeded with
// --seed, default 1, so runs read the same offsets). The data is discarded:
// this measures the read path, not hashing. Prints one JSON line on stdout:
//   {"files":N,"bytes":B,"seconds":S,"mb_per_s":X,"errors":E}
// (MB = 10^6 bytes). Exit status 1 if any file failed to open or read.
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "clock.h"

namespace {

using vt::now_s;

int usage(int status) {
  std::fprintf(status ? stderr : stdout,
               "usage: vt-readbench [--bs BYTES] [--random COUNT [--seed N]] [--list FILE|-] [FILE...]\n");
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t bs = 1 << 20;
  std::uint64_t random_count = 0, seed = 1;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") return usage(0);
    if ((arg == "--bs" || arg == "--list" || arg == "--random" || arg == "--seed") && i + 1 >= argc)
      return usage(2);
    if (arg == "--random" || arg == "--seed") {
      char* end = nullptr;
      const auto v = std::strtoull(argv[++i], &end, 0);
      if (*end != '\0') return usage(2);
      (arg == "--random" ? random_count : seed) = v;
    } else if (arg == "--bs") {
      char* end = nullptr;
      bs = std::strtoull(argv[++i], &end, 0);
      if (*end != '\0' || bs == 0 || bs > (std::size_t{1} << 30)) return usage(2);
    } else if (arg == "--list") {
      const std::string_view name = argv[++i];
      std::ifstream in;
      if (name != "-") {
        in.open(std::string(name));
        if (!in) {
          std::fprintf(stderr, "vt-readbench: cannot open list %s\n", argv[i]);
          return 2;
        }
      }
      std::istream& src = name == "-" ? std::cin : in;
      for (std::string line; std::getline(src, line);)
        if (!line.empty()) files.push_back(line);
    } else if (arg.starts_with("--")) {
      return usage(2);
    } else {
      files.emplace_back(arg);
    }
  }
  if (files.empty()) return usage(2);

  void* buf = nullptr;
  if (::posix_memalign(&buf, 4096, bs) != 0) return 2;
  std::uint64_t bytes = 0;
  unsigned errors = 0;
  if (random_count > 0) {
    // Open everything first (not timed): a random reader has its files open.
    std::vector<std::pair<int, std::uint64_t>> fds;  // fd, blocks of bs
    std::uint64_t blocks = 0;
    for (const auto& f : files) {
      const int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
      struct stat st {};
      if (fd < 0 || ::fstat(fd, &st) != 0) {
        std::fprintf(stderr, "vt-readbench: open %s: %s\n", f.c_str(), std::strerror(errno));
        return 1;
      }
      ::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
      const auto n = (static_cast<std::uint64_t>(st.st_size) + bs - 1) / bs;
      fds.emplace_back(fd, n);
      blocks += n;
    }
    if (blocks == 0) return usage(2);
    std::mt19937_64 rng(seed);
    const double t0 = now_s();
    for (std::uint64_t k = 0; k < random_count; ++k) {
      auto b = rng() % blocks;
      std::size_t i = 0;
      while (b >= fds[i].second) b -= fds[i++].second;
      const ssize_t n = ::pread(fds[i].first, buf, bs, static_cast<off_t>(b * bs));
      if (n < 0) {
        std::fprintf(stderr, "vt-readbench: pread %s at %llu: %s\n", files[i].c_str(),
                     static_cast<unsigned long long>(b * bs), std::strerror(errno));
        ++errors;
        continue;
      }
      bytes += static_cast<std::uint64_t>(n);
    }
    const double secs = now_s() - t0;
    for (auto& [fd, n] : fds) ::close(fd);
    std::printf("{\"files\":%zu,\"bytes\":%llu,\"seconds\":%.6f,\"mb_per_s\":%.3f,\"errors\":%u,\"random_reads\":%llu}\n",
                files.size(), static_cast<unsigned long long>(bytes), secs,
                secs > 0 ? static_cast<double>(bytes) / 1e6 / secs : 0.0, errors,
                static_cast<unsigned long long>(random_count));
    std::free(buf);
    return errors ? 1 : 0;
  }
  const double t0 = now_s();
  for (const auto& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      std::fprintf(stderr, "vt-readbench: open %s: %s\n", f.c_str(), std::strerror(errno));
      ++errors;
      continue;
    }
    for (;;) {
      const ssize_t n = ::read(fd, buf, bs);
      if (n > 0) {
        bytes += static_cast<std::uint64_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        std::fprintf(stderr, "vt-readbench: read %s: %s\n", f.c_str(), std::strerror(errno));
        ++errors;
      }
      break;
    }
    ::close(fd);
  }
  const double secs = now_s() - t0;
  std::printf("{\"files\":%zu,\"bytes\":%llu,\"seconds\":%.6f,\"mb_per_s\":%.3f,\"errors\":%u}\n",
              files.size(), static_cast<unsigned long long>(bytes), secs,
              secs > 0 ? static_cast<double>(bytes) / 1e6 / secs : 0.0, errors);
  std::free(buf);
  return errors ? 1 : 0;
}
