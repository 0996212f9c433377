// A rolling upgrade of the fanotify front end's worker under verifying
// readers, natively: a standby is started (it attaches the record and opens
// its blobs), the serving worker is told to hand over (Server::hand_over:
// read no more, answer every event already read, exit 0), and only then is
// the standby let in to recover and read. The property: no reader gets an
// error or a wrong byte across 10 upgrades, and a graceful hand-over leaves
// nothing for the successor to recover (every event read was answered by
// the worker that read it).
//
// The test process plays the supervisor (fixture.h).
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include <catch2/catch.hpp>

#include "tests/unit/frontends/fanotify/fixture.h"

namespace ondemand::fanotify {
namespace {

using namespace fanotify_test;

constexpr int READERS = 3;
constexpr int UPGRADES = 10;
constexpr auto ROUND_LIMIT = std::chrono::seconds(120);

struct Tally {
  int upgrades = 0;
  std::uint64_t in_flight = 0;  // hand-overs that began with events being filled
  std::uint64_t rounds = 0;
  Readers::Seen seen;  // by the readers, all rounds
  std::vector<double> hand_over_ms;  // signal to the old worker's exit
  std::vector<double> gap_ms;        // signal to the new worker's first answer
};

void sleep_us(std::uint64_t us) { std::this_thread::sleep_for(std::chrono::microseconds(us)); }

double max_of(const std::vector<double>& v) { return v.empty() ? 0 : *std::max_element(v.begin(), v.end()); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// UPGRADES, and more (up to 4x) while none has yet found events in flight.
bool more_upgrades(const Tally& t, std::uint64_t in_flight_this_round) {
  if (t.upgrades < UPGRADES) return true;
  return t.in_flight + in_flight_this_round == 0 && t.upgrades < 4 * UPGRADES;
}

void upgrade_round(Tally& t, std::mt19937_64& rng) {
  Fixture fx(MANY_FILES, 5000 * (t.rounds + 1));
  pid_t worker = fx.start_worker();
  fx.mount_image();
  auto& record = fx.record();
  Readers readers(fx, READERS, rng);
  auto all_done = [&] { return readers.all_done(); };
  const auto deadline = std::chrono::steady_clock::now() + ROUND_LIMIT;
  while (!all_done()) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    // Upgrade a worker that is serving: it has answered, readers are busy.
    wait_first_answer(record, readers, deadline);
    if (!more_upgrades(t, record.hand_overs_in_flight.load()) || all_done()) {
      sleep_us(1000);
      continue;
    }
    sleep_us(rng() % 3000);
    UniqueFd go;
    const pid_t next = fx.start_worker({}, &go);
    const auto started_ns = ondemand::sys::monotonic_ns();
    REQUIRE(::kill(worker, SIGUSR2) == 0);
    const int ws = fx.reap(worker);
    const auto exited_ns = ondemand::sys::monotonic_ns();
    INFO(fmt::format("old worker {} wait status {:#x}", worker, ws));
    REQUIRE(WIFEXITED(ws));
    REQUIRE(WEXITSTATUS(ws) == 0);
    // It answered every event it had read: nothing is left in the record.
    CHECK(unanswered_in(record).count == 0);
    record.first_answer_ns.store(0);
    REQUIRE(::write(go.get(), "g", 1) == 1);
    worker = next;
    ++t.upgrades;
    t.hand_over_ms.push_back(static_cast<double>(exited_ns - started_ns) / 1e6);
    if (const auto first = wait_first_answer(record, readers, deadline); first > started_ns)
      t.gap_ms.push_back(static_cast<double>(first - started_ns) / 1e6);
  }
  t.seen += readers.collect();
  // A graceful hand-over never needs recovery.
  CHECK(record.events_recovered.load() == 0);
  CHECK(record.stale_answers.load() == 0);
  CHECK(cache_file_complete(*fx.files().at(1)));
  t.in_flight += record.hand_overs_in_flight.load();
  ++t.rounds;
}

}  // namespace

TEST_CASE("fanotify upgrade: workers handed over under verifying readers lose nothing",
          "[fanotify][native][upgrade]") {
  std::mt19937_64 rng(42);
  Tally t;
  while (more_upgrades(t, 0)) upgrade_round(t, rng);
  std::printf(
      "fanotify upgrade: %d upgrades in %llu rounds, %llu with events in flight; readers: %llu files verified, %llu read errors, "
      "%llu mismatches\n"
      "fanotify upgrade: hand-over (signal to old worker's exit) median %.2f ms, max %.2f ms; "
      "gap (signal to new worker's first answer) median %.2f ms, max %.2f ms (%zu samples)\n",
      t.upgrades, static_cast<unsigned long long>(t.rounds), static_cast<unsigned long long>(t.in_flight),
      static_cast<unsigned long long>(t.seen.files),
      static_cast<unsigned long long>(t.seen.read_errors), static_cast<unsigned long long>(t.seen.mismatches),
      median(t.hand_over_ms), max_of(t.hand_over_ms), median(t.gap_ms), max_of(t.gap_ms), t.gap_ms.size());
  CHECK(t.seen.read_errors == 0);
  CHECK(t.seen.mismatches == 0);
  CHECK(t.seen.files == t.rounds * READERS * MANY_FILES.size());
  // The run proves the drain only if some hand-over had events to finish.
  CHECK(t.in_flight > 0);
}

}  // namespace ondemand::fanotify
