// vt-mounts: many mount(2) or umount2(2) calls from one process, each timed,
// for the scale scenario (tests/vm/scenarios/scale.sh). Under TCG a
// fork+exec of mount(8) per image costs more than the mount itself, and
// /proc/uptime's centiseconds are too coarse to time one.
//
//   vt-mounts mount LATENCY_FILE < LINES     LINES: "SOURCE FSTYPE TARGET
//   OPTIONS" vt-mounts umount LATENCY_FILE < LINES    LINES: "TARGET"
//
// The targets must exist. Every call is timed around the syscall alone; an
// EROFS-over-fscache mount returns only once the
// daemon has answered the OPEN of its blob and the READ of its superblock,
// so its time is that round trip plus the kernel's own work. One line per
// call goes to LATENCY_FILE ("<microseconds> <target>"), and one summary
// line to stdout:
//   clock=C calls=N failed=F total_s=T p50_us=A p90_us=B p99_us=C max_us=D
// (nearest-rank percentiles of the successful calls). A failed call is
// reported on stderr with its errno and the rest still run; exit status 1
// if any failed, 2 on a usage error.
//
// The clock: the test kernel under TCG finds no clocksource but jiffies
// (no HPET or PM timer to calibrate the TSC against: "tsc: Marking TSC
// unstable"), so CLOCK_MONOTONIC moves in 4 ms steps, as coarse as the
// calls it should time. On x86-64 the calls are timed with RDTSC instead
// (under TCG: the host's TSC, constant rate), its rate measured against
// CLOCK_MONOTONIC over 500 ms between two clock steps first; the summary
// says which clock it used (clock=tsc or clock=monotonic).
#include <sys/mount.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace {

long long now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

// Ticks and their length in ns: RDTSC calibrated, or CLOCK_MONOTONIC.
struct Clock {
  bool tsc = false;
  double ns_per_tick = 1.0;

  long long ticks() const {
#if defined(__x86_64__)
    if (tsc)
      return static_cast<long long>(__rdtsc());
#endif
    return now_ns();
  }
  long long ns(long long ticks) const {
    return static_cast<long long>(static_cast<double>(ticks) * ns_per_tick);
  }
};

Clock make_clock() {
  Clock c;
#if defined(__x86_64__)
  // From one CLOCK_MONOTONIC step to the first step >= 500 ms later.
  auto step = [] {
    const long long start = now_ns();
    long long t;
    while ((t = now_ns()) == start) {
    }
    return std::pair{t, static_cast<long long>(__rdtsc())};
  };
  const auto [ns0, tsc0] = step();
  std::pair<long long, long long> end;
  do
    end = step();
  while (end.first - ns0 < 500000000LL);
  if (end.second > tsc0) {
    c.tsc = true;
    c.ns_per_tick = static_cast<double>(end.first - ns0) /
                    static_cast<double>(end.second - tsc0);
  }
#endif
  return c;
}

long long percentile(const std::vector<long long> &sorted, int p) {
  if (sorted.empty())
    return 0;
  // Nearest rank: the smallest value with at least p% of the calls at or below
  // it.
  std::size_t rank = (sorted.size() * static_cast<std::size_t>(p) + 99) / 100;
  if (rank == 0)
    rank = 1;
  return sorted[rank - 1];
}

} // namespace

int main(int argc, char **argv) {
  if (argc != 3 || (std::strcmp(argv[1], "mount") != 0 &&
                    std::strcmp(argv[1], "umount") != 0)) {
    std::fprintf(stderr,
                 "usage: vt-mounts mount|umount LATENCY_FILE < LINES\n");
    return 2;
  }
  const bool do_mount = std::strcmp(argv[1], "mount") == 0;
  FILE *lat = std::fopen(argv[2], "w");
  if (!lat) {
    std::fprintf(stderr, "vt-mounts: %s: %s\n", argv[2], std::strerror(errno));
    return 2;
  }
  const Clock clock = make_clock();
  std::vector<long long> took_ns;
  int calls = 0, failed = 0;
  const long long t0 = now_ns();
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty())
      continue;
    std::istringstream words(line);
    std::string source, fstype, target, options;
    if (do_mount) {
      words >> source >> fstype >> target >> options;
      if (options.empty()) {
        std::fprintf(
            stderr,
            "vt-mounts: bad line \"%s\": want SOURCE FSTYPE TARGET OPTIONS\n",
            line.c_str());
        return 2;
      }
    } else {
      words >> target;
    }
    ++calls;
    const long long a = clock.ticks();
    const int rc = do_mount ? ::mount(source.c_str(), target.c_str(),
                                      fstype.c_str(), 0, options.c_str())
                            : ::umount2(target.c_str(), 0);
    const int err = errno;
    const long long ns = clock.ns(clock.ticks() - a);
    if (rc != 0) {
      ++failed;
      std::fprintf(stderr, "vt-mounts: %s %s%s%s: %s (after %lld us)\n",
                   argv[1], target.c_str(), do_mount ? " -o " : "",
                   options.c_str(), std::strerror(err), ns / 1000);
      continue;
    }
    took_ns.push_back(ns);
    std::fprintf(lat, "%lld %s\n", ns / 1000, target.c_str());
  }
  const double total_s = static_cast<double>(now_ns() - t0) / 1e9;
  std::fclose(lat);
  std::sort(took_ns.begin(), took_ns.end());
  std::printf("clock=%s calls=%d failed=%d total_s=%.2f p50_us=%lld "
              "p90_us=%lld p99_us=%lld max_us=%lld\n",
              clock.tsc ? "tsc" : "monotonic", calls, failed, total_s,
              percentile(took_ns, 50) / 1000, percentile(took_ns, 90) / 1000,
              percentile(took_ns, 99) / 1000,
              took_ns.empty() ? 0 : took_ns.back() / 1000);
  return failed ? 1 : 0;
}
