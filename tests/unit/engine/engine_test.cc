// The front-end-neutral engine on its own: fill ranges (pure), fills with
// deadlines and resumption against memfds, liveness from fill progress, and
// the prefetch queue's release of cancelled targets. The cachefiles front
// end's tests (tests/unit/frontends/cachefiles) run the same engine under
// OPEN/READ/CLOSE.
#include "engine/engine.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include <boost/asio/executor_work_guard.hpp>
#include <catch2/catch.hpp>

#include "common/sys.h"
#include "tests/unit/test_util.h"

namespace ondemand::worker {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;

constexpr std::uint64_t MiB = 1 << 20;

bool empty_range(FillRange r) { return r.start >= r.end; }

// A blob in memory that records which offsets were read and can sleep per
// read (a slow backend) or block until released.
class SlowBlob final : public Blob {
 public:
  explicit SlowBlob(std::string content) : content_(std::move(content)) {}
  std::chrono::milliseconds delay{0};
  std::atomic<bool> hold{false};
  std::uint64_t hold_from = 0;           // only reads starting here or later hold
  std::uint64_t fail_from = UINT64_MAX;  // reads reaching past this fail (EIO), after any hold
  std::atomic<int> reads{0};

  std::size_t unit = std::size_t{1} << 20;
  std::uint64_t size() const override { return content_.size(); }
  std::size_t read_unit() const override { return unit; }
  std::optional<BackendError> read(std::uint64_t off, std::span<std::byte> out, Deadline) override {
    reads.fetch_add(1);
    {
      std::lock_guard lock(mu_);
      offsets_.insert(off);
    }
    if (delay.count()) std::this_thread::sleep_for(delay);
    while (off >= hold_from && hold.load()) std::this_thread::sleep_for(1ms);
    if (off + out.size() > fail_from) return error_from_errno(EIO, "fake failure");
    std::memset(out.data(), 0, out.size());
    if (off < content_.size())
      std::memcpy(out.data(), content_.data() + off, std::min<std::uint64_t>(out.size(), content_.size() - off));
    return std::nullopt;
  }
  std::set<std::uint64_t> offsets() const {
    std::lock_guard lock(mu_);
    return offsets_;
  }

 private:
  std::string content_;
  mutable std::mutex mu_;
  std::set<std::uint64_t> offsets_;
};

class OneBlobBackend final : public Backend {
 public:
  explicit OneBlobBackend(std::shared_ptr<Blob> blob) : blob_(std::move(blob)) {}
  OpenResult open(const proto::BlobRef&, Deadline) override { return {blob_, std::nullopt}; }
  std::string describe() const override { return "one blob"; }

 private:
  std::shared_ptr<Blob> blob_;
};

std::shared_ptr<Target> memfd_target(std::shared_ptr<Blob> blob, const char* name, UniqueFd* ours = nullptr) {
  auto t = std::make_shared<Target>();
  t->ref = {"d", name};
  t->blob = std::move(blob);
  t->fd = test::make_memfd(name);
  if (ours) ours->reset(::dup(t->fd.get()));
  return t;
}

std::string pread_all(int fd, std::uint64_t off, std::size_t len) {
  std::string out(len, '\0');
  const auto n = ::pread(fd, out.data(), len, static_cast<off_t>(off));
  REQUIRE(n >= 0);
  out.resize(static_cast<std::size_t>(n));
  return out;
}

struct Loop {
  asio::io_context loop;
  asio::executor_work_guard<asio::io_context::executor_type> guard{loop.get_executor()};
  proto::WorkerCounters counters{};
  proto::WorkerMetrics metrics{};
  bool run_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
      if (std::chrono::steady_clock::now() >= deadline) return pred();
      loop.run_for(2ms);
    }
    return true;
  }
};

}  // namespace

// ---------------------------------------------------------------- fill_range

TEST_CASE("fill_range: a request inside one window fills that whole window", "[worker][engine][fill_range]") {
  const auto r = fill_range(4096 + 10, 100, 10 * MiB, MiB);
  CHECK(r.start == 0);
  CHECK(r.end == MiB);
  const auto r2 = fill_range(3 * MiB + 5, 10, 10 * MiB, MiB);
  CHECK(r2.start == 3 * MiB);
  CHECK(r2.end == 4 * MiB);
}

TEST_CASE("fill_range: a request spanning windows fills every window it touches", "[worker][engine][fill_range]") {
  const auto r = fill_range(MiB - 10, 20, 10 * MiB, MiB);
  CHECK(r.start == 0);
  CHECK(r.end == 2 * MiB);
  const auto r2 = fill_range(MiB, 2 * MiB + 1, 10 * MiB, MiB);
  CHECK(r2.start == MiB);
  CHECK(r2.end == 4 * MiB);
}

TEST_CASE("fill_range: at the blob tail the range stops at the blob size rounded up to a page",
          "[worker][engine][fill_range]") {
  const auto r = fill_range(MiB, 4096, MiB + 100, MiB);
  CHECK(r.start == MiB);
  CHECK(r.end == MiB + 4096);
  const auto exact = fill_range(0, 10, 3 * 4096, MiB);  // size already page-aligned
  CHECK(exact.start == 0);
  CHECK(exact.end == 3 * 4096);
  // A request running past the end is clipped the same way.
  const auto past = fill_range(4096, 10 * MiB, 10000, MiB);
  CHECK(past.start == 0);
  CHECK(past.end == 12288);
}

TEST_CASE("fill_range: an offset beyond the (page-rounded) blob or a zero length is empty",
          "[worker][engine][fill_range]") {
  for (auto [off, len, size] : {std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>{8192, 10, 8192},
                                {100 * MiB, 4096, MiB}, {4096, 1, 100}, {0, 0, MiB}, {5000, 0, MiB},
                                {0, 10, 0}}) {
    INFO("off=" << off << " len=" << len << " size=" << size);
    const auto r = fill_range(off, len, size, MiB);
    CHECK(r.start == r.end);
  }
  // Inside the last page but past the last byte is still the last page.
  const auto r = fill_range(200, 10, 100, MiB);
  CHECK(r.start == 0);
  CHECK(r.end == 4096);
}

TEST_CASE("fill_range: window 4096 fills exactly the pages the request touches", "[worker][engine][fill_range]") {
  const auto r = fill_range(5000, 10, MiB, 4096);
  CHECK(r.start == 4096);
  CHECK(r.end == 8192);
  const auto r2 = fill_range(4095, 2, MiB, 4096);
  CHECK(r2.start == 0);
  CHECK(r2.end == 8192);
}

