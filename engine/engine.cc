#include "engine/engine.h"

#include <unistd.h>

#include <algorithm>
#include <memory>
#include <cerrno>
#include <cstdlib>
#include <new>
#include <span>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/sys.h"

namespace ondemand::worker {
namespace asio = boost::asio;

namespace {
// One blob read and one pwrite at most: Blob::read_unit(), within these.
constexpr std::size_t MIN_CHUNK = 1 << 20;
constexpr std::size_t MAX_CHUNK = 16 << 20;
// Prefetch runs only while at most this many operations are in flight:
// demand goes first.
constexpr std::uint32_t PREFETCH_MAX_DEMAND = 1;

struct AlignedBuffer {
  explicit AlignedBuffer(std::size_t size)
      : ptr(static_cast<std::byte*>(std::aligned_alloc(PAGE, size))) {
    if (!ptr) throw std::bad_alloc();
  }
  ~AlignedBuffer() { std::free(ptr); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  std::byte* data() { return ptr; }
  std::byte* ptr;
};

std::uint64_t align_down(std::uint64_t v, std::uint64_t a) { return v - v % a; }
std::uint64_t align_up(std::uint64_t v, std::uint64_t a) {
  const auto rem = v % a;
  return rem ? v + (a - rem) : v;
}

// lseek that reports errno instead of -1 (ENXIO: no data/hole at or after
// `pos` before EOF).
std::pair<off_t, int> seek(int fd, std::uint64_t pos, int whence) {
  const off_t r = ::lseek(fd, static_cast<off_t>(pos), whence);
  return {r, r < 0 ? errno : 0};
}

// The first page-aligned hole of `fd` in [pos, end), as the file system
// reports it; [pos, end) when the fd cannot say (a pipe: ESPIPE), nullopt
// when everything there is data. `pos` is page-aligned. A block of data
// that does not fill its page is rewritten with its page: idempotent.
std::optional<FillRange> next_hole(int fd, std::uint64_t pos, std::uint64_t end) {
  auto [hole, err] = seek(fd, pos, SEEK_HOLE);
  if (err == ENXIO) return FillRange{pos, end};  // at or past EOF: all hole
  if (err) return FillRange{pos, end};           // cannot tell: copy it all
  const auto start = std::max(pos, align_down(static_cast<std::uint64_t>(hole), PAGE));
  if (start >= end) return std::nullopt;
  auto [data, err2] = seek(fd, start, SEEK_DATA);
  if (err2) return FillRange{start, end};  // ENXIO: no data after the hole
  const auto hole_end = std::min(end, align_up(static_cast<std::uint64_t>(data), PAGE));
  // A file that answers every seek with 0 (/dev/null's noop llseek) knows
  // nothing about holes: copy it all.
  if (hole_end <= start) return FillRange{start, end};
  return FillRange{start, hole_end};
}
}  // namespace

FillRange fill_range(std::uint64_t off, std::uint64_t len, std::uint64_t blob_size,
                     std::uint64_t window) {
  window = std::max<std::uint64_t>(align_up(window, PAGE), PAGE);
  const auto limit = align_up(blob_size, PAGE);
  if (off >= limit || len == 0) return {};
  const auto want_end = std::min(limit, off + std::min(len, limit - off));
  FillRange r;
  r.start = align_down(off, window);
  r.end = std::min(limit, align_up(want_end, window));
  return r;
}

// Copies the plan's range in pieces of the blob's read unit, stopping at the
// first error. The
// cachefiles anonymous fd writes with IOCB_DIRECT into the cache file
// (__cachefiles_write), so the memory must be block-aligned as well as the
// offset: a malloc'd buffer gets EINVAL.
FillRange ReadAhead::plan(std::uint64_t off, std::uint64_t len, std::uint64_t blob_size, std::uint64_t min,
                          std::uint64_t max) {
  min = std::max<std::uint64_t>(align_up(min, PAGE), PAGE);
  max = std::max(align_up(max, PAGE), min);
  ++clock_;
  Stream* stream = nullptr;
  std::uint64_t window = 0;
  for (auto& s : streams_) {
    if (s.window == 0) continue;
    if (off == s.next) {  // goes on where its last fill ended
      stream = &s;
      window = std::min(s.window * 2, max);
      ++sequential_;
      break;
    }
    if (off >= s.start && off < s.next) {  // inside its last fill
      stream = &s;
      window = s.window;
      break;
    }
  }
  if (!stream) {
    ++jumps_;
    stream = &streams_[0];
    for (auto& s : streams_)
      if (s.used < stream->used) stream = &s;
    window = off == 0 ? max : min;
  }
  // From the request's page on, `window` long (at least what was asked):
  // a stream's window moves with it instead of snapping to a multiple of
  // itself, which would rewrite what the last fill just wrote.
  FillRange range;
  const auto limit = align_up(blob_size, PAGE);
  if (off < limit && len > 0) {
    range.start = align_down(off, PAGE);
    const auto want_end = align_up(off + std::min(len, limit - off), PAGE);
    range.end = std::min(limit, std::max(want_end, range.start + window));
  }
  stream->window = window;
  stream->used = clock_;
  // A READ inside the last fill keeps the stream where it was going.
  if (range.end > stream->next || stream->next == 0 || off < stream->start) {
    stream->start = range.start;
    stream->next = range.end;
  }
  return range;
}

FillRange FillAheadStreams::plan(std::uint64_t off, FillRange fill, std::uint64_t blob_size, std::uint64_t window,
                                 std::uint32_t windows) {
  if (fill.start >= fill.end) return {};
  ++clock_;
  const auto page = align_down(off, PAGE);
  Stream* stream = nullptr;
  bool sequential = false;
  for (auto& s : streams_) {
    if (s.used == 0) continue;
    if (page >= s.last.end && page <= s.ahead) {  // where it went on to
      stream = &s;
      sequential = true;
      break;
    }
    if (page >= s.last.start && page < s.last.end) {  // inside its last fill
      stream = &s;
      // Once the stream has gone on (the reader catching that fill up), or
      // when the READ reaches past it (the kernel's read crossing into the
      // next window; a 4 KiB random read seldom does).
      sequential = s.runs > 0 || fill.end > s.last.end;
      break;
    }
  }
  if (!stream) {
    stream = &streams_[0];
    for (auto& s : streams_)
      if (s.used < stream->used) stream = &s;
    *stream = Stream{};
  }
  stream->used = clock_;
  if (fill.end >= stream->last.end) stream->last = fill;
  stream->ahead = std::max(stream->ahead, fill.end);
  if (!sequential) return {};
  ++stream->runs;
  const auto limit = align_up(blob_size, PAGE);
  const auto step = std::max<std::uint64_t>(align_up(window, PAGE), PAGE);
  FillRange ahead{stream->ahead, std::min(limit, fill.end + step * windows)};
  if (ahead.start >= ahead.end) return {};
  stream->ahead = ahead.end;
  return ahead;
}

namespace {

// The piece a fill reads from its blob at once: Blob::read_unit(), in pages,
// within MIN_CHUNK..MAX_CHUNK.
std::size_t fill_chunk(const Blob& blob) {
  return std::clamp<std::size_t>(align_up(blob.read_unit(), PAGE), MIN_CHUNK, MAX_CHUNK);
}

struct CopyOutcome {
  std::uint64_t done = 0;     // bytes of the ranges now in the target, counted in their order
  std::uint64_t written = 0;  // of those, written here
  std::optional<BackendError> error;
  int write_err = 0;
};

// Called after every chunk that lands (or stretch found already there) with
// the bytes done and written so far; may move the deadline later; returns
// false to stop copying.
using Landed = std::function<bool(std::uint64_t done, std::uint64_t written, Deadline& deadline)>;

// Copies `ranges` in their order, each in pieces of the blob's read unit,
// stopping at the first error. The cachefiles anonymous fd writes with
// IOCB_DIRECT into the cache file (__cachefiles_write), so the memory must
// be block-aligned as well as the offset: a malloc'd buffer gets EINVAL.
CopyOutcome copy_ranges(Target& target, std::span<const FillRange> ranges, bool resume,
                        std::chrono::nanoseconds stall_timeout, Deadline deadline, const Landed& landed) {
  const std::size_t chunk = fill_chunk(*target.blob);
  // One buffer per pool thread, grown to the largest unit it has met.
  thread_local std::unique_ptr<AlignedBuffer> buffer;
  thread_local std::size_t buffer_size = 0;
  if (buffer_size < chunk) {
    buffer = std::make_unique<AlignedBuffer>(chunk);
    buffer_size = chunk;
  }
  CopyOutcome r;
  std::uint64_t before = 0;  // bytes of the ranges before this one
  for (const auto& [start, end] : ranges) {
    if (start >= end) continue;
    auto pos = start;
    const auto land = [&] {
      r.done = before + (pos - start);
      if (stall_timeout.count() > 0)
        deadline = std::max(deadline, std::chrono::steady_clock::now() + stall_timeout);
      return landed(r.done, r.written, deadline);
    };
    while (pos < end) {
      auto segment_end = end;
      if (resume) {
        const auto hole = next_hole(target.fd.get(), pos, end);
        if (!hole) {
          pos = end;
          if (!land()) return r;
          break;
        }
        if (hole->start > pos) {
          pos = hole->start;
          if (!land()) return r;
        }
        segment_end = hole->end;
      }
      while (pos < segment_end) {
        if (std::chrono::steady_clock::now() >= deadline) {
          r.error = timeout_error(fmt::format("deadline passed at offset {} of [{}, {})", pos, start, end));
          return r;
        }
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, segment_end - pos));
        auto span = std::span(buffer->data(), n);
        if (auto err = target.blob->read(pos, span, deadline)) {
          r.error = std::move(err);
          return r;
        }
        auto w = sys::pwrite_full(target.fd.get(), span.data(), n, pos);
        if (!w.ok()) {
          r.write_err = w.err;
          return r;
        }
        pos += n;
        r.written += n;
        if (!land()) return r;
      }
    }
    before += end - start;
    r.done = before;
  }
  return r;
}

// ---- page-aligned byte ranges as sets, for requests waiting on fills ----

using Spans = std::vector<FillRange>;

bool empty(FillRange r) { return r.start >= r.end; }
bool overlaps(FillRange a, FillRange b) { return a.start < b.end && b.start < a.end; }

// Bytes of `need`, from its start, that `spans` cover without a gap.
std::uint64_t covered_prefix(FillRange need, Spans spans) {
  std::sort(spans.begin(), spans.end(), [](FillRange a, FillRange b) { return a.start < b.start; });
  auto pos = need.start;
  for (const auto& s : spans) {
    if (s.start > pos) break;
    pos = std::max(pos, s.end);
  }
  return std::min(pos, need.end) - std::min(need.start, need.end);
}
bool covers(FillRange need, const Spans& spans) { return covered_prefix(need, spans) >= need.end - need.start; }

// The parts of `need` no span covers, in order.
Spans gaps(FillRange need, Spans spans) {
  std::sort(spans.begin(), spans.end(), [](FillRange a, FillRange b) { return a.start < b.start; });
  Spans out;
  auto pos = need.start;
  for (const auto& s : spans) {
    if (s.end <= pos) continue;
    if (s.start >= need.end) break;
    if (s.start > pos) out.push_back({pos, s.start});
    pos = std::max(pos, s.end);
  }
  if (pos < need.end) out.push_back({pos, need.end});
  return out;
}

}  // namespace

