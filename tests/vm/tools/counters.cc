// vt-counters: prints the worker counters from the supervisor's shared
// memory segment (proto/shm_layout.h), for VM scenarios and the benchmark.
//
//   vt-counters [--tag TAG] [NAME...]
//
// Without NAMEs: one "name value" line per counter. With NAMEs: just their
// values, one per line, in the order given (unknown name: exit 2). TAG is
// the cache tag (default "vmtest", lib.sh's VT_TAG); the segment is
// shm_name_for_tag(TAG). Read-only use: nothing is written to the segment.
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/shared_state.h"

int main(int argc, char** argv) {
  std::string tag = "vmtest";
  std::vector<std::string> wanted;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--tag" && i + 1 < argc) {
      tag = argv[++i];
    } else if (arg == "-h" || arg == "--help") {
      std::printf("usage: vt-counters [--tag TAG] [NAME...]\n");
      return 0;
    } else if (arg.starts_with("-")) {
      std::fprintf(stderr, "usage: vt-counters [--tag TAG] [NAME...]\n");
      return 2;
    } else {
      wanted.emplace_back(arg);
    }
  }
  try {
    auto shm = ondemand::SharedStateMapping::attach(ondemand::shm_name_for_tag(tag));
    const auto& s = shm.state();
    const auto& c = s.counters;
    std::vector<std::pair<std::string, std::uint64_t>> all = {
        {"generation", s.generation.load()},
        {"restarts", s.restarts.load()},
        {"worker_pid", s.worker_pid.load()},
        // Answer first, fill ahead after (proto/shm_layout.h FillCounters).
        {"reads_early", s.fill.reads_early.load()},
        {"reads_joined", s.fill.reads_joined.load()},
        {"fill_ahead_stopped", s.fill.fill_ahead_stopped.load()},
        {"fill_ahead_running", s.fill.fill_ahead_running.load()},
        // The metrics' copen count and the object table gauge (set at
        // every heartbeat), for the scale scenario.
        {"opens_ok", s.worker_metrics.opens_ok.load()},
        {"open_objects", s.worker_metrics.open_objects.load()},
    };
    // READ_COMPLETEs timed from the READ's read() (the histogram's
    // observations and their sum), for the bench's mean READ latency.
    std::uint64_t latency_count = 0;
    for (const auto& b : s.worker_metrics.read_latency.buckets) latency_count += b.load();
    all.emplace_back("read_latency_count", latency_count);
    all.emplace_back("read_latency_sum_ns", s.worker_metrics.read_latency.sum_ns.load());
    const auto counters = ondemand::counters_json(c);  // items() must not outlive it
    for (const auto& [name, value] : counters.items()) all.emplace_back(name, value.get<std::uint64_t>());
    if (wanted.empty()) {
      for (const auto& [name, value] : all) std::printf("%s %llu\n", name.c_str(), (unsigned long long)value);
      return 0;
    }
    for (const auto& w : wanted) {
      bool found = false;
      for (const auto& [name, value] : all)
        if (w == name) {
          std::printf("%llu\n", (unsigned long long)value);
          found = true;
        }
      if (!found) {
        std::fprintf(stderr, "vt-counters: unknown counter %s\n", w.c_str());
        return 2;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vt-counters: %s\n", e.what());
    return 1;
  }
  return 0;
}