TEST_CASE("fill_range: a window that is zero or not page-aligned is rounded up to pages",
          "[worker][engine][fill_range]") {
  const auto zero = fill_range(5000, 10, MiB, 0);
  CHECK(zero.start == 4096);
  CHECK(zero.end == 8192);
  const auto odd = fill_range(0, 1, MiB, 5000);
  CHECK(odd.start == 0);
  CHECK(odd.end == 8192);
}

TEST_CASE("fill_range: a huge length does not overflow", "[worker][engine][fill_range]") {
  const auto r = fill_range(10, UINT64_MAX, 3 * MiB, MiB);
  CHECK(r.start == 0);
  CHECK(r.end == 3 * MiB);
  const auto r2 = fill_range(UINT64_MAX - 5, UINT64_MAX, 3 * MiB, MiB);
  CHECK(r2.start == r2.end);
}

TEST_CASE("fill_range: random requests always give a page-aligned superset of the request within the blob",
          "[worker][engine][fill_range]") {
  std::mt19937_64 rng(12345);
  for (int i = 0; i < 20000; ++i) {
    const std::uint64_t size = rng() % (64 * MiB);
    const std::uint64_t window = 4096 * (1 + rng() % 512);
    const std::uint64_t off = rng() % (size + 3 * 4096 + 1);
    const std::uint64_t len = rng() % (4 * MiB);
    const auto r = fill_range(off, len, size, window);
    const std::uint64_t limit = (size + 4095) / 4096 * 4096;
    INFO("off=" << off << " len=" << len << " size=" << size << " window=" << window);
    if (len == 0 || off >= limit) {
      REQUIRE(r.start == r.end);
      continue;
    }
    REQUIRE(r.start % 4096 == 0);
    REQUIRE(r.end % 4096 == 0);
    REQUIRE(r.start % window == 0);
    REQUIRE(r.start <= off);
    REQUIRE(r.end >= std::min(off + len, limit));
    REQUIRE(r.end <= limit);
    REQUIRE(r.end - r.start <= (len + 2 * window));
  }
}

// ---------------------------------------------------------------- fills

// ---------------------------------------------------------------- ReadAhead

TEST_CASE("ReadAhead: a sequential stream doubles its window up to the max; the head starts at the max",
          "[worker][engine][readahead]") {
  ReadAhead ra;
  constexpr std::uint64_t BLOB = 64 * MiB;
  // The head of the image: the whole max window at once.
  auto r = ra.plan(0, 4096, BLOB, 4096, 1 * MiB);
  CHECK(r.start == 0);
  CHECK(r.end == 1 * MiB);
  // A jump elsewhere: just the asked pages.
  r = ra.plan(10 * MiB + 100, 4096, BLOB, 4096, 1 * MiB);
  CHECK(r.start == 10 * MiB);
  CHECK(r.end == 10 * MiB + 8192);  // 100 + 4096 crosses into the second page
  // It goes on where that fill ended: 16 KiB, 32 KiB, ... up to 1 MiB.
  std::uint64_t next = r.end, window = 4096;  // the stream's window (the fill was the request)
  for (int i = 0; i < 12; ++i) {
    window = std::min<std::uint64_t>(window * 2, 1 * MiB);
    r = ra.plan(next, 4096, BLOB, 4096, 1 * MiB);
    CHECK(r.start == next);
    CHECK(r.end - r.start == window);
    next = r.end;
  }
  CHECK(window == 1 * MiB);
  CHECK(ra.jumps() == 2);
  CHECK(ra.sequential() == 12);
}

TEST_CASE("ReadAhead: random reads fill what they ask, never more", "[worker][engine][readahead]") {
  ReadAhead ra;
  std::mt19937_64 rng(7);
  std::uint64_t asked = 0, filled = 0;
  for (int i = 0; i < 1000; ++i) {
    const auto off = (1 + rng() % 16383) * 4096;  // never 0, never where a fill ended (unlikely)
    const auto r = ra.plan(off, 4096, 64 * MiB, 4096, 4 * MiB);
    REQUIRE(r.start == off);
    asked += 4096;
    filled += r.end - r.start;
  }
  // A random offset can land where an earlier fill ended (a "sequential"
  // 8 KiB fill): a few, not a window's worth.
  CHECK(filled < asked * 11 / 10);
}

TEST_CASE("ReadAhead: interleaved sequential readers keep their own streams", "[worker][engine][readahead]") {
  ReadAhead ra;
  auto a = ra.plan(1 * MiB, 4096, 64 * MiB, 4096, 256 * 1024);
  auto b = ra.plan(30 * MiB, 4096, 64 * MiB, 4096, 256 * 1024);
  std::uint64_t window = 4096;
  for (int i = 0; i < 10; ++i) {
    window = std::min<std::uint64_t>(window * 2, 256 * 1024);
    a = ra.plan(a.end, 4096, 64 * MiB, 4096, 256 * 1024);
    b = ra.plan(b.end, 4096, 64 * MiB, 4096, 256 * 1024);
    REQUIRE(a.end - a.start == window);
    REQUIRE(b.end - b.start == window);
  }
  CHECK(ra.jumps() == 2);
  CHECK(ra.sequential() == 20);
}

TEST_CASE("ReadAhead: a READ inside a fill just planned keeps the stream's window and position",
          "[worker][engine][readahead]") {
  ReadAhead ra;
  ra.plan(8 * MiB, 4096, 64 * MiB, 4096, 1 * MiB);               // [8M, 8M+4K)
  auto r = ra.plan(8 * MiB + 4096, 4096, 64 * MiB, 4096, 1 * MiB);  // continues: 8 KiB
  CHECK(r.end - r.start == 8192);
  r = ra.plan(8 * MiB + 4096, 4096, 64 * MiB, 4096, 1 * MiB);  // asked again, before it landed
  CHECK(r.end - r.start == 8192);
  r = ra.plan(8 * MiB + 12288, 4096, 64 * MiB, 4096, 1 * MiB);  // the stream goes on: 16 KiB
  CHECK(r.start == 8 * MiB + 12288);
  CHECK(r.end - r.start == 16384);
  CHECK(ra.jumps() == 1);
}

// ---------------------------------------------------------------- FillAheadStreams

namespace {
FillRange window_of(std::uint64_t off, std::uint64_t window = 4 * MiB) {
  return fill_range(off, 4096, 256 * MiB, window);
}
}  // namespace