FillResult run_fill(Target& target, const FillPlan& plan, Deadline deadline,
                    const std::function<void()>& progress) {
  const std::array ranges{plan.range};
  const auto c = copy_ranges(target, ranges, plan.resume, plan.stall_timeout, deadline,
                             [&](std::uint64_t, std::uint64_t, Deadline&) {
                               if (progress) progress();
                               return true;
                             });
  return FillResult{plan.range, c.done, c.written, c.error, c.write_err};
}

// One demand fill in flight, and what the requests waiting on it need to
// know. Guarded by Engine::fills_mu_.
struct Engine::ActiveFill {
  const Target* target = nullptr;
  FillRange range;  // planned on the loop; the decided plan's once decided
  FillRange need;   // written first by an early plan
  bool decided = false;
  bool early = false;
  std::array<FillRange, 3> order{};  // the writing order, once decided
  std::uint64_t done = 0;            // bytes of `order` in the target, in that order
  bool ending = false;    // stopping or finished: nothing may join it
  bool finished = false;  // `done` and the outcome are final
  std::optional<BackendError> error;
  int write_err = 0;
  bool abandoned = false;  // stop once no request waits on it
  bool withdrawn = false;
  Deadline deadline = NO_DEADLINE;  // the latest of its requests'
  std::uint32_t waiters = 0;        // requests counting on it

