#include "engine/engine.h"

#include <unistd.h>

#include <algorithm>
#include <memory>
#include <cerrno>
#include <cstdlib>
#include <new>

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

FillResult run_fill(Target& target, const FillPlan& plan, Deadline deadline,
                    const std::function<void()>& progress) {
  const std::size_t chunk = std::clamp<std::size_t>(align_up(target.blob->read_unit(), PAGE), MIN_CHUNK, MAX_CHUNK);
  // One buffer per pool thread, grown to the largest unit it has met.
  thread_local std::unique_ptr<AlignedBuffer> buffer;
  thread_local std::size_t buffer_size = 0;
  if (buffer_size < chunk) {
    buffer = std::make_unique<AlignedBuffer>(chunk);
    buffer_size = chunk;
  }
  FillResult r;
  r.range = plan.range;
  const auto [start, end] = plan.range;
  auto pos = start;
  const auto landed = [&] {
    if (plan.stall_timeout.count() > 0)
      deadline = std::max(deadline, std::chrono::steady_clock::now() + plan.stall_timeout);
    if (progress) progress();
  };
  while (pos < end) {
    auto segment_end = end;
    if (plan.resume) {
      const auto hole = next_hole(target.fd.get(), pos, end);
      if (!hole) {
        pos = end;
        landed();
        break;
      }
      if (hole->start > pos) {
        pos = hole->start;
        landed();
      }
      segment_end = hole->end;
    }
    while (pos < segment_end) {
      if (std::chrono::steady_clock::now() >= deadline) {
        r.error = timeout_error(fmt::format("deadline passed at offset {} of [{}, {})", pos, start, end));
        r.done = pos - start;
        return r;
      }
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, segment_end - pos));
      auto span = std::span(buffer->data(), n);
      if (auto err = target.blob->read(pos, span, deadline)) {
        r.error = std::move(err);
        r.done = pos - start;
        return r;
      }
      auto w = sys::pwrite_full(target.fd.get(), span.data(), n, pos);
      if (!w.ok()) {
        r.write_err = w.err;
        r.done = pos - start;
        return r;
      }
      pos += n;
      r.written += n;
      landed();
    }
  }
  r.done = end - start;
  return r;
}

Engine::Engine(asio::io_context& loop, Backend& backend, EngineOptions options,
               proto::WorkerCounters& counters, proto::WorkerMetrics& metrics)
    : loop_(loop),
      backend_(backend),
      options_(options),
      counters_(counters),
      metrics_(metrics),
      pool_(options.io_threads) {}

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

void Engine::fill(FillRequest request, FillDone on_done) {
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
    if (result.write_err == ENOBUFS) counters_.cache_enobufs.fetch_add(1, std::memory_order_relaxed);
    if (result.error)
      metrics_.backend_errors[static_cast<std::size_t>(proto::BackendErrorKind::READ)].fetch_add(
          1, std::memory_order_relaxed);
    else if (result.write_err)
      metrics_.cache_write_errors.fetch_add(1, std::memory_order_relaxed);
    on_done(result);
    asio::post(loop_, [this, token] { end_op(token); });
  });
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
      spdlog::debug("prefetch of blob \"{}\" done ({} bytes)", proto::describe(job.target->ref), size);
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
      if (result.write_err == ENOBUFS) counters_.cache_enobufs.fetch_add(1, std::memory_order_relaxed);
      if (result.error)
        metrics_.backend_errors[static_cast<std::size_t>(proto::BackendErrorKind::READ)].fetch_add(
            1, std::memory_order_relaxed);
      else if (result.write_err)
        metrics_.cache_write_errors.fetch_add(1, std::memory_order_relaxed);
      asio::post(loop_, [this] {
        prefetch_busy_ = false;
        pump_prefetch();
      });
    });
    return;
  }
}

}  // namespace ondemand::worker