TEST_CASE("FillAheadStreams: a READ that goes on to the next window fills the windows after it ahead",
          "[worker][engine][fill_ahead]") {
  FillAheadStreams fa;
  constexpr std::uint64_t BLOB = 256 * MiB, W = 4 * MiB;
  // A jump into window 10, and the reader catching its fill up: nothing ahead.
  CHECK(empty_range(fa.plan(10 * W, window_of(10 * W), BLOB, W, 2)));
  CHECK(empty_range(fa.plan(10 * W + 2 * MiB, window_of(10 * W + 2 * MiB), BLOB, W, 2)));
  // On to window 11: windows 12 and 13 ahead.
  auto r = fa.plan(11 * W, window_of(11 * W), BLOB, W, 2);
  CHECK(r.start == 12 * W);
  CHECK(r.end == 14 * W);
  // Catching window 11 up: nothing new, 12 and 13 are on their way.
  CHECK(empty_range(fa.plan(11 * W + 2 * MiB, window_of(11 * W + 2 * MiB), BLOB, W, 2)));
  // Into window 12 (filled ahead, the READ meets its hole): one more, 14.
  r = fa.plan(12 * W + MiB, window_of(12 * W + MiB), BLOB, W, 2);
  CHECK(r.start == 14 * W);
  CHECK(r.end == 15 * W);
  // Window 13 was whole before the reader came, so it asks first at 15:
  // still the stream, 16 and 17 ahead.
  r = fa.plan(15 * W, window_of(15 * W), BLOB, W, 2);
  CHECK(r.start == 16 * W);
  CHECK(r.end == 18 * W);
  // A READ that crosses from its stream's window into the next goes on too.
  FillAheadStreams cross;
  cross.plan(10 * W, window_of(10 * W), BLOB, W, 1);
  r = cross.plan(11 * W - 65536, fill_range(11 * W - 65536, 131072, BLOB, W), BLOB, W, 1);
  CHECK(r.start == 12 * W);
  CHECK(r.end == 13 * W);
  // The tail stops at the blob rounded up to a page.
  FillAheadStreams tail;
  tail.plan(0, {0, W}, 2 * W + 100, W, 2);
  r = tail.plan(W, {W, 2 * W}, 2 * W + 100, W, 2);
  CHECK(r.start == 2 * W);
  CHECK(r.end == 2 * W + 4096);
}

TEST_CASE("FillAheadStreams: random reads never fill ahead", "[worker][engine][fill_ahead]") {
  FillAheadStreams fa;
  std::mt19937_64 rng(12);
  int ahead = 0;
  for (int i = 0; i < 2000; ++i) {
    const auto off = rng() % (64 * MiB / 4096) * 4096 + rng() % 4096;
    if (!empty_range(fa.plan(off, window_of(off), 256 * MiB, 4 * MiB, 2))) ++ahead;
  }
  // Only a READ at a window's very first page right after another's
  // counts as going on: a few in 2,000, not a window's worth each time.
  CHECK(ahead < 20);
}

TEST_CASE("FillAheadStreams: with 0 windows nothing is filled ahead, and interleaved readers keep their streams",
          "[worker][engine][fill_ahead]") {
  FillAheadStreams none;
  constexpr std::uint64_t W = 4 * MiB;
  for (std::uint64_t w = 0; w < 8; ++w) CHECK(empty_range(none.plan(w * W, {w * W, (w + 1) * W}, 64 * W, W, 0)));
  FillAheadStreams fa;
  fa.plan(3 * W, {3 * W, 4 * W}, 64 * W, W, 1);
  fa.plan(40 * W, {40 * W, 41 * W}, 64 * W, W, 1);
  for (std::uint64_t i = 1; i < 6; ++i) {
    auto a = fa.plan((3 + i) * W, {(3 + i) * W, (4 + i) * W}, 64 * W, W, 1);
    auto b = fa.plan((40 + i) * W, {(40 + i) * W, (41 + i) * W}, 64 * W, W, 1);
    CHECK(a.start == (4 + i) * W);
    CHECK(a.end == (5 + i) * W);
    CHECK(b.start == (41 + i) * W);
    CHECK(b.end == (42 + i) * W);
  }
}

TEST_CASE("ReadAhead: the tail stops at the blob rounded up to a page; past it, nothing",
          "[worker][engine][readahead]") {
  ReadAhead ra;
  auto r = ra.plan(0, 4096, 10000, 4096, 1 * MiB);
  CHECK(r.start == 0);
  CHECK(r.end == 12288);
  r = ra.plan(20000, 10, 10000, 4096, 1 * MiB);
  CHECK(r.start == r.end);
  r = ra.plan(4096, 0, 10000, 4096, 1 * MiB);
  CHECK(r.start == r.end);
}

TEST_CASE("Engine: a fill whose deadline passes fails with TIMEOUT, once, after the chunks that landed",
          "[worker][engine][deadline]") {
  Loop l;
  const auto content = test::pattern_bytes(8 * MiB, 3);
  auto blob = std::make_shared<SlowBlob>(content);
  blob->delay = 60ms;  // per 1 MiB chunk: 8 chunks take ~480 ms
  OneBlobBackend backend(blob);
  Engine engine(l.loop, backend, EngineOptions{.io_threads = 2}, l.counters, l.metrics);
  UniqueFd ours;
  auto target = memfd_target(blob, "deadline", &ours);
  std::atomic<int> completions{0};
  FillResult seen;
  const auto started = std::chrono::steady_clock::now();
  engine.fill(FillRequest{target, FillPlan{{0, 8 * MiB}}, started + 150ms, {}}, [&](const FillResult& r) {
    seen = r;
    completions.fetch_add(1);
  });
  REQUIRE(l.run_until([&] { return completions.load() == 1 && engine.inflight() == 0; }));
  l.loop.run_for(100ms);
  CHECK(completions.load() == 1);
  const auto took = std::chrono::steady_clock::now() - started;
  CHECK(took < 400ms);  // well before the 8 chunks would have ended
  REQUIRE(seen.error);
  CHECK(seen.error->kind == BackendError::Kind::TIMEOUT);
  CHECK(seen.error->err == ETIMEDOUT);
  CHECK(seen.done > 0);
  CHECK(seen.done < 8 * MiB);
  CHECK(seen.done % MiB == 0);
  CHECK(pread_all(ours.get(), 0, seen.done) == content.substr(0, seen.done));
  CHECK(l.counters.bytes_written.load() == seen.done);
}