  // What is surely in the target. An answer-late plan (or one not decided
  // yet) promises nothing before it ends.
  Spans done_spans() const {
    Spans out;
    if (!decided || (!early && !finished)) return out;
    auto left = done;
    for (const auto& seg : order) {
      if (empty(seg)) continue;
      const auto take = std::min(left, seg.end - seg.start);
      if (take) out.push_back({seg.start, seg.start + take});
      left -= take;
      if (take < seg.end - seg.start) break;
    }
    return out;
  }
  // What may yet be in the target.
  Spans possible_spans() const { return finished ? done_spans() : Spans{range}; }
};

struct Engine::Waiter {
  std::uint64_t token = 0;
  std::shared_ptr<Op> op;
  const Target* target = nullptr;
  FillRange need;
  std::vector<std::shared_ptr<ActiveFill>> fills;  // the fills that write `need`
  bool joined = false;                               // none of them is its own
  FillDone on_done;
};

Engine::Engine(asio::io_context& loop, Backend& backend, EngineOptions options,
               proto::WorkerCounters& counters, proto::WorkerMetrics& metrics)
    : loop_(loop),
      backend_(backend),
      options_(options),
      counters_(counters),
      metrics_(metrics),
      pool_(options.io_threads),
      fill_counters_(options.fill_counters ? *options.fill_counters : own_fill_counters_) {}

