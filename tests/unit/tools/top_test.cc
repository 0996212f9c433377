// ondemandctl top: its figures come from two real expositions (the
// supervisor's own renderer), so a renamed metric breaks this test, not the
// operator's screen.
#include "tools/ctl/top.h"

#include <memory>

#include <catch2/catch.hpp>

#include "metrics/exposition.h"
#include "proto/metrics.h"
#include "proto/shm_layout.h"

namespace ondemand::ctl {
namespace {

std::unique_ptr<proto::SharedState> fresh_state() {
  auto s = std::make_unique<proto::SharedState>();
  s->magic = proto::SHM_MAGIC;
  s->version = proto::SHM_VERSION;
  s->size = sizeof(proto::SharedState);
  return s;
}

Scrape scrape_of(const proto::SharedState& s) {
  std::string error;
  const std::string text = metrics::render(s, {"test", 0}, &error);
  REQUIRE(error.empty());
  std::size_t bad = 99;
  Scrape out = parse_exposition(text, &bad);
  CHECK(bad == 0);
  return out;
}

void restart(proto::SharedState& s, proto::RestartCause cause) {
  s.supervisor_metrics.restarts[static_cast<std::size_t>(cause)].fetch_add(1);
}

}  // namespace

TEST_CASE("top: rates, gauges, failovers and p99 over one interval", "[tools][top]") {
  auto s = fresh_state();
  s->counters.reads.store(100);
  s->counters.bytes_written.store(8 << 20);
  restart(*s, proto::RestartCause::KILLED);
  restart(*s, proto::RestartCause::UPGRADE);  // not a failover
  const Scrape before = scrape_of(*s);

  // Two seconds later: 200 READs completed (reads_ok), 4 MiB/s served,
  // 198 of them fast (<= 1 ms), 2 slow (<= 250 ms): p99 is the 1 ms bound
  // only if 99 % fall at or below it.
  s->worker_metrics.reads_ok.fetch_add(200);
  s->counters.bytes_written.fetch_add(8 << 20);
  for (int i = 0; i < 198; ++i) s->worker_metrics.read_latency.observe(proto::READ_LATENCY_BOUNDS_NS, 800'000);
  for (int i = 0; i < 2; ++i) s->worker_metrics.read_latency.observe(proto::READ_LATENCY_BOUNDS_NS, 200'000'000);
  s->counters.inflight.store(7);
  s->worker_metrics.open_objects.store(12);
  s->generation.store(5);
  s->worker_pid.store(4242);
  s->worker_state.store(static_cast<std::uint64_t>(proto::WorkerState::RUNNING));
  restart(*s, proto::RestartCause::CRASH);
  restart(*s, proto::RestartCause::HANG);
  const Scrape after = scrape_of(*s);

  const TopView v = compute_top(before, after, 2.0);
  CHECK(v.read_mib_per_s == Approx(4.0));
  CHECK(v.requests_per_s == Approx(100.0));
  CHECK(v.inflight == 7);
  CHECK(v.open_objects == 12);
  CHECK(v.generation == 5);
  CHECK(v.worker_pid == 4242);
  CHECK(v.state == "running");
  CHECK(v.failovers == 3);              // killed + crash + hang
  CHECK(v.failovers_in_interval == 2);  // crash + hang
  REQUIRE(v.read_p99_ms.has_value());
  CHECK(*v.read_p99_ms == Approx(1.0));

  // One more slow READ pushes the slow share over 1 %: p99 moves to 250 ms.
  s->worker_metrics.read_latency.observe(proto::READ_LATENCY_BOUNDS_NS, 200'000'000);
  const TopView slow = compute_top(before, scrape_of(*s), 2.0);
  REQUIRE(slow.read_p99_ms.has_value());
  CHECK(*slow.read_p99_ms == Approx(250.0));
}

TEST_CASE("top: no READs in the interval shows no p99; a reset counter is not negative", "[tools][top]") {
  auto s = fresh_state();
  s->counters.bytes_written.store(100 << 20);
  const Scrape before = scrape_of(*s);
  auto reset = fresh_state();  // a new shared memory segment: counters restart at 0
  reset->counters.bytes_written.store(1 << 20);
  const TopView v = compute_top(before, scrape_of(*reset), 1.0);
  CHECK_FALSE(v.read_p99_ms.has_value());
  CHECK(v.read_mib_per_s == Approx(1.0));
}

TEST_CASE("top: a line per interval off a terminal, a screen on one", "[tools][top]") {
  TopView v;
  v.requests_per_s = 12.5;
  v.read_mib_per_s = 3.25;
  v.state = "running";
  v.read_p99_ms = 2.5;
  const std::string line = render_top(v, false, "12:00:00");
  CHECK(line.find('\x1b') == std::string::npos);
  CHECK(line.back() == '\n');
  CHECK(line.find('\n') == line.size() - 1);
  CHECK_THAT(line, Catch::Contains("requests_per_s=12.5") && Catch::Contains("read_mib_per_s=3.25") &&
                       Catch::Contains("read_p99_ms=2.5") && Catch::Contains("state=running"));
  const std::string screen = render_top(v, true, "12:00:00");
  CHECK(screen.rfind("\x1b[H\x1b[2J", 0) == 0);
  CHECK_THAT(screen, Catch::Contains("requests/s") && Catch::Contains("READ p99 ms"));
}

TEST_CASE("top: the parser skips comments and refuses junk lines without throwing", "[tools][top]") {
  std::size_t bad = 0;
  const Scrape s = parse_exposition("# HELP x y\nx 1\ny{a=\"b c\"} 2.5\njunk\nz notanumber\n\n", &bad);
  CHECK(bad == 2);
  CHECK(s.at("x") == 1);
  CHECK(s.at("y{a=\"b c\"}") == 2.5);
}

}  // namespace ondemand::ctl