TEST_CASE("Engine: a stall timeout lets a fill that keeps landing chunks run past its first deadline",
          "[worker][engine][deadline]") {
  Loop l;
  const auto content = test::pattern_bytes(6 * MiB, 4);
  auto blob = std::make_shared<SlowBlob>(content);
  blob->delay = 40ms;  // ~240 ms in all, each chunk well inside 150 ms
  OneBlobBackend backend(blob);
  Engine engine(l.loop, backend, EngineOptions{.io_threads = 1}, l.counters, l.metrics);
  UniqueFd ours;
  auto target = memfd_target(blob, "stall", &ours);
  std::optional<FillResult> seen;
  std::atomic<bool> completed{false};  // the completion runs on the pool thread
  engine.fill(FillRequest{target, FillPlan{{0, 6 * MiB}, false, 150ms}, std::chrono::steady_clock::now() + 150ms, {}},
              [&](const FillResult& r) {
                seen = r;
                completed = true;
              });
  REQUIRE(l.run_until([&] { return completed.load() && engine.inflight() == 0; }));
  REQUIRE(seen);
  CHECK(seen->ok());
  CHECK(seen->done == 6 * MiB);
  CHECK(pread_all(ours.get(), 0, content.size()) == content);
}

TEST_CASE("Engine: a resumed fill copies only the holes of its target and leaves it complete",
          "[worker][engine][resume]") {
  const auto content = test::pattern_bytes(6 * MiB + 5000, 7);
  auto blob = std::make_shared<SlowBlob>(content);
  UniqueFd ours;
  auto target = memfd_target(blob, "resume", &ours);
  // What a killed predecessor left: MiB 0-2 and MiB 4 written, the rest holes.
  REQUIRE(::pwrite(ours.get(), content.data(), 2 * MiB, 0) == static_cast<ssize_t>(2 * MiB));
  REQUIRE(::pwrite(ours.get(), content.data() + 4 * MiB, MiB, 4 * MiB) == static_cast<ssize_t>(MiB));
  const std::uint64_t whole = (content.size() + 4095) / 4096 * 4096;
  const auto r = run_fill(*target, FillPlan{{0, whole}, /*resume=*/true, {}}, NO_DEADLINE);
  CHECK(r.ok());
  CHECK(r.done == whole);
  CHECK(r.written == whole - 3 * MiB);
  CHECK(blob->offsets() == std::set<std::uint64_t>{2 * MiB, 3 * MiB, 5 * MiB, 6 * MiB});
  CHECK(pread_all(ours.get(), 0, content.size()) == content);

  // Complete already: nothing is read at all.
  const auto again = run_fill(*target, FillPlan{{0, whole}, true, {}}, NO_DEADLINE);
  CHECK(again.ok());
  CHECK(again.written == 0);
  CHECK(blob->reads.load() == 4);
}

// A remote blob pays a round trip per read: the fill asks it in pieces of
// its read unit (issue 12: 1 MiB GETs made the registry path a tenth of one
// curl GET), within 1-16 MiB.
TEST_CASE("Engine: a fill reads in pieces of the blob's read unit, 1 to 16 MiB", "[worker][engine]") {
  const auto content = test::pattern_bytes(40 * MiB, 3);
  auto blob = std::make_shared<SlowBlob>(content);
  UniqueFd ours;
  auto target = memfd_target(blob, "unit", &ours);
  blob->unit = 4 * MiB;
  CHECK(run_fill(*target, FillPlan{{0, 8 * MiB}, false, {}}, NO_DEADLINE).ok());
  CHECK(blob->offsets() == std::set<std::uint64_t>{0, 4 * MiB});
  blob->unit = 64 * MiB;  // capped at 16 MiB
  CHECK(run_fill(*target, FillPlan{{8 * MiB, 40 * MiB}, false, {}}, NO_DEADLINE).ok());
  CHECK(blob->offsets() == std::set<std::uint64_t>{0, 4 * MiB, 8 * MiB, 24 * MiB});
  blob->unit = 100;  // at least 1 MiB
  CHECK(run_fill(*target, FillPlan{{0, 2 * MiB}, false, {}}, NO_DEADLINE).ok());
  CHECK(blob->reads.load() == 6);
  CHECK(pread_all(ours.get(), 0, content.size()) == content);
}

TEST_CASE("Engine: resuming into an fd that cannot seek copies the whole range", "[worker][engine][resume]") {
  auto blob = std::make_shared<SlowBlob>(test::pattern_bytes(3 * 4096));
  Target target;
  target.blob = blob;
  auto pipe = test::make_pipe();
  target.fd = std::move(pipe.write);
  const auto r = run_fill(target, FillPlan{{0, 3 * 4096}, true, {}}, NO_DEADLINE);
  CHECK(blob->reads.load() == 1);  // tried to copy it all; a pipe refuses pwrite
  CHECK(r.write_err == ESPIPE);
}