Engine::~Engine() { join(); }

void Engine::join() { pool_.join(); }

std::pair<std::uint64_t, std::shared_ptr<Engine::Op>> Engine::begin_op(std::string what) {
  counters_.inflight.fetch_add(1, std::memory_order_relaxed);
  const auto token = next_token_++;
  auto op = std::make_shared<Op>();
  op->progress_ns.store(sys::monotonic_ns(), std::memory_order_relaxed);
  op->what = std::move(what);
  ops_.emplace(token, op);
  return {token, std::move(op)};
}

void Engine::end_op(std::uint64_t token) {
  counters_.inflight.fetch_sub(1, std::memory_order_relaxed);
  ops_.erase(token);
  std::uint64_t zero = 0;
  counters_.first_reply_ns.compare_exchange_strong(zero, sys::monotonic_ns());
  if (on_done_) on_done_();
  pump_prefetch();
}

const Engine::Op* Engine::oldest_op() const {
  const Op* oldest = nullptr;
  std::uint64_t oldest_ns = 0;
  for (const auto& [token, op] : ops_) {
    const auto t = op->progress_ns.load(std::memory_order_relaxed);
    if (!oldest || t < oldest_ns) {
      oldest = op.get();
      oldest_ns = t;
    }
  }
  return oldest;
}

std::uint64_t Engine::oldest_request_ns() const {
  const Op* op = oldest_op();
  return op ? op->progress_ns.load(std::memory_order_relaxed) : 0;
}

std::string Engine::oldest_request_what() const {
  const Op* op = oldest_op();
  return op ? op->what : std::string();
}

void Engine::count_open_error(const BackendError& error) {
  using K = BackendError::Kind;
  const auto kind = error.kind == K::NOT_FOUND ? proto::BackendErrorKind::NOT_FOUND
                    : error.kind == K::ACCESS  ? proto::BackendErrorKind::DENIED
                                               : proto::BackendErrorKind::OPEN;
  metrics_.backend_errors[static_cast<std::size_t>(kind)].fetch_add(1, std::memory_order_relaxed);
}

