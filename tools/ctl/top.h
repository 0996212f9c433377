// `ondemandctl top`: a live view of the supervisor's metrics, refreshed every
// interval. It scrapes the same exposition Prometheus does (metrics.sock),
// so what it shows is what the dashboards show: two scrapes give the rates.
//
// On a terminal each refresh redraws one screen (ANSI clear + home, nothing
// else: works in a plain VT100 and in `watch`-less ssh sessions). When
// stdout is not a terminal it prints one line per interval, key=value, for
// logs and pipes.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace ondemand::ctl {

// One scrape: series ("name" or "name{labels}", exactly as exposed) -> value.
using Scrape = std::map<std::string, double, std::less<>>;

// Parses the Prometheus text format as metrics/exposition.cc writes it.
// Comment lines are skipped; a line that does not parse is skipped and
// counted in `bad_lines`. Pure, never throws.
Scrape parse_exposition(std::string_view text, std::size_t* bad_lines = nullptr);

struct TopView {
  double requests_per_s = 0;
  double read_mib_per_s = 0;
  double inflight = 0;
  double open_objects = 0;
  std::optional<double> read_p99_ms;  // over the interval; none without READs
  double failovers = 0;               // total: crash + killed + hang restarts
  double failovers_in_interval = 0;
  double generation = 0;
  double worker_pid = 0;
  std::string state;                  // the ondemand_worker_state label at 1
  bool parked = false;
};

// The view of the interval between two scrapes `seconds` apart. Pure.
TopView compute_top(const Scrape& before, const Scrape& after, double seconds);

// One refresh: a screen (tty) or a line (not a tty). Pure.
std::string render_top(const TopView& view, bool tty, std::string_view clock);

struct TopOptions {
  std::filesystem::path metrics_socket;
  std::chrono::milliseconds interval{1000};
  unsigned iterations = 0;  // 0: until interrupted
  bool tty = false;
  std::chrono::milliseconds timeout{2000};
};

// Runs the loop, printing to stdout. Returns the ondemandctl exit code:
// OK, or UNREACHABLE when a scrape fails (named on stderr).
int run_top(const TopOptions& options);

}  // namespace ondemand::ctl
