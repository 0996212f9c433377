// Native tests of the fanotify front end on the host kernel (6.14+, root,
// /tmp on ext4/xfs/btrfs; tmpfs refuses pre-content marks). No VM: the host
// kernel has the hooks. They FAIL, loudly, when run elsewhere.
//
// Each test serves a real EROFS image file-backed and checks every file's
// SHA-256 through the mount with sha256sum; the image, the cache and the
// forked workers are fixture.h's.
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>

#include <catch2/catch.hpp>

#include "tests/unit/frontends/fanotify/fixture.h"

namespace ondemand::fanotify {
using namespace fanotify_test;
namespace pf = proto::fanotify;

TEST_CASE("fanotify: a file-backed EROFS mount served lazily reads every file right",
          "[fanotify][native]") {
  const auto [kind, name] = GENERATE(table<FillerKind, const char*>({
      {FillerKind::ENGINE, "the engine's fills"},
      {FillerKind::LOCAL, "the inline local filler"},
  }));
  INFO(name);
  Fixture fx(FILES, 1, kind);
  fx.start_worker();
  fx.mount_image();
  check_all_files(fx);
  // Reading every file touched every data chunk: the blob is complete and
  // its mark is gone, so fully fetched blobs cost nothing.
  CHECK(cache_file_complete(*fx.files().at(1)));
  CHECK(!fx.blob_marked());
  CHECK(fx.record().events_answered.load() > 0);
  CHECK(fx.record().events_denied.load() == 0);
  std::printf("fanotify serve (%s): %llu events answered for %zu files\n", name,
              static_cast<unsigned long long>(fx.record().events_answered.load()), FILES.size());
}

TEST_CASE("fanotify: mmap page faults on the mounted files are served too",
          "[fanotify][native]") {
  // The pre-content hook on page faults of a MARKED file was dropped before
  // 6.14 shipped, but here the marked file is the image: a fault on a file
  // of the EROFS mount becomes an EROFS read of the image file, which goes
  // through the hooked read path.
  Fixture fx;
  fx.start_worker();
  fx.mount_image();
  const auto f = run({"python3", "-c",
                      "import hashlib, mmap, sys\n"
                      "f = open(sys.argv[1], 'rb')\n"
                      "m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)\n"
                      "print(hashlib.sha256(m).hexdigest())\n",
                      (fx.mnt() / "big").string()});
  REQUIRE(WIFEXITED(f.status));
  REQUIRE(WEXITSTATUS(f.status) == 0);
  CHECK(f.out.substr(0, 64) == fx.expected().at("big"));
}

TEST_CASE("fanotify: a backend failure denies with EIO instead of allowing a hole",
          "[fanotify][native]") {
  const auto [missing, name] = GENERATE(table<bool, const char*>({
      {false, "the data blob is shorter than its cache file"},
      {true, "the backend has no data blob"},
  }));
  INFO(name);
  Fixture fx;
  if (missing)
    fx.remove_source(1);
  else
    fx.truncate_source(1, 4096);
  fx.start_worker();
  fx.mount_image();
  const auto f = run({"sha256sum", (fx.mnt() / "big").string()});
  REQUIRE(WIFEXITED(f.status));
  CHECK(WEXITSTATUS(f.status) != 0);
  CHECK(fx.record().events_denied.load() > 0);
  CHECK(fx.blob_marked());
}

TEST_CASE("fanotify: a worker killed at any step of an event never lets a reader over a hole",
          "[fanotify][native][crash]") {
  const auto [point, name] = GENERATE(table<KillPoint, const char*>({
      {KillPoint::AFTER_READ, "after read"},
      {KillPoint::AFTER_RECORD, "after recording the file"},
      {KillPoint::AFTER_FILL, "after fill, before answer"},
      {KillPoint::AFTER_ANSWER, "after answer, before recording it"},
  }));
  INFO(name);
  Fixture fx;
  const pid_t first = fx.start_worker({point, 1});
  fx.mount_image();
  auto reader = spawn({"sha256sum", (fx.mnt() / "big").string()});

  const int status = fx.reap(first);
  const auto killed_ns = ondemand::sys::monotonic_ns();
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGKILL);