OpenResult Engine::open_now(const proto::BlobRef& ref, Deadline deadline) {
  if (auto why = proto::validate_blob_ref(ref))
    return {nullptr, BackendError{BackendError::Kind::INVALID, EINVAL, *why}};
  auto result = backend_.open(ref, deadline);
  if (result.error) count_open_error(*result.error);
  return result;
}

void Engine::open(proto::BlobRef ref, Deadline deadline, OpenDone on_done, std::string what) {
  if (auto why = proto::validate_blob_ref(ref))
    return on_done({nullptr, BackendError{BackendError::Kind::INVALID, EINVAL, *why}});
  if (what.empty()) what = fmt::format("open of blob {}", ref.blob_id);
  auto [token, op] = begin_op(std::move(what));
  asio::post(pool_, [this, token, ref = std::move(ref), deadline, on_done = std::move(on_done)]() mutable {
    auto result = backend_.open(ref, deadline);
    asio::post(loop_, [this, token, result = std::move(result), on_done = std::move(on_done)]() mutable {
      if (result.error) count_open_error(*result.error);
      on_done(std::move(result));
      end_op(token);
    });
  });
}

void Engine::count_fill(const FillResult& result) {
  if (result.write_err == ENOBUFS) counters_.cache_enobufs.fetch_add(1, std::memory_order_relaxed);
  if (result.error)
    metrics_.backend_errors[static_cast<std::size_t>(proto::BackendErrorKind::READ)].fetch_add(
        1, std::memory_order_relaxed);
  else if (result.write_err)
    metrics_.cache_write_errors.fetch_add(1, std::memory_order_relaxed);
}

void Engine::fill(FillRequest request, FillDone on_done) {
  if (!empty(request.need)) return fill_demand(std::move(request), std::move(on_done));
  auto what = std::move(request.what);
  if (what.empty())
    what = fmt::format("fill of blob {} [{}, {})", request.target->ref.blob_id, request.plan.range.start,
                       request.plan.range.end);
  auto [token, op] = begin_op(std::move(what));
  asio::post(pool_, [this, token, op = std::move(op), request = std::move(request),
                     on_done = std::move(on_done)]() {
    auto& target = *request.target;
    const auto plan = request.decide ? request.decide(target, request.deadline) : request.plan;
    const auto result = run_fill(target, plan, request.deadline, [&] {
      op->progress_ns.store(sys::monotonic_ns(), std::memory_order_relaxed);
    });
    counters_.bytes_written.fetch_add(result.written, std::memory_order_relaxed);
    count_fill(result);
    on_done(result);
    asio::post(loop_, [this, token] { end_op(token); });
  });
}

// On the loop. The request waits on the fills in flight on its target that
// will write some of its need, and on a fill of its own for the rest (if
// any): the part of its planned range that no fill in flight writes, around
// what is missing.
void Engine::fill_demand(FillRequest request, FillDone on_done) {
  auto what = std::move(request.what);
  if (what.empty())
    what = fmt::format("fill of blob {} [{}, {})", request.target->ref.blob_id, request.need.start,
                       request.need.end);
  auto [token, op] = begin_op(std::move(what));
  const Target* target = request.target.get();
  std::shared_ptr<ActiveFill> own;
  std::vector<Answer> now;
  {
    std::lock_guard lock(fills_mu_);
    auto waiter = std::make_unique<Waiter>();
    waiter->token = token;
    waiter->op = std::move(op);
    waiter->target = target;
    waiter->need = request.need;
    waiter->on_done = std::move(on_done);
    Spans others;
    for (const auto& f : active_) {
      if (f->target != target || f->ending) continue;
      others.push_back(f->range);
      if (overlaps(f->range, request.need)) waiter->fills.push_back(f);
    }
    const auto missing = gaps(request.need, others);
    if (!missing.empty()) {
      own = add_active(target, {missing.front().start, missing.back().end}, request.plan.range, others,
                       request.deadline);
      waiter->fills.push_back(own);
    }
    waiter->joined = !own;
    for (auto& f : waiter->fills) {
      f->deadline = std::max(f->deadline, request.deadline);
      add_waiter(*f);
    }
    if (!settle_one(*waiter, now)) waiting_.push_back(std::move(waiter));
  }
  answer(now);
  if (own)
    asio::post(pool_, [this, own, request = std::move(request)]() mutable { run_active(own, request); });
}

