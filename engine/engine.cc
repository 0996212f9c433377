#include "engine/engine.h"

#include <time.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include "common/sys.h"
#include "proto/blob_id.h"

namespace ondemand::worker {
namespace asio = boost::asio;

namespace {
constexpr std::size_t CHUNK = 1 << 20;  // one pread/pwrite pair at most

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

// Whether READs of this object must fill the whole blob rather than a
// window. Linux 6.12 (and mainline as of late 2025) hangs readers of
// compressed EROFS images over fscache when one compressed-data bio finds
// the cache file partly filled: erofs_fscache_read_io_async() then issues a
// fscache_read() for the cached head and another, after an on-demand READ,
// for the rest, and erofs_fscache_bio_endio() ends the bio once per
// fscache_read(); z_erofs_endio() unlocks the bio's folios a second time,
// which re-locks them (folio_unlock toggles PG_locked), and the reader
// sleeps in folio_wait_bit forever. A window fill leaves exactly that
// layout (data up to the window's end, a hole after it), and a bio spans
// up to 1 MiB of adjacent pclusters, so no window size is safe. Filling the
// whole blob at its first READ (the superblock read during mount) leaves no
// hole for such a bio to meet. Only the compressed path (z_erofs bios) is
// affected: plain and chunk-based data complete per fscache_read safely.
// Recognised by the EROFS superblock at 1024: magic, and feature_incompat
// ZERO_PADDING (0x1, set by mkfs.erofs for lz4) or COMPR_CFGS (0x2).
// Limitation: compressed data in an extra device blob (no superblock there)
// is not recognised.
bool fill_whole_blob(Object& object) {
  int known = object.fill_whole.load(std::memory_order_relaxed);
  if (known >= 0) return known == 1;
  constexpr std::uint64_t SB_OFFSET = 1024;
  constexpr std::uint32_t EROFS_MAGIC = 0xE0F5E1E2;
  constexpr std::uint32_t COMPRESSION_FEATURES = 0x1 | 0x2;
  std::array<std::byte, 128> sb{};
  bool whole = false;
  if (object.blob->size() >= SB_OFFSET + sb.size() && object.blob->read(SB_OFFSET, sb) == 0) {
    auto le32 = [&](std::size_t at) {
      std::uint32_t v = 0;
      for (int i = 3; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint32_t>(sb[at + i]);
      return v;
    };
    whole = le32(0) == EROFS_MAGIC && (le32(80) & COMPRESSION_FEATURES) != 0;
  }
  if (whole)
    spdlog::info("blob \"{}\" is a compressed EROFS image: READs fill all {} bytes of it",
                 escape_id(object.blob_id), object.blob->size());
  object.fill_whole.store(whole ? 1 : 0, std::memory_order_relaxed);
  return whole;
}

std::uint64_t align_down(std::uint64_t v, std::uint64_t a) { return v - v % a; }

struct CopyResult {
  std::uint64_t written = 0;  // contiguous bytes from `start` now in the cache file
  int err = 0;
  bool in_backend = false;    // err came from the blob, not from the cache write
};

// Copies [start, end) of the blob into the object's cache file, CHUNK by
// CHUNK, stopping at the first error. The anonymous fd writes with
// IOCB_DIRECT into the cache file (__cachefiles_write), so the memory must be
// block-aligned as well as the offset: a malloc'd buffer gets EINVAL.
CopyResult copy_to_cache(Object& object, std::uint64_t start, std::uint64_t end) {
  thread_local AlignedBuffer buffer(CHUNK);
  CopyResult r;
  for (auto pos = start; pos < end; pos += CHUNK) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(CHUNK, end - pos));
    auto span = std::span(buffer.data(), n);
    if (int err = object.blob->read(pos, span)) return {r.written, err, true};
    auto w = sys::pwrite_full(object.anon_fd.get(), span.data(), n, pos);
    if (!w.ok()) return {r.written, w.err, false};
    r.written += n;
  }
  return r;
}
std::uint64_t align_up(std::uint64_t v, std::uint64_t a) {
  const auto rem = v % a;
  return rem ? v + (a - rem) : v;
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

Engine::Engine(asio::io_context& loop, Backend& backend, Replies& replies, EngineOptions options,
               proto::WorkerCounters& counters, proto::WorkerMetrics& metrics)
    : loop_(loop),
      backend_(backend),
      replies_(replies),
      options_(options),
      counters_(counters),
      metrics_(metrics),
      pool_(options.io_threads),
      restore_timer_(loop) {}

Engine::~Engine() { join(); }

void Engine::join() { pool_.join(); }

std::uint64_t Engine::begin_request() {
  ++inflight_;
  counters_.inflight.fetch_add(1, std::memory_order_relaxed);
  const auto token = next_token_++;
  started_.emplace(token, sys::monotonic_ns());
  return token;
}

void Engine::end_request(std::uint64_t token) {
  --inflight_;
  counters_.inflight.fetch_sub(1, std::memory_order_relaxed);
  started_.erase(token);
  std::uint64_t zero = 0;
  counters_.first_reply_ns.compare_exchange_strong(zero, sys::monotonic_ns());
  if (on_done_) on_done_();
  pump_prefetch();
}

namespace {
constexpr std::uint32_t PREFETCH_MAX_DEMAND = 1;
}

void Engine::queue_prefetch(std::shared_ptr<Object> object) {
  prefetch_.push_back({std::move(object), 0});
  pump_prefetch();
}

void Engine::pump_prefetch() {
  while (!prefetch_busy_ && !prefetch_.empty()) {
    auto& job = prefetch_.front();
    // A closed (or replaced) object needs no more data; a finished one is done.
    const bool live = table_.find(job.object->object_id) == job.object;
    const auto size = align_up(job.object->blob->size(), PAGE);
    if (!live || job.next >= size) {
      if (live)
        spdlog::debug("prefetch of blob \"{}\" done ({} bytes)", escape_id(job.object->blob_id), size);
      prefetch_.pop_front();
      continue;
    }
    if (inflight_ > PREFETCH_MAX_DEMAND) return;  // yield: end_request calls us again
    prefetch_busy_ = true;
    const auto start = job.next;
    const auto end = std::min(size, start + std::max<std::uint64_t>(options_.fill_window, PAGE));
    job.next = end;
    asio::post(pool_, [this, object = job.object, start, end] {
      const auto copied = copy_to_cache(*object, start, end);
      counters_.prefetched_bytes.fetch_add(copied.written, std::memory_order_relaxed);
      if (!copied.in_backend && copied.err == ENOBUFS) counters_.cache_enobufs.fetch_add(1, std::memory_order_relaxed);
      if (copied.err) {
        if (copied.in_backend) count_backend_error(proto::BackendErrorKind::READ);
        else metrics_.cache_write_errors.fetch_add(1, std::memory_order_relaxed);
      }
      asio::post(loop_, [this] {
        prefetch_busy_ = false;
        pump_prefetch();
      });
    });
    return;
  }
}

std::uint64_t Engine::oldest_request_ns() const {
  return started_.empty() ? 0 : started_.begin()->second;
}

void Engine::handle(proto::KernelRequest request, UniqueFd anon_fd) {
  std::visit(
      [&](auto&& req) {
        using T = std::decay_t<decltype(req)>;
        if constexpr (std::is_same_v<T, proto::OpenRequest>)
          handle_open(std::move(req), std::move(anon_fd));
        else if constexpr (std::is_same_v<T, proto::ReadRequest>)
          handle_read(req);
        else
          handle_close(req);
      },
      std::move(request));
}

void Engine::handle_open(proto::OpenRequest&& request, UniqueFd anon_fd) {
  counters_.opens.fetch_add(1, std::memory_order_relaxed);
  if (auto why = validate_blob_id(request.cookie_key)) {
    spdlog::warn("OPEN msg_id={} object_id={} refused: blob id \"{}\": {}", request.msg_id,
                 request.object_id, escape_id(request.cookie_key), *why);
    metrics_.invalid_blob_ids.fetch_add(1, std::memory_order_relaxed);
    reply_copen(request.msg_id, request.object_id, -EINVAL);
    return;  // anon_fd closes here; the kernel marks the object closed
  }
  const auto token = begin_request();
  ++opens_pending_;
  asio::post(pool_, [this, token, request = std::move(request), fd = std::move(anon_fd)]() mutable {
    auto opened = backend_.open(request.cookie_key);
    asio::post(loop_, [this, token, request = std::move(request), fd = std::move(fd),
                       opened = std::move(opened)]() mutable {
      finish_open(token, std::move(request), std::move(fd), std::move(opened));
    });
  });
}

void Engine::finish_open(std::uint64_t token, proto::OpenRequest request, UniqueFd anon_fd,
                         OpenedBlob opened) {
  --opens_pending_;
  if (!opened.blob) {
    spdlog::warn("OPEN msg_id={} object_id={} blob \"{}\" refused: {}", request.msg_id,
                 request.object_id, escape_id(request.cookie_key), sys::errno_name(opened.err));
    count_backend_error(proto::backend_open_error_kind(opened.err));
    reply_copen(request.msg_id, request.object_id, -opened.err);
  } else {
    auto object = std::make_shared<Object>();
    object->object_id = request.object_id;
    object->blob_id = request.cookie_key;
    object->anon_fd = std::move(anon_fd);
    object->blob = opened.blob;
    const auto size = static_cast<std::int64_t>(opened.blob->size());
    // Insert before copen: the kernel may send READs as soon as copen lands.
    if (auto stale = table_.insert(object))
      spdlog::warn("OPEN object_id={} replaces a live entry for blob \"{}\"", request.object_id,
                   escape_id(stale->blob_id));
    spdlog::debug("OPEN msg_id={} object_id={} blob \"{}\" size={}", request.msg_id,
                  request.object_id, escape_id(request.cookie_key), size);
    if (replies_.copen(request.msg_id, size) != 0) {
      table_.erase(request.object_id);
    } else {
      metrics_.opens_ok.fetch_add(1, std::memory_order_relaxed);
      if (options_.prefetch) queue_prefetch(object);
    }
  }
  end_request(token);
  maybe_restore();
}

void Engine::reply_copen(std::uint32_t msg_id, std::uint32_t object_id, std::int64_t value) {
  if (value < 0) counters_.open_refused.fetch_add(1, std::memory_order_relaxed);
  if (int err = replies_.copen(msg_id, value))
    spdlog::warn("copen msg_id={} object_id={} value={} failed: {}", msg_id, object_id, value,
                 sys::errno_name(err));
}

void Engine::handle_read(const proto::ReadRequest& request) {
  // The request left the kernel just before this: read() returned it.
  const auto received_ns = sys::monotonic_ns();
  counters_.reads.fetch_add(1, std::memory_order_relaxed);
  auto object = table_.find(request.object_id);
  if (!object) {
    counters_.unknown_object.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("READ msg_id={} object_id={} for an unknown object: asking for restore",
                 request.msg_id, request.object_id);
    request_restore();
    return;
  }
  const auto token = begin_request();
  asio::post(pool_, [this, token, object = std::move(object), request, received_ns]() {
    const auto range = fill_range(request.offset, request.length, object->blob->size(),
                                  fill_whole_blob(*object) ? align_up(object->blob->size(), PAGE)
                                                           : options_.fill_window);
    const auto copied = copy_to_cache(*object, range.start, range.end);
    const bool ok = copied.err == 0;
    const auto written = copied.written;
    if (!copied.in_backend && copied.err == ENOBUFS) counters_.cache_enobufs.fetch_add(1, std::memory_order_relaxed);
    if (!ok) {
      const auto at = range.start + written;
      if (copied.in_backend) count_backend_error(proto::BackendErrorKind::READ);
      else metrics_.cache_write_errors.fetch_add(1, std::memory_order_relaxed);
      if (copied.in_backend)
        spdlog::warn("READ msg_id={} object_id={} blob \"{}\" off={}: backend read failed: {}", request.msg_id,
                     request.object_id, escape_id(object->blob_id), at, sys::errno_name(copied.err));
      else
        // ENOBUFS: cachefiles_has_space() found cache_dir below its free
        // space threshold (or the object lost its cache file).
        spdlog::warn("READ msg_id={} object_id={} pwrite off={} failed: {}{}", request.msg_id, request.object_id, at,
                     sys::errno_name(copied.err), copied.err == ENOBUFS ? " (cache_dir full?)" : "");
    }
    counters_.bytes_written.fetch_add(written, std::memory_order_relaxed);
    // The range may have been partly written; if the requested part is
    // missing the kernel fails the reader with EIO, which is the truth.
    const bool covered = ok || written >= (request.offset + request.length) - range.start;
    (covered ? metrics_.reads_ok : counters_.read_failed).fetch_add(1, std::memory_order_relaxed);
    if (int err = replies_.read_complete(object->anon_fd.get(), request.msg_id))
      spdlog::warn("READ msg_id={} object_id={} READ_COMPLETE failed: {}", request.msg_id,
                   request.object_id, sys::errno_name(err));
    metrics_.read_latency.observe(proto::READ_LATENCY_BOUNDS_NS, sys::monotonic_ns() - received_ns);
    spdlog::trace("READ msg_id={} object_id={} off={} len={} wrote [{}, {})", request.msg_id,
                  request.object_id, request.offset, request.length, range.start,
                  range.start + written);
    asio::post(loop_, [this, token] { end_request(token); });
  });
}

void Engine::count_backend_error(proto::BackendErrorKind kind) {
  metrics_.backend_errors[static_cast<std::size_t>(kind)].fetch_add(1, std::memory_order_relaxed);
}

void Engine::handle_close(const proto::CloseRequest& request) {
  counters_.closes.fetch_add(1, std::memory_order_relaxed);
  if (!table_.erase(request.object_id))
    spdlog::debug("CLOSE msg_id={} object_id={} for an unknown object (late or duplicate)",
                  request.msg_id, request.object_id);
}

std::vector<std::shared_ptr<Object>> Engine::export_objects() {
  std::vector<std::shared_ptr<Object>> out;
  table_.for_each([&](const std::shared_ptr<Object>& o) { out.push_back(o); });
  for (const auto& o : out) table_.erase(o->object_id);
  return out;
}

bool Engine::import_object(std::uint32_t object_id, const std::string& blob_id, UniqueFd anon_fd) {
  if (auto why = validate_blob_id(blob_id)) {
    spdlog::warn("handover: object_id={} has an invalid blob id \"{}\": {}", object_id, escape_id(blob_id), *why);
    return false;
  }
  auto opened = backend_.open(blob_id);
  if (!opened.blob) {
    spdlog::warn("handover: object_id={} blob \"{}\" cannot be opened: {}; dropping it (the kernel will reopen)",
                 object_id, escape_id(blob_id), sys::errno_name(opened.err));
    count_backend_error(proto::backend_open_error_kind(opened.err));
    return false;
  }
  auto object = std::make_shared<Object>();
  object->object_id = object_id;
  object->blob_id = blob_id;
  object->anon_fd = std::move(anon_fd);
  object->blob = std::move(opened.blob);
  table_.insert(std::move(object));
  return true;
}

void Engine::request_restore() {
  restore_wanted_ = true;
  maybe_restore();
}

void Engine::maybe_restore() {
  if (!restore_wanted_ || opens_pending_ > 0 || restore_timer_armed_) return;
  const auto now = std::chrono::steady_clock::now();
  const auto due = last_restore_ + options_.restore_spacing;
  if (now < due) {
    restore_timer_armed_ = true;
    restore_timer_.expires_at(due);
    restore_timer_.async_wait([this](boost::system::error_code ec) {
      restore_timer_armed_ = false;
      if (!ec) maybe_restore();
    });
    return;
  }
  restore_wanted_ = false;
  last_restore_ = now;
  counters_.restores_repair.fetch_add(1, std::memory_order_relaxed);
  if (int err = replies_.restore())
    spdlog::error("restore failed: {}", sys::errno_name(err));
  else
    spdlog::info("wrote restore to re-queue requests for unknown objects");
}

}  // namespace ondemand::worker