  // The group lives on in this process, so the dead worker's event is still
  // pending: the reader is asleep, not reading zeros.
  CHECK(::waitpid(reader.pid, nullptr, WNOHANG) == 0);
  const auto left = unanswered_in(fx.record());
  if (point == KillPoint::AFTER_ANSWER) {
    CHECK(left.count >= 1);  // the first was answered, but the record does not know it
  } else {
    REQUIRE(left.count >= 1);
    CHECK(left.first_unknown_file == (point == KillPoint::AFTER_READ));
    if (point != KillPoint::AFTER_FILL)
      CHECK(range_has_hole(*fx.files().at(1), left.offset, left.length));
  }

  fx.start_worker();
  const auto done = finish(reader);
  REQUIRE(WIFEXITED(done.status));
  CHECK(WEXITSTATUS(done.status) == 0);
  CHECK(done.out.substr(0, 64) == fx.expected().at("big"));
  check_all_files(fx);

  auto& rec = fx.record();
  CHECK(rec.events_recovered.load() == left.count);
  CHECK(rec.stale_answers.load() == (point == KillPoint::AFTER_ANSWER ? 1u : 0u));
  CHECK(rec.unknown_file_fills.load() == left.unknown_file);
  const auto first_answer = rec.recovery_first_answer_ns.load();
  REQUIRE(first_answer > killed_ns);
  std::printf("fanotify kill %-36s kill-to-answer %.2f ms (%zu event(s) recovered)\n", name,
              static_cast<double>(first_answer - killed_ns) / 1e6, left.count);
}

TEST_CASE("fanotify: a hung worker's heartbeat goes stale; killed, its successor serves the waiting reader",
          "[fanotify][native][hang]") {
  // The kernel never answers for a hung daemon (it only warns,
  // perm_group_watchdog): the holder of the group must notice and kill.
  Fixture fx;
  auto& record = fx.record();
  const pid_t first = fx.start_worker();
  const auto age_ms = [&] {
    const auto beat = record.heartbeat_ns.load();  // before the clock: never in the future
    const auto now = ondemand::sys::monotonic_ns();
    return static_cast<double>(now - std::min(now, beat)) / 1e6;
  };
  // Serving: the heartbeat is written and stays fresh.
  for (int i = 0; i < 200 && record.heartbeat_ns.load() == 0; ++i) ::usleep(10'000);
  REQUIRE(record.heartbeat_ns.load() != 0);
  ::usleep(300'000);
  CHECK(age_ms() < 250);
  fx.mount_image();
  // Hang it (SIGSTOP: a worker stuck anywhere), then read: the reader waits.
  REQUIRE(::kill(first, SIGSTOP) == 0);
  auto reader = spawn({"sha256sum", (fx.mnt() / "big").string()});
  // The watchdog's view: stale after a second, as a supervisor would judge.
  const auto stopped_ns = ondemand::sys::monotonic_ns();
  while (age_ms() < 1000) ::usleep(20'000);
  const auto detected_ms = static_cast<double>(ondemand::sys::monotonic_ns() - stopped_ns) / 1e6;
  CHECK(::waitpid(reader.pid, nullptr, WNOHANG) == 0);  // still blocked, not reading zeros
  REQUIRE(::kill(first, SIGKILL) == 0);
  const int status = fx.reap(first);
  REQUIRE(WIFSIGNALED(status));
  fx.start_worker();
  const auto done = finish(reader);
  REQUIRE(WIFEXITED(done.status));
  CHECK(WEXITSTATUS(done.status) == 0);
  CHECK(done.out.substr(0, 64) == fx.expected().at("big"));
  CHECK(age_ms() < 250);  // the successor beats
  std::printf("fanotify hang: stale heartbeat seen %.0f ms after SIGSTOP; reader served by the successor\n",
              detected_ms);
}

}  // namespace ondemand::fanotify