// Under fills_mu_: a fill of `need` (written first) widened to `range`, cut
// where it meets `others` (the ranges in flight on its target), registered
// and counted as fill-ahead until a request waits on it (add_waiter).
std::shared_ptr<Engine::ActiveFill> Engine::add_active(const Target* target, FillRange need, FillRange range,
                                                       const Spans& others, Deadline deadline) {
  auto fill = std::make_shared<ActiveFill>();
  fill->target = target;
  fill->need = need;
  FillRange r{std::min(range.start, need.start), std::max(range.end, need.end)};
  for (const auto& o : others) {
    if (o.end <= need.start)
      r.start = std::max(r.start, o.end);
    else if (o.start >= need.end)
      r.end = std::min(r.end, o.start);
  }
  fill->range = r;
  fill->deadline = deadline;
  active_.push_back(fill);
  ++ahead_;  // the caller publishes, or a waiter joins at once
  fills_running_.fetch_add(1, std::memory_order_relaxed);
  return fill;
}

// On the loop. The background remainder of an answer-first fill without
// the answered head: each stretch of the range that no fill in flight on
// the target writes becomes a fill of its own that nobody waits on, so
// stretches run side by side on the pool. A later demand joins them like
// any fill in flight.
void Engine::fill_ahead(FillRequest request) {
  std::vector<std::shared_ptr<ActiveFill>> started;
  {
    std::lock_guard lock(fills_mu_);
    const Target* target = request.target.get();
    Spans others;
    for (const auto& f : active_)
      if (f->target == target && !f->ending) others.push_back(f->range);
    for (const auto& gap : gaps(request.plan.range, others))
      started.push_back(add_active(target, gap, gap, others, request.deadline));
    if (!started.empty()) publish_ahead();
  }
  request.plan.answer_early = true;  // joining demands are answered as its bytes land
  request.need = {};
  for (auto& fill : started)
    asio::post(pool_, [this, fill, request]() mutable { run_active(fill, request); });
}

