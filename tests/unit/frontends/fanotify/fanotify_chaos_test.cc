// Chaos for the fanotify front end, natively on the host kernel: workers are
// SIGKILLed at random instants while several readers SHA-256 every file of
// freshly created images through file-backed EROFS mounts. The property: no
// reader ever gets an error or a wrong byte (a hole read as zeros), however
// many workers die, and every death is followed by a successor that
// recovers the dead worker's events and answers.
//
// The test process plays the supervisor (holds the group, the writer fds and
// the pending record; fixture.h), so this proves the front end's recovery
// protocol (read into the record, record the file, fill, answer, record the
// answer) against kills anywhere in it, including inside a recovery.
//
// Env: ONDEMAND_FANOTIFY_CHAOS_KILLS (default 300),
//      ONDEMAND_FANOTIFY_CHAOS_SEED (default: the clock; printed).
#include <signal.h>
#include <sched.h>
#include <sys/wait.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>

#include <catch2/catch.hpp>

#include "tests/unit/frontends/fanotify/fixture.h"

namespace ondemand::fanotify {
namespace {

using namespace fanotify_test;

constexpr int READERS = 3;
constexpr auto ROUND_LIMIT = std::chrono::seconds(120);

std::uint64_t env_or(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

struct Tally {
  std::uint64_t kills = 0;
  std::uint64_t fast_kills = 0;         // before the worker had answered anything
  std::uint64_t kills_in_flight = 0;    // the dead worker left unanswered events
  std::uint64_t left_events = 0;        // how many, in all
  std::uint64_t left_unknown_file = 0;  // of those, read but file not yet recorded
  std::uint64_t rounds = 0;
  Readers::Seen seen;  // by the readers, all rounds
  std::vector<double> kill_to_answer_ms;
};

// The worker has read events it has not finished (or is inside read()).
bool events_held(pf::PendingRecordLayout& record) {
  for (auto& inbox : record.inbox)
    if (inbox.state.load() != pf::INBOX_EMPTY) return true;
  return false;
}

void sleep_us(std::uint64_t us) { std::this_thread::sleep_for(std::chrono::microseconds(us)); }

// One round: a fresh image, READERS readers over all of it, and a worker
// killed again and again until the readers are done.
void chaos_round(Tally& t, std::uint64_t target, std::mt19937_64& rng) {
  Fixture fx(MANY_FILES, 1000 * (t.rounds + 1) + (rng() % 1000));
  pid_t worker = fx.start_worker();
  fx.mount_image();
  Readers readers(fx, READERS, rng);
  auto all_done = [&] { return readers.all_done(); };
  const auto deadline = std::chrono::steady_clock::now() + ROUND_LIMIT;
  auto& record = fx.record();
  while (!all_done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      const auto left = unanswered_in(record);
      FAIL(fmt::format("readers still blocked after {} s: {} unanswered event(s) in the record, "
                       "worker {} alive: {}",
                       ROUND_LIMIT.count(), left.count, worker, ::kill(worker, 0) == 0));
    }
    // Most kills wait for the worker to have served (so every failover is
    // seen to end in answers), then pick an instant: half of them at random,
    // half while the worker holds events (an inbox of the record is in use:
    // inside read(), resolving, filling or answering). One in eight lands
    // at once instead, often inside the successor's recovery.
    const auto mode = rng() % 8;
    const bool fast = t.kills < target && mode == 0;
    if (!fast) {
      wait_first_answer(record, readers, deadline);
      if (t.kills >= target) {
        sleep_us(1000);  // enough kills: let the readers finish
        continue;
      }
      if (mode < 4) {
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
        while (!events_held(record) && std::chrono::steady_clock::now() < give_up) ::sched_yield();
        sleep_us(rng() % 200);
      } else {
        sleep_us(rng() % 8000);
      }
      if (all_done()) break;
    } else {
      sleep_us(rng() % 2000);
    }
    const auto killed_ns = ondemand::sys::monotonic_ns();
    REQUIRE(::kill(worker, SIGKILL) == 0);
    const int ws = fx.reap(worker);
    INFO(fmt::format("worker {} wait status {:#x}", worker, ws));
    // Anything but our SIGKILL (a crash, an abort, an exit) is a failure.
    REQUIRE(WIFSIGNALED(ws));
    REQUIRE(WTERMSIG(ws) == SIGKILL);
    ++t.kills;
    if (fast) ++t.fast_kills;
    const auto left = unanswered_in(record);
    if (left.count) ++t.kills_in_flight;
    t.left_events += left.count;
    t.left_unknown_file += left.unknown_file;
    // The dead worker is reaped and its successor not yet born: this process
    // is the record's only writer for the moment.
    record.first_answer_ns.store(0);
    worker = fx.start_worker();
    if (!fast) {
      // Sample kill-to-first-answer unless the readers finished first.
      if (const auto first = wait_first_answer(record, readers, deadline); first > killed_ns)
        t.kill_to_answer_ms.push_back(static_cast<double>(first - killed_ns) / 1e6);
    }
  }
  t.seen += readers.collect();
  // Every data chunk was read, so the data blob is complete (no hole left
  // behind a fill cut short).
  CHECK(cache_file_complete(*fx.files().at(1)));
  ++t.rounds;
}

}  // namespace

TEST_CASE("fanotify chaos: random SIGKILLs of the worker under verifying readers",
          "[fanotify][native][chaos]") {
  const auto target = env_or("ONDEMAND_FANOTIFY_CHAOS_KILLS", 300);
  const auto seed = env_or("ONDEMAND_FANOTIFY_CHAOS_SEED",
                           static_cast<std::uint64_t>(::time(nullptr)));
  std::printf("fanotify chaos: %llu kills, seed %llu (ONDEMAND_FANOTIFY_CHAOS_SEED)\n",
              static_cast<unsigned long long>(target), static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  Tally t;
  const auto started = std::chrono::steady_clock::now();
  while (t.kills < target) chaos_round(t, target, rng);
  const auto secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  const auto& ms = t.kill_to_answer_ms;
  std::printf(
      "fanotify chaos: %llu kills in %llu rounds (%.1f s); %llu left events unanswered "
      "(%llu events, %llu with the file not yet recorded); %llu fast kills\n"
      "fanotify chaos: readers: %llu files verified, %llu read errors, %llu mismatches\n"
      "fanotify chaos: kill to first answer: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%zu samples)\n",
      static_cast<unsigned long long>(t.kills), static_cast<unsigned long long>(t.rounds), secs,
      static_cast<unsigned long long>(t.kills_in_flight),
      static_cast<unsigned long long>(t.left_events),
      static_cast<unsigned long long>(t.left_unknown_file),
      static_cast<unsigned long long>(t.fast_kills), static_cast<unsigned long long>(t.seen.files),
      static_cast<unsigned long long>(t.seen.read_errors), static_cast<unsigned long long>(t.seen.mismatches),
      percentile(ms, 0.5), percentile(ms, 0.99), ms.empty() ? 0.0 : *std::max_element(ms.begin(), ms.end()),
      ms.size());
  CHECK(t.seen.read_errors == 0);
  CHECK(t.seen.mismatches == 0);
  CHECK(t.seen.files == t.rounds * READERS * MANY_FILES.size());
  // The run proves recovery only if kills really left events behind.
  CHECK(t.kills_in_flight > 0);
}

}  // namespace ondemand::fanotify
