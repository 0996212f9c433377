#include "tools/ctl/top.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "tools/ctl/ctl.h"

namespace ondemand::ctl {
namespace {

constexpr std::string_view READ_BUCKET = "ondemand_read_latency_seconds_bucket{le=\"";

std::optional<double> parse_number(std::string_view text) {
  if (text == "+Inf") return HUGE_VAL;
  if (text == "-Inf") return -HUGE_VAL;
  if (text == "NaN") return std::nan("");
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

double get(const Scrape& s, std::string_view series) {
  auto it = s.find(series);
  return it == s.end() ? 0 : it->second;
}

// Sum of every series of family `name` whose labels contain `label`.
double sum_family(const Scrape& s, std::string_view name, std::string_view label = {}) {
  double total = 0;
  for (auto it = s.lower_bound(name); it != s.end() && it->first.starts_with(name); ++it) {
    const std::string_view series = it->first;
    if (series.size() > name.size() && series[name.size()] != '{') continue;  // a longer name
    if (!label.empty() && series.find(label) == std::string_view::npos) continue;
    total += it->second;
  }
  return total;
}

// The READ latency buckets as (upper bound in seconds, cumulative count).
std::vector<std::pair<double, double>> read_buckets(const Scrape& s) {
  std::vector<std::pair<double, double>> out;
  for (auto it = s.lower_bound(READ_BUCKET); it != s.end() && it->first.starts_with(READ_BUCKET); ++it) {
    std::string_view le = std::string_view(it->first).substr(READ_BUCKET.size());
    if (le.ends_with("\"}")) le.remove_suffix(2);
    if (auto bound = parse_number(le)) out.emplace_back(*bound, it->second);
  }
  std::sort(out.begin(), out.end());
  return out;
}

double failovers(const Scrape& s) {
  return sum_family(s, "ondemand_worker_restarts_total", "cause=\"crash\"") +
         sum_family(s, "ondemand_worker_restarts_total", "cause=\"killed\"") +
         sum_family(s, "ondemand_worker_restarts_total", "cause=\"hang\"");
}

}  // namespace

Scrape parse_exposition(std::string_view text, std::size_t* bad_lines) {
  Scrape out;
  std::size_t bad = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (line.empty() || line.front() == '#') continue;
    // The value follows the last space (label values may hold spaces, the
    // value never does; our writer emits no timestamps).
    const auto space = line.rfind(' ');
    if (space == std::string_view::npos || space == 0) {
      ++bad;
      continue;
    }
    auto value = parse_number(line.substr(space + 1));
    if (!value) {
      ++bad;
      continue;
    }
    out.insert_or_assign(std::string(line.substr(0, space)), *value);
  }
  if (bad_lines) *bad_lines = bad;
  return out;
}

TopView compute_top(const Scrape& before, const Scrape& after, double seconds) {
  TopView v;
  if (seconds <= 0) seconds = 1;
  // A counter that went down was reset (a new shared memory segment): the
  // interval then starts from zero rather than showing a negative rate.
  auto delta = [](double b, double a) { return a >= b ? a - b : a; };
  v.requests_per_s = delta(sum_family(before, "ondemand_requests_total"),
                           sum_family(after, "ondemand_requests_total")) / seconds;
  v.read_mib_per_s = delta(get(before, "ondemand_served_bytes_total"), get(after, "ondemand_served_bytes_total")) /
                     seconds / (1024.0 * 1024.0);
  v.inflight = get(after, "ondemand_inflight_requests");
  v.open_objects = get(after, "ondemand_open_objects");
  v.generation = get(after, "ondemand_worker_generation");
  v.worker_pid = get(after, "ondemand_worker_pid");
  v.parked = get(after, "ondemand_worker_parked") != 0;
  v.failovers = failovers(after);
  v.failovers_in_interval = delta(failovers(before), v.failovers);
  constexpr std::string_view STATE = "ondemand_worker_state{state=\"";
  for (auto it = after.lower_bound(STATE); it != after.end() && it->first.starts_with(STATE); ++it) {
    if (it->second != 1) continue;
    std::string_view name = std::string_view(it->first).substr(STATE.size());
    if (name.ends_with("\"}")) name.remove_suffix(2);
    v.state = std::string(name);
  }
  // p99 of the interval: per-bucket deltas, the first upper bound at which
  // the cumulative count reaches 99 % (the usual histogram_quantile answer,
  // without interpolation: an upper bound on the true p99).
  const auto b = read_buckets(before);
  const auto a = read_buckets(after);
  if (!a.empty() && (b.empty() || b.size() == a.size())) {
    const double total = delta(b.empty() ? 0 : b.back().second, a.back().second);
    if (total > 0) {
      for (std::size_t i = 0; i < a.size(); ++i) {
        const double cumulative = delta(b.empty() ? 0 : b[i].second, a[i].second);
        if (cumulative >= 0.99 * total) {
          v.read_p99_ms = a[i].first * 1000.0;
          break;
        }
      }
    }
  }
  return v;
}

std::string render_top(const TopView& v, bool tty, std::string_view clock) {
  const std::string p99 = !v.read_p99_ms             ? std::string("-")
                          : std::isinf(*v.read_p99_ms) ? std::string(">10000")
                                                       : fmt::format("{:g}", *v.read_p99_ms);
  const std::string state = v.state.empty() ? "?" : v.state;
  if (!tty) {
    return fmt::format(
        "{} state={} pid={:.0f} generation={:.0f} requests_per_s={:.1f} read_mib_per_s={:.2f} inflight={:.0f} "
        "open_objects={:.0f} read_p99_ms={} failovers={:.0f} failovers_now={:.0f}\n",
        clock, state, v.worker_pid, v.generation, v.requests_per_s, v.read_mib_per_s, v.inflight, v.open_objects,
        p99, v.failovers, v.failovers_in_interval);
  }
  std::string out = "\x1b[H\x1b[2J";  // home, clear screen
  out += fmt::format("ondemandctl top   {}   (^C to quit)\n\n", clock);
  out += fmt::format("  worker        {} (pid {:.0f}, generation {:.0f}){}\n", state, v.worker_pid, v.generation,
                     v.parked ? "  PARKED: nothing serves" : "");
  out += fmt::format("  requests/s    {:>10.1f}\n", v.requests_per_s);
  out += fmt::format("  read MiB/s    {:>10.2f}\n", v.read_mib_per_s);
  out += fmt::format("  in flight     {:>10.0f}\n", v.inflight);
  out += fmt::format("  open objects  {:>10.0f}\n", v.open_objects);
  out += fmt::format("  READ p99 ms   {:>10}   (this interval; bucket bound)\n", p99);
  out += fmt::format("  failovers     {:>10.0f}   ({:.0f} in this interval)\n", v.failovers, v.failovers_in_interval);
  return out;
}

int run_top(const TopOptions& options) {
  using Clock = std::chrono::steady_clock;
  auto scrape = [&](Scrape& out) {
    auto m = fetch_metrics(options.metrics_socket, options.timeout);
    if (m.http_status != 200) {
      std::fprintf(stderr, "ondemandctl: top: metrics not reachable: %s\n",
                   m.error.empty() ? fmt::format("HTTP {}", m.http_status).c_str() : m.error.c_str());
      return false;
    }
    out = parse_exposition(m.body);
    return true;
  };
  Scrape before;
  if (!scrape(before)) return UNREACHABLE;
  auto taken = Clock::now();
  for (unsigned i = 0; options.iterations == 0 || i < options.iterations; ++i) {
    std::this_thread::sleep_for(options.interval);
    Scrape after;
    if (!scrape(after)) return UNREACHABLE;
    const auto now = Clock::now();
    const double seconds = std::chrono::duration<double>(now - taken).count();
    char clock[32];
    const std::time_t wall = std::time(nullptr);
    std::tm tm{};
    ::localtime_r(&wall, &tm);
    std::strftime(clock, sizeof clock, "%H:%M:%S", &tm);
    const std::string text = render_top(compute_top(before, after, seconds), options.tty, clock);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    before = std::move(after);
    taken = now;
  }
  return OK;
}

}  // namespace ondemand::ctl