// On the pool: decide, write the need first (an early plan), answer the
// requests as their bytes land, go on with the rest unless abandoned.
void Engine::run_active(const std::shared_ptr<ActiveFill>& fill, FillRequest& request) {
  auto& target = *request.target;
  std::vector<Answer> out;
  Deadline deadline;
  {
    std::lock_guard lock(fills_mu_);
    deadline = fill->deadline;
  }
  auto plan = request.decide ? request.decide(target, deadline) : request.plan;
  std::array<FillRange, 3> order{};
  {
    std::lock_guard lock(fills_mu_);
    if (plan.answer_early)
      plan.range = fill->range;
    else
      fill->range = plan.range;
    fill->early = plan.answer_early;
    const FillRange need{std::max(fill->need.start, plan.range.start), std::min(fill->need.end, plan.range.end)};
    const auto chunk = fill_chunk(*target.blob);
    if (fill->early && !empty(need) && chunk > MIN_CHUNK) {
      // A remote blob pays a round trip (an HTTP request) per read: keep
      // one read per piece of the window, the piece holding the need first.
      const auto first = plan.range.start + (need.start - plan.range.start) / chunk * chunk;
      fill->order = {FillRange{first, plan.range.end}, FillRange{plan.range.start, first}, FillRange{}};
    } else if (fill->early && !empty(need)) {
      // A local one: the need alone first, then the window after it, then
      // before it.
      fill->order = {need, FillRange{need.end, plan.range.end}, FillRange{plan.range.start, need.start}};
    } else {
      fill->order = {plan.range, FillRange{}, FillRange{}};
    }
    fill->decided = true;
    // Abandoned, and nobody waits any more (withdrawn, or answered by
    // other fills meanwhile): write nothing.
    if (!(fill->abandoned && fill->waiters == 0)) order = fill->order;
    deadline = fill->deadline;
    settle(*fill, out);
  }
  answer(out);
  std::uint64_t counted = 0;  // of the bytes written, those in bytes_written already
  const auto c = copy_ranges(target, order, plan.resume, plan.stall_timeout, deadline,
                             [&](std::uint64_t done, std::uint64_t written, Deadline& dl) {
    // Per chunk, not at the end: a reader answered early must not see
    // counters that lag behind the bytes it was given.
    counters_.bytes_written.fetch_add(written - counted, std::memory_order_relaxed);
    counted = written;
    std::vector<Answer> ready;
    bool go_on = true;
    {
      std::lock_guard lock(fills_mu_);
      fill->done = done;
      dl = std::max(dl, fill->deadline);
      settle(*fill, ready);
      if (fill->abandoned && fill->waiters == 0) go_on = false, fill->ending = true;
    }
    answer(ready);
    return go_on;
  });
  counters_.bytes_written.fetch_add(c.written - counted, std::memory_order_relaxed);
  std::uint64_t total = 0;
  for (const auto& r : fill->order) total += empty(r) ? 0 : r.end - r.start;
  const bool failed = c.error || c.write_err;
  const bool stopped = !failed && c.done < total;
  bool withdrawn = false, unheard = false;
  {
    std::lock_guard lock(fills_mu_);
    fill->done = c.done;
    fill->error = c.error;
    fill->write_err = c.write_err;
    fill->ending = true;
    if (fill->waiters == 0) {
      --ahead_;
      publish_ahead();
      unheard = failed;  // nobody gets this failure as an answer
    }
    fill->finished = true;
    withdrawn = fill->withdrawn;
    std::erase(active_, fill);
    settle(*fill, out);
  }
  answer(out);
  FillResult result{plan.range, c.done, c.written, c.error, c.write_err};
  count_fill(result);
  if (stopped) fill_counters_.fill_ahead_stopped.fetch_add(1, std::memory_order_relaxed);
  if (unheard) {
    // The requests it served were answered already; a READ of what is
    // missing asks again.
    const auto at = fill->order[0].start;
    const auto msg = c.error ? c.error->message : sys::errno_name(c.write_err);
    if (withdrawn)
      spdlog::debug("fill-ahead of blob {} [{}, {}) after its target was withdrawn: {}", proto::describe(target.ref),
                    plan.range.start, plan.range.end, msg);
    else
      spdlog::info("fill-ahead of blob {} [{}, {}) (from {}) stopped after {} bytes: {}", proto::describe(target.ref),
                   plan.range.start, plan.range.end, at, c.done, msg);
  }
  fills_running_.fetch_sub(1, std::memory_order_relaxed);
}

void Engine::add_waiter(ActiveFill& fill) {
  if (fill.waiters++ == 0 && !fill.finished) {
    --ahead_;
    publish_ahead();
  }
}

void Engine::drop_waiter(ActiveFill& fill) {
  if (--fill.waiters == 0 && !fill.finished) {
    ++ahead_;
    publish_ahead();
  }
}

// Stored, not added: an upgrade's two workers each store their own count,
// and a killed worker's count is overwritten by its successor's first.
void Engine::publish_ahead() { fill_counters_.fill_ahead_running.store(ahead_, std::memory_order_relaxed); }

// Every waiting request that counts on `fill`, settled if it can be.
void Engine::settle(const ActiveFill& fill, std::vector<Answer>& out) {
  for (std::size_t i = 0; i < waiting_.size();) {
    auto& w = *waiting_[i];
    const bool on_it = std::any_of(w.fills.begin(), w.fills.end(), [&](const auto& f) { return f.get() == &fill; });
    if (on_it && settle_one(w, out)) {
      waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(i));
      continue;
    }
    ++i;
  }
}