TEST_CASE("Engine: resuming into a file whose every seek answers 0 (/dev/null) copies it all and ends",
          "[worker][engine][resume]") {
  auto blob = std::make_shared<SlowBlob>(test::pattern_bytes(3 * MiB));
  Target target;
  target.blob = blob;
  target.fd.reset(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  REQUIRE(target.fd);
  const auto r = run_fill(target, FillPlan{{0, 3 * MiB}, true, {}}, std::chrono::steady_clock::now() + 5s);
  CHECK(r.ok());
  CHECK(r.written == 3 * MiB);
  CHECK(blob->reads.load() == 3);
}

TEST_CASE("Engine: a long fill that makes progress keeps its request young; a stalled one ages",
          "[worker][engine][liveness]") {
  Loop l;
  auto blob = std::make_shared<SlowBlob>(test::pattern_bytes(10 * MiB, 5));
  blob->delay = 30ms;
  OneBlobBackend backend(blob);
  Engine engine(l.loop, backend, EngineOptions{.io_threads = 1}, l.counters, l.metrics);
  auto target = memfd_target(blob, "liveness");
  std::atomic<bool> done{false};  // the completion runs on the pool thread
  const auto begun = sys::monotonic_ns();
  engine.fill(FillRequest{target, FillPlan{{0, 10 * MiB}}, NO_DEADLINE, {}}, [&](const FillResult&) { done = true; });
  l.loop.run_for(200ms);
  REQUIRE_FALSE(done.load());
  // Several chunks landed: the oldest request's clock is a recent chunk's.
  CHECK(engine.oldest_request_ns() > begun + 100'000'000);
  blob->hold = true;  // the backend stalls
  l.loop.run_for(50ms);
  const auto stalled_at = engine.oldest_request_ns();
  l.loop.run_for(150ms);
  CHECK(engine.oldest_request_ns() == stalled_at);  // no progress, no younger
  blob->hold = false;
  REQUIRE(l.run_until([&] { return done.load() && engine.inflight() == 0; }));
  CHECK(engine.oldest_request_ns() == 0);
}

// Property: the engine can say, in words, which request has gone longest
// without progress (the worker notes it in the shared memory, and the
// supervisor names it when the worker dies on it), and says nothing when
// idle. A fill without words is named by its blob and range.
TEST_CASE("Engine: oldest_request_what names the request longest without progress", "[worker][engine][liveness]") {
  Loop l;
  auto blob = std::make_shared<SlowBlob>(test::pattern_bytes(1 * MiB, 6));
  blob->hold = true;  // both fills block in their first read
  OneBlobBackend backend(blob);
  Engine engine(l.loop, backend, EngineOptions{.io_threads = 2}, l.counters, l.metrics);
  auto first = memfd_target(blob, "first");
  auto second = memfd_target(blob, "second");
  std::atomic<int> done{0};
  CHECK(engine.oldest_request_what().empty());
  engine.fill(FillRequest{first, FillPlan{{0, 4096}}, NO_DEADLINE, {}, "READ msg_id=1 blob=first"},
              [&](const FillResult&) { ++done; });
  l.loop.run_for(20ms);
  engine.fill(FillRequest{second, FillPlan{{4096, 8192}}, NO_DEADLINE, {}}, [&](const FillResult&) { ++done; });
  l.loop.run_for(20ms);
  CHECK(engine.oldest_request_what() == "READ msg_id=1 blob=first");
  blob->hold = false;
  REQUIRE(l.run_until([&] { return done.load() == 2 && engine.inflight() == 0; }));
  CHECK(engine.oldest_request_what().empty());

  blob->hold = true;
  engine.fill(FillRequest{second, FillPlan{{4096, 8192}}, NO_DEADLINE, {}}, [&](const FillResult&) { ++done; });
  l.loop.run_for(20ms);
  CHECK(engine.oldest_request_what() == "fill of blob second [4096, 8192)");
  blob->hold = false;
  REQUIRE(l.run_until([&] { return done.load() == 3 && engine.inflight() == 0; }));
}

TEST_CASE("Engine: open with an invalid reference completes at once and never reaches the backend",
          "[worker][engine]") {
  Loop l;
  class CountingBackend final : public Backend {
   public:
    int opens = 0;
    OpenResult open(const proto::BlobRef&, Deadline) override {
      ++opens;
      return {nullptr, error_from_errno(ENOENT, "none")};
    }
    std::string describe() const override { return "counting"; }
  } backend;
  Engine engine(l.loop, backend, EngineOptions{.io_threads = 1}, l.counters, l.metrics);
  for (const auto& ref : {proto::BlobRef{"", "../x"}, proto::BlobRef{"a/b", "ok"}, proto::BlobRef{"", ""},
                          proto::BlobRef{"..", "ok"}}) {
    std::optional<OpenResult> result;
    engine.open(ref, NO_DEADLINE, [&](OpenResult r) { result = std::move(r); });
    REQUIRE(result);
    REQUIRE(result->error);
    CHECK(result->error->kind == BackendError::Kind::INVALID);
    CHECK(result->error->err == EINVAL);
    CHECK_THAT(result->error->message, Catch::Contains(ref.domain == "a/b" || ref.domain == ".." ? "domain" : "blob id"));
  }
  CHECK(backend.opens == 0);
  CHECK(engine.inflight() == 0);
}

// ---------------------------------------------------------------- answer first

namespace {

// Lets a held backend go when a test ends, failed checks included: declared
// after the engine, it runs before the engine joins its pool.
struct Unhold {
  SlowBlob& blob;
  ~Unhold() { blob.hold = false; }
};

// A blob of `mib` MiB behind an engine, its target a memfd the test reads
// back through `ours`. With `hold_from`, the backend's reads from that
// offset on wait until release().
struct Demands {
  Loop l;
  std::string content;
  std::shared_ptr<SlowBlob> blob;
  OneBlobBackend backend;
  proto::FillCounters fc{};
  Engine engine;
  Unhold unhold;
  UniqueFd ours;
  std::shared_ptr<Target> target;

  Demands(std::uint64_t mib, unsigned seed, std::optional<std::uint64_t> hold_from, std::uint32_t threads = 2)
      : content(test::pattern_bytes(mib * MiB, seed)),
        blob(std::make_shared<SlowBlob>(content)),
        backend(blob),
        engine(l.loop, backend, EngineOptions{.io_threads = threads, .fill_counters = &fc}, l.counters, l.metrics),
        unhold{*blob},
        target(memfd_target(blob, "demands", &ours)) {
    if (hold_from) {
      blob->hold_from = *hold_from;
      blob->hold = true;
    }
  }
  void release() { blob->hold = false; }
  std::string file() { return pread_all(ours.get(), 0, content.size()); }
  bool settled() { return engine.fills_running() == 0 && engine.inflight() == 0; }
};

// A demand: the bytes [need) a reader waits for, inside the window [range)
// the fill writes after them.
FillRequest demand(std::shared_ptr<Target> target, FillRange need, FillRange range,
                   Deadline deadline = NO_DEADLINE) {
  FillRequest r;
  r.target = std::move(target);
  r.plan = FillPlan{range, /*resume=*/true, {}, /*answer_early=*/true};
  r.need = need;
  r.deadline = deadline;
  return r;
}

// Completions of one request, counted; the last result kept. Completions
// come on pool threads.
struct Completions {
  std::atomic<int> count{0};
  std::mutex mu;
  FillResult last;
  Engine::FillDone callback() {
    return [this](const FillResult& r) {
      {
        std::lock_guard lock(mu);
        last = r;
      }
      count.fetch_add(1);
    };
  }
  FillResult result() {
    std::lock_guard lock(mu);
    return last;
  }
};

}  // namespace

// Issue 12: the reader waits for the bytes it asked for, not for the window.
TEST_CASE("Engine: a demand is answered once its pages land, while the rest of its window is still being written",
          "[worker][engine][early]") {
  Demands d(4, 21, 4096);  // everything after the asked page stalls
  Completions done;
  d.engine.fill(demand(d.target, {0, 4096}, {0, 4 * MiB}), done.callback());
  REQUIRE(d.l.run_until([&] { return done.count.load() == 1; }));
  // Answered while the fill is held in the window's second read.
  CHECK(d.blob->hold.load());
  CHECK(d.engine.fills_running() == 1);
  const auto r = done.result();
  CHECK(r.ok());
  CHECK(r.range.start == 0);
  CHECK(r.range.end == 4096);
  CHECK(r.done == 4096);
  CHECK(pread_all(d.ours.get(), 0, 4096) == d.content.substr(0, 4096));
  // The request is no longer in flight: a drain does not wait for the
  // fill-ahead behind it.
  REQUIRE(d.l.run_until([&] { return d.engine.inflight() == 0; }));
  CHECK(d.engine.oldest_request_ns() == 0);
  CHECK(d.fc.fill_ahead_running.load() == 1);
  CHECK(d.fc.reads_early.load() == 1);
  d.release();
  REQUIRE(d.l.run_until([&] { return d.settled(); }));
  CHECK(d.file() == d.content);
  CHECK(done.count.load() == 1);
  CHECK(d.fc.fill_ahead_running.load() == 0);
  CHECK(d.l.counters.bytes_written.load() == 4 * MiB);
}

TEST_CASE("Engine: the pages a demand asks for are written first, then the rest of the window after them, then before",
          "[worker][engine][early]") {
  Demands d(4, 22, std::nullopt, 1);
  Completions done;
  d.engine.fill(demand(d.target, {2 * MiB, 2 * MiB + 8192}, {0, 4 * MiB}), done.callback());
  REQUIRE(d.l.run_until([&] { return done.count.load() == 1 && d.settled(); }));
  // One read for the need, then 1 MiB pieces to the window's end, then from
  // its start up to the need.
  CHECK(d.blob->offsets() == std::set<std::uint64_t>{2 * MiB, 2 * MiB + 8192, 3 * MiB + 8192, 0, MiB});
  CHECK(d.file() == d.content);
}

// A registry pays an HTTP request per read: answering first must not split
// a window into more reads than its pieces (the blob's read unit).
TEST_CASE("Engine: for a blob with a large read unit the piece holding the need goes first, one read per piece",
          "[worker][engine][early]") {
  Demands d(16, 30, std::nullopt, 1);
  d.blob->unit = 4 * MiB;
  Completions done;
  d.engine.fill(demand(d.target, {9 * MiB, 9 * MiB + 4096}, {0, 16 * MiB}), done.callback());
  REQUIRE(d.l.run_until([&] { return done.count.load() == 1 && d.settled(); }));
  CHECK(done.result().ok());
  CHECK(d.blob->reads.load() == 4);  // as many as a plain fill of the window
  CHECK(d.blob->offsets() == std::set<std::uint64_t>{0, 4 * MiB, 8 * MiB, 12 * MiB});
  CHECK(d.file() == d.content);
}

// A second READ inside a window being filled must not copy it again, and
// gets exactly one answer, once the fill has written its pages.
TEST_CASE("Engine: a demand on a range a fill in flight is writing waits for that fill and is answered once",
          "[worker][engine][early]") {
  Demands d(4, 23, MiB);
  Completions first, second;
  d.engine.fill(demand(d.target, {0, 4096}, {0, 4 * MiB}), first.callback());
  REQUIRE(d.l.run_until([&] { return first.count.load() == 1; }));
  // The fill is held before its 1 MiB mark; ask for a page at 3 MiB.
  d.engine.fill(demand(d.target, {3 * MiB, 3 * MiB + 4096}, {0, 4 * MiB}), second.callback());
  d.l.loop.run_for(50ms);
  CHECK(second.count.load() == 0);  // not before the fill got there
  CHECK(d.engine.inflight() == 1);
  CHECK(d.engine.fills_running() == 1);  // no fill of its own
  d.release();
  REQUIRE(d.l.run_until([&] { return second.count.load() == 1 && d.settled(); }));
  d.l.loop.run_for(30ms);
  CHECK(first.count.load() == 1);
  CHECK(second.count.load() == 1);
  CHECK(second.result().ok());
  CHECK(second.result().range.start == 3 * MiB);
  // Every piece of the window was read from the backend exactly once.
  CHECK(d.blob->reads.load() == static_cast<int>(d.blob->offsets().size()));
  CHECK(d.l.counters.bytes_written.load() == 4 * MiB);
  CHECK(d.file() == d.content);
  CHECK(d.fc.reads_joined.load() == 1);
}

TEST_CASE("Engine: a demand reaching past the fill in flight waits on it and fills only the rest itself",
          "[worker][engine][early]") {
  Demands d(8, 24, MiB);
  Completions first, second;
  d.engine.fill(demand(d.target, {0, 4096}, {0, 4 * MiB}), first.callback());
  REQUIRE(d.l.run_until([&] { return first.count.load() == 1; }));
  // Straddles the first window's end: [4M-4K, 4M+4K) in the windows [0, 8M).
  d.engine.fill(demand(d.target, {4 * MiB - 4096, 4 * MiB + 4096}, {0, 8 * MiB}), second.callback());
  REQUIRE(d.l.run_until([&] { return d.engine.fills_running() == 2; }));
  d.l.loop.run_for(50ms);
  CHECK(second.count.load() == 0);  // its first page is the held fill's
  d.release();
  REQUIRE(d.l.run_until([&] { return second.count.load() == 1 && d.settled(); }));
  CHECK(second.result().ok());
  CHECK(first.count.load() == 1);
  CHECK(d.l.counters.bytes_written.load() == 8 * MiB);  // nothing twice
  CHECK(d.file() == d.content);
}

// The backend fails after the reader was answered: that answer stands and
// no second one follows; a request that waited for the failed part gets one
// answer, the failure.
TEST_CASE("Engine: a backend failing mid-window after an early answer answers nobody twice",
          "[worker][engine][early]") {
  Demands d(4, 25, MiB);
  d.blob->fail_from = 2 * MiB;
  Completions first, second;
  d.engine.fill(demand(d.target, {0, 4096}, {0, 4 * MiB}), first.callback());
  REQUIRE(d.l.run_until([&] { return first.count.load() == 1; }));
  d.engine.fill(demand(d.target, {3 * MiB, 3 * MiB + 4096}, {0, 4 * MiB}), second.callback());
  d.l.loop.run_for(20ms);
  d.release();
  REQUIRE(d.l.run_until([&] { return d.settled(); }));
  d.l.loop.run_for(50ms);
  CHECK(first.count.load() == 1);
  CHECK(first.result().ok());
  REQUIRE(second.count.load() == 1);
  const auto r = second.result();
  CHECK_FALSE(r.ok());
  REQUIRE(r.error);
  CHECK(r.error->kind == BackendError::Kind::IO);
  CHECK(r.done == 0);
  CHECK(d.l.metrics.backend_errors[static_cast<std::size_t>(proto::BackendErrorKind::READ)].load() == 1);
}

TEST_CASE("Engine: withdraw stops the fill-ahead at its next chunk, releases the target and answers waiters as withdrawn",
          "[worker][engine][early]") {
  Demands d(8, 26, MiB);
  std::weak_ptr<Target> weak = d.target;
  Completions first, waiting;
  d.engine.fill(demand(d.target, {0, 4096}, {0, 8 * MiB}), first.callback());
  REQUIRE(d.l.run_until([&] { return first.count.load() == 1; }));
  d.engine.fill(demand(d.target, {6 * MiB, 6 * MiB + 4096}, {0, 8 * MiB}), waiting.callback());
  d.l.loop.run_for(20ms);
  REQUIRE(waiting.count.load() == 0);
  d.engine.withdraw(d.target.get());
  CHECK(waiting.count.load() == 1);  // at once
  CHECK(waiting.result().withdrawn);
  CHECK_FALSE(waiting.result().ok());
  d.target.reset();
  CHECK_FALSE(weak.expired());  // the fill held in the backend still has it
  const auto reads_before = d.blob->reads.load();
  d.release();
  REQUIRE(d.l.run_until([&] { return d.settled() && weak.expired(); }));
  CHECK(d.blob->reads.load() == reads_before);  // the held read ended it: no read after it
  CHECK(first.count.load() == 1);
  CHECK(waiting.count.load() == 1);
  CHECK(d.fc.fill_ahead_stopped.load() == 1);
  CHECK(d.fc.fill_ahead_running.load() == 0);
}

// A handover: the fill-ahead is abandoned, but a request still waiting on
// the fill is answered first (it was promised an answer).
TEST_CASE("Engine: abandon_fill_ahead stops fills once no request waits on them, not before",
          "[worker][engine][early]") {
  Demands d(8, 27, MiB);
  Completions first, waiting;
  d.engine.fill(demand(d.target, {0, 4096}, {0, 8 * MiB}), first.callback());
  REQUIRE(d.l.run_until([&] { return first.count.load() == 1; }));
  d.engine.fill(demand(d.target, {2 * MiB, 2 * MiB + 4096}, {0, 8 * MiB}), waiting.callback());
  d.l.loop.run_for(20ms);
  d.engine.abandon_fill_ahead();
  d.release();
  REQUIRE(d.l.run_until([&] { return d.settled(); }));
  CHECK(waiting.count.load() == 1);
  CHECK(waiting.result().ok());
  CHECK(pread_all(d.ours.get(), 2 * MiB, 4096) == d.content.substr(2 * MiB, 4096));
  // It stopped right after the piece that answered the waiting request.
  const auto offsets = d.blob->offsets();
  CHECK(*offsets.rbegin() < 3 * MiB);
  CHECK(d.l.counters.bytes_written.load() < 4 * MiB);

  // Later fills are not affected: the next demand fills its window whole.
  Completions later;
  d.engine.fill(demand(d.target, {6 * MiB, 6 * MiB + 4096}, {4 * MiB, 8 * MiB}), later.callback());
  REQUIRE(d.l.run_until([&] { return later.count.load() == 1 && d.settled(); }));
  CHECK(pread_all(d.ours.get(), 4 * MiB, 4 * MiB) == d.content.substr(4 * MiB));
}

// ---------------------------------------------------------------- fill-ahead

namespace {
FillRequest ahead(std::shared_ptr<Target> target, FillRange range, Deadline deadline = NO_DEADLINE) {
  FillRequest r;
  r.target = std::move(target);
  r.plan = FillPlan{range, /*resume=*/true, {}, /*answer_early=*/true};
  r.deadline = deadline;
  return r;
}
}  // namespace

// Issue 12: a sequential reader's next window, filled with nobody waiting.
TEST_CASE("Engine: fill_ahead writes its range with no request in flight, counted as fill-ahead",
          "[worker][engine][fill_ahead]") {
  Demands d(8, 41, 5 * MiB);
  d.engine.fill_ahead(ahead(d.target, {4 * MiB, 8 * MiB}));
  REQUIRE(test::eventually([&] { return d.blob->offsets().count(5 * MiB) == 1; }));
  CHECK(d.engine.inflight() == 0);  // a drain does not wait for it
  CHECK(d.engine.fills_running() == 1);
  CHECK(d.fc.fill_ahead_running.load() == 1);
  d.release();
  REQUIRE(d.l.run_until([&] { return d.settled(); }));
  CHECK(pread_all(d.ours.get(), 4 * MiB, 4 * MiB) == d.content.substr(4 * MiB));
  CHECK(d.l.counters.bytes_written.load() == 4 * MiB);
  CHECK(d.fc.fill_ahead_running.load() == 0);
  CHECK(d.fc.fill_ahead_stopped.load() == 0);
}

TEST_CASE("Engine: a demand inside a fill-ahead in flight joins it: every byte fetched once",
          "[worker][engine][fill_ahead]") {
  Demands d(8, 42, 5 * MiB);
  d.engine.fill_ahead(ahead(d.target, {4 * MiB, 8 * MiB}));
  REQUIRE(test::eventually([&] { return d.blob->offsets().count(5 * MiB) == 1; }));
  Completions done;
  d.engine.fill(demand(d.target, {6 * MiB, 6 * MiB + 4096}, {4 * MiB, 8 * MiB}), done.callback());
  d.l.loop.run_for(50ms);
  CHECK(done.count.load() == 0);  // not before the fill-ahead got there
  CHECK(d.engine.inflight() == 1);
  CHECK(d.engine.fills_running() == 1);  // no fill of its own
  CHECK(d.fc.fill_ahead_running.load() == 0);  // someone waits on it now
  d.release();
  REQUIRE(d.l.run_until([&] { return done.count.load() == 1 && d.settled(); }));
  CHECK(done.result().ok());
  CHECK(d.blob->reads.load() == static_cast<int>(d.blob->offsets().size()));
  CHECK(d.l.counters.bytes_written.load() == 4 * MiB);
  CHECK(d.fc.reads_joined.load() == 1);
  CHECK(pread_all(d.ours.get(), 4 * MiB, 4 * MiB) == d.content.substr(4 * MiB));
}

TEST_CASE("Engine: fill_ahead leaves out what fills in flight write and what the target holds",
          "[worker][engine][fill_ahead]") {
  Demands d(12, 43, MiB, 4);
  Completions first;
  d.engine.fill(demand(d.target, {0, 4096}, {0, 4 * MiB}), first.callback());
  REQUIRE(d.l.run_until([&] { return first.count.load() == 1; }));
  REQUIRE(::pwrite(d.ours.get(), d.content.data() + 9 * MiB, MiB, 9 * MiB) == static_cast<ssize_t>(MiB));
  // [0, 4M) is in flight: two fills ahead, [4M, 8M) and [8M, 12M).
  d.engine.fill_ahead(ahead(d.target, {0, 8 * MiB}));
  d.engine.fill_ahead(ahead(d.target, {8 * MiB, 12 * MiB}));
  CHECK(d.engine.fills_running() == 3);
  d.release();
  REQUIRE(d.l.run_until([&] { return d.settled(); }));
  CHECK(d.file() == d.content);
  CHECK(d.blob->offsets().count(9 * MiB) == 0);
  CHECK(d.blob->reads.load() == static_cast<int>(d.blob->offsets().size()));
  CHECK(d.l.counters.bytes_written.load() == 11 * MiB);
}

TEST_CASE("Engine: withdraw stops a fill-ahead at its next chunk and releases its target",
          "[worker][engine][fill_ahead]") {
  Demands d(8, 44, 5 * MiB);
  std::weak_ptr<Target> weak = d.target;
  d.engine.fill_ahead(ahead(d.target, {4 * MiB, 8 * MiB}));
  REQUIRE(test::eventually([&] { return d.blob->offsets().count(5 * MiB) == 1; }));
  d.engine.withdraw(d.target.get());
  d.target.reset();
  CHECK_FALSE(weak.expired());  // the fill held in the backend still has it
  const auto reads_before = d.blob->reads.load();
  d.release();
  REQUIRE(d.l.run_until([&] { return d.settled() && weak.expired(); }));
  CHECK(d.blob->reads.load() == reads_before);
  CHECK(d.fc.fill_ahead_stopped.load() == 1);
  CHECK(d.fc.fill_ahead_running.load() == 0);
}

TEST_CASE("Engine: abandon_fill_ahead stops a fill-ahead at its next chunk", "[worker][engine][fill_ahead]") {
  Demands d(8, 45, 5 * MiB);
  d.engine.fill_ahead(ahead(d.target, {4 * MiB, 8 * MiB}));
  REQUIRE(test::eventually([&] { return d.blob->offsets().count(5 * MiB) == 1; }));
  d.engine.abandon_fill_ahead();
  d.release();
  REQUIRE(d.l.run_until([&] { return d.settled(); }));
  CHECK(*d.blob->offsets().rbegin() == 5 * MiB);
  CHECK(d.l.counters.bytes_written.load() == 2 * MiB);
  CHECK(d.fc.fill_ahead_stopped.load() == 1);
  CHECK(d.fc.fill_ahead_running.load() == 0);
}

TEST_CASE("Engine: a demand whose pages are already in the target is answered without a read",
          "[worker][engine][early]") {
  Demands d(4, 28, std::nullopt, 1);
  REQUIRE(::pwrite(d.ours.get(), d.content.data(), 4 * MiB, 0) == static_cast<ssize_t>(4 * MiB));
  Completions done;
  d.engine.fill(demand(d.target, {MiB, MiB + 4096}, {0, 4 * MiB}), done.callback());
  REQUIRE(d.l.run_until([&] { return done.count.load() == 1 && d.settled(); }));
  CHECK(done.result().ok());
  CHECK(d.blob->reads.load() == 0);
}

// The compressed-image rule: a plan that does not answer early answers
// nobody before the whole range is in, whoever joins it.
TEST_CASE("Engine: a fill decided not to answer early answers its requests only when its whole range is in",
          "[worker][engine][early]") {
  Demands d(4, 29, 3 * MiB);
  Completions first, joined;
  auto request = demand(d.target, {0, 4096}, {0, MiB});
  request.decide = [](Target&, Deadline) { return FillPlan{{0, 4 * MiB}, true, {}, /*answer_early=*/false}; };
  d.engine.fill(std::move(request), first.callback());
  REQUIRE(test::eventually([&] { return d.blob->offsets().count(3 * MiB) == 1; }));
  // Written already, but the blob is not whole.
  d.engine.fill(demand(d.target, {MiB, MiB + 4096}, {0, MiB}), joined.callback());
  d.l.loop.run_for(50ms);
  CHECK(first.count.load() == 0);
  CHECK(joined.count.load() == 0);
  d.release();
  REQUIRE(d.l.run_until([&] { return first.count.load() == 1 && joined.count.load() == 1; }));
  CHECK(first.result().ok());
  CHECK(joined.result().ok());
  CHECK(d.file() == d.content);
}

// ---------------------------------------------------------------- prefetch

TEST_CASE("Engine: cancel_prefetch releases a queued target at once, behind a long queue",
          "[worker][engine][prefetch]") {
  Loop l;
  auto slow = std::make_shared<SlowBlob>(test::pattern_bytes(64 * 4096));
  slow->hold = true;  // the front of the queue stays busy
  OneBlobBackend backend(slow);
  Engine engine(l.loop, backend, EngineOptions{.io_threads = 1, .prefetch_window = 4096}, l.counters, l.metrics);
  auto front = memfd_target(slow, "front");
  engine.prefetch(front);
  std::vector<std::weak_ptr<Target>> queued;
  for (int i = 0; i < 50; ++i) {
    auto t = memfd_target(std::make_shared<SlowBlob>(test::pattern_bytes(8 * 4096)), "queued");
    queued.push_back(t);
    engine.prefetch(std::move(t));
  }
  REQUIRE(test::eventually([&] { return slow->reads.load() == 1; }));
  CHECK(engine.prefetch_queued() == 51);
  const auto before = test::open_fd_count();
  for (auto& w : queued) {
    auto t = w.lock();
    REQUIRE(t);
    engine.cancel_prefetch(t.get());
  }
  // Nobody else held them: the queue was the last owner.
  for (auto& w : queued) CHECK(w.expired());
  CHECK(test::open_fd_count() == before - 50);
  CHECK(engine.prefetch_queued() == 1);
  slow->hold = false;
  engine.cancel_prefetch(front.get());
  REQUIRE(l.run_until([&] { return engine.prefetch_queued() == 0; }));
  engine.join();
}

}  // namespace ondemand::worker