// Answers `waiter` (into `out`) when its need is in the target, or can no
// longer get there because a fill it counts on ended without writing its
// part; otherwise notes the progress and returns false.
bool Engine::settle_one(Waiter& waiter, std::vector<Answer>& out, bool withdrawn) {
  Spans done, possible;
  bool writing = false;  // a fill it counts on is still writing
  for (const auto& f : waiter.fills) {
    for (const auto& s : f->done_spans()) done.push_back(s);
    for (const auto& s : f->possible_spans()) possible.push_back(s);
    writing = writing || !f->finished;
  }
  FillResult r;
  r.range = waiter.need;
  r.done = covered_prefix(waiter.need, done);
  const bool covered = r.done >= waiter.need.end - waiter.need.start;
  if (withdrawn) {
    r.withdrawn = true;
  } else if (!covered) {
    if (covers(waiter.need, possible)) {
      waiter.op->progress_ns.store(sys::monotonic_ns(), std::memory_order_relaxed);
      return false;
    }
    for (const auto& f : waiter.fills) {
      if (!f->finished || (!f->error && !f->write_err)) continue;
      r.error = f->error;
      r.write_err = f->write_err;
      break;
    }
    if (!r.error && !r.write_err)
      r.error = BackendError{BackendError::Kind::IO, EIO,
                             fmt::format("the fills it waited on ended without [{}, {})",
                                         waiter.need.start + r.done, waiter.need.end)};
  } else {
    if (waiter.joined) fill_counters_.reads_joined.fetch_add(1, std::memory_order_relaxed);
    if (writing) fill_counters_.reads_early.fetch_add(1, std::memory_order_relaxed);
  }
  for (auto& f : waiter.fills) drop_waiter(*f);
  waiter.fills.clear();
  out.push_back({std::move(waiter.on_done), std::move(r), waiter.token});
  return true;
}

void Engine::answer(std::vector<Answer>& answers) {
  for (auto& a : answers) {
    a.on_done(a.result);
    asio::post(loop_, [this, token = a.token] { end_op(token); });
  }
  answers.clear();
}

void Engine::abandon_fill_ahead() {
  std::lock_guard lock(fills_mu_);
  for (auto& f : active_) f->abandoned = true;
}

void Engine::withdraw(const Target* target) {
  cancel_prefetch(target);
  std::vector<Answer> out;
  {
    std::lock_guard lock(fills_mu_);
    for (auto& f : active_)
      if (f->target == target) f->abandoned = f->withdrawn = true;
    for (std::size_t i = 0; i < waiting_.size();) {
      if (waiting_[i]->target == target) {
        settle_one(*waiting_[i], out, /*withdrawn=*/true);
        waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
      ++i;
    }
  }
  answer(out);
}

void Engine::prefetch(std::shared_ptr<Target> target) {
  prefetch_.push_back({std::move(target), 0});
  pump_prefetch();
}

void Engine::cancel_prefetch(const Target* target) {
  std::erase_if(prefetch_, [&](const PrefetchJob& job) { return job.target.get() == target; });
}

void Engine::pump_prefetch() {
  while (!prefetch_busy_ && !prefetch_.empty()) {
    auto& job = prefetch_.front();
    const auto size = align_up(job.target->blob->size(), PAGE);
    if (job.next >= size) {
      // Info, not debug: an operator (and vm_prefetch) can tell when an
      // image is local. A window that failed said so (info too: a CLOSE
      // during a prefetch fails its window's writes with ENOBUFS).
      spdlog::info("prefetch of blob \"{}\" reached its end ({} bytes)", proto::describe(job.target->ref), size);
      prefetch_.pop_front();
      continue;
    }
    if (inflight() > PREFETCH_MAX_DEMAND) return;  // yield: end_op calls us again
    prefetch_busy_ = true;
    const FillPlan plan{{job.next, std::min(size, job.next + std::max(options_.prefetch_window, PAGE))},
                        /*resume=*/true, {}};
    job.next = plan.range.end;
    asio::post(pool_, [this, target = job.target, plan] {
      const auto result = run_fill(*target, plan, NO_DEADLINE);
      counters_.prefetched_bytes.fetch_add(result.written, std::memory_order_relaxed);
      count_fill(result);
      if (result.error || result.write_err)
        spdlog::info("prefetch of blob \"{}\" [{}, {}) stopped after {} bytes: {}; a READ there fills it on demand",
                     proto::describe(target->ref), plan.range.start, plan.range.end, result.done,
                     result.error ? result.error->message : sys::errno_name(result.write_err));
      asio::post(loop_, [this] {
        prefetch_busy_ = false;
        pump_prefetch();
      });
    });
    return;
  }
}

}  // namespace ondemand::worker
