#include "frontends/cachefiles/cachefiles_frontend.h"

#include <array>
#include <cerrno>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/log.h"

#include "common/sys.h"
#include "proto/blob_id.h"
#include "proto/blob_ref.h"

namespace ondemand::worker {
namespace asio = boost::asio;

namespace {

// Journal fields of a request's log lines (common/log.h LogFields):
// `journalctl -u ondemand BLOB=<id>` or `OBJECT_ID=<n>` finds every line
// about that blob or object. Guaranteed copy elision returns them in place.
LogFields request_fields(std::uint32_t msg_id, std::uint32_t object_id) {
  return LogFields({{"MSG_ID", std::to_string(msg_id)}, {"OBJECT_ID", std::to_string(object_id)}});
}
LogFields request_fields(std::uint32_t msg_id, std::uint32_t object_id, std::string_view blob_id) {
  return LogFields({{"MSG_ID", std::to_string(msg_id)},
                    {"OBJECT_ID", std::to_string(object_id)},
                    {"BLOB", escape_id(blob_id)}});
}
std::uint64_t align_up(std::uint64_t v, std::uint64_t a) {
  const auto rem = v % a;
  return rem ? v + (a - rem) : v;
}

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
// is not recognised. Runs on the pool (it reads the blob).
bool fill_whole_blob(Object& object, Deadline deadline) {
  int known = object.fill_whole.load(std::memory_order_relaxed);
  if (known >= 0) return known == 1;
  constexpr std::uint64_t SB_OFFSET = 1024;
  constexpr std::uint32_t EROFS_MAGIC = 0xE0F5E1E2;
  constexpr std::uint32_t COMPRESSION_FEATURES = 0x1 | 0x2;
  std::array<std::byte, 128> sb{};
  if (object.blob->size() < SB_OFFSET + sb.size()) {
    object.fill_whole.store(0, std::memory_order_relaxed);
    return false;
  }
  if (auto err = object.blob->read(SB_OFFSET, sb, deadline)) {
    // Not known: the fill's own read will most likely fail the same way;
    // ask again at the next READ rather than guess "not compressed".
    spdlog::warn("blob {}: superblock probe failed: {}", proto::describe(object.ref), err->message);
    return false;
  }
  auto le32 = [&](std::size_t at) {
    std::uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint32_t>(sb[at + i]);
    return v;
  };
  const bool whole = le32(0) == EROFS_MAGIC && (le32(80) & COMPRESSION_FEATURES) != 0;
  if (whole)
    spdlog::info("blob {} is a compressed EROFS image: READs fill all {} bytes of it (resuming what the "
                 "cache file holds)",
                 proto::describe(object.ref), object.blob->size());
  object.fill_whole.store(whole ? 1 : 0, std::memory_order_relaxed);
  return whole;
}
}  // namespace

std::chrono::milliseconds request_deadline_for(std::uint32_t request_timeout_ms) {
  return std::chrono::milliseconds(std::uint64_t{request_timeout_ms} * 3 / 4);
}

CachefilesFrontend::CachefilesFrontend(asio::io_context& loop, Engine& engine, Replies& replies,
                                       CachefilesOptions options, proto::WorkerCounters& counters,
                                       proto::WorkerMetrics& metrics, CachefilesDevice* device)
    : loop_(loop),
      engine_(engine),
      replies_(replies),
      options_(options),
      counters_(counters),
      metrics_(metrics),
      device_(device),
      budget_counters_(options.budget_counters ? *options.budget_counters : own_budget_counters_),
      restore_timer_(loop),
      budget_timer_(loop) {
  engine_.on_op_done([this] {
    enforce_budget();  // an object may have just become idle
    if (on_done_) on_done_();
  });
}

CachefilesFrontend::~CachefilesFrontend() { engine_.on_op_done({}); }

void CachefilesFrontend::start() {
  if (device_) device_->start(*this);
}
// A handover or a stop: the READs read so far are answered (the drain
// waits for them), but fill-ahead beyond them is abandoned, not finished.
// The drain does not wait for it, and whatever is left unwritten the next
// READ asks for again, from whoever serves then (a handover's successor
// holds the same anonymous fds and writes into the same cache files).
void CachefilesFrontend::stop_reading() {
  engine_.abandon_fill_ahead();
  if (device_) device_->stop_reading();
}
void CachefilesFrontend::resume_reading() {
  if (device_) device_->resume_reading();
}

Deadline CachefilesFrontend::deadline_from_now() const {
  if (options_.request_deadline.count() == 0) return NO_DEADLINE;
  return std::chrono::steady_clock::now() + options_.request_deadline;
}

void CachefilesFrontend::handle(proto::KernelRequest request, UniqueFd anon_fd) {
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

void CachefilesFrontend::handle_open(proto::OpenRequest&& request, UniqueFd anon_fd) {
  counters_.opens.fetch_add(1, std::memory_order_relaxed);
  auto volume = proto::domain_from_volume_key(request.volume_key);
  proto::BlobRef ref{volume.domain.value_or(""), request.cookie_key};
  auto why = volume.domain ? proto::validate_blob_ref(ref) : std::optional<std::string>(volume.error);
  if (why) {
    const auto fields = request_fields(request.msg_id, request.object_id, request.cookie_key);
    spdlog::warn("OPEN msg_id={} object_id={} refused: blob id \"{}\" volume key \"{}\": {}", request.msg_id,
                 request.object_id, escape_id(request.cookie_key), escape_id(request.volume_key), *why);
    metrics_.invalid_blob_ids.fetch_add(1, std::memory_order_relaxed);
    reply_copen(request.msg_id, request.object_id, -EINVAL);
    return;  // anon_fd closes here; the kernel marks the object closed
  }
  ++opens_pending_;
  auto fd = std::make_shared<UniqueFd>(std::move(anon_fd));  // std::function needs a copyable callback
  auto what = fmt::format("OPEN msg_id={} object_id={} blob={}", request.msg_id, request.object_id,
                          escape_id(ref.blob_id));
  engine_.open(
      ref, deadline_from_now(),
      [this, request, ref, fd](OpenResult opened) { finish_open(request, ref, std::move(*fd), std::move(opened)); },
      std::move(what));
}

void CachefilesFrontend::finish_open(const proto::OpenRequest& request, proto::BlobRef ref, UniqueFd anon_fd,
                                     OpenResult opened) {
  --opens_pending_;
  const auto fields = request_fields(request.msg_id, request.object_id, ref.blob_id);
  if (opened.error) {
    spdlog::warn("OPEN msg_id={} object_id={} blob \"{}\" domain \"{}\" refused: {} ({})", request.msg_id,
                 request.object_id, escape_id(ref.blob_id), escape_id(ref.domain), to_string(opened.error->kind),
                 opened.error->message);
    reply_copen(request.msg_id, request.object_id, -opened.error->err);
  } else {
    auto object = std::make_shared<Object>();
    object->object_id = request.object_id;
    object->ref = std::move(ref);
    object->fd = std::move(anon_fd);
    object->blob = opened.blob;
    const auto size = static_cast<std::int64_t>(opened.blob->size());
    // Insert before copen: the kernel may send READs as soon as copen lands.
    if (auto stale = table_.insert(object)) {
      spdlog::warn("OPEN object_id={} replaces a live entry for blob {}", request.object_id,
                   proto::describe(stale->ref));
      engine_.cancel_prefetch(stale.get());
    }
    // `blob "<id>" size=` is what tests/vm scenarios count OPENs by.
    spdlog::debug("OPEN msg_id={} object_id={} domain \"{}\" blob \"{}\" size={}", request.msg_id,
                  request.object_id, escape_id(object->ref.domain), escape_id(object->ref.blob_id), size);
    if (reply_copen(request.msg_id, request.object_id, size) != 0) {
      table_.erase(request.object_id);
    } else {
      metrics_.opens_ok.fetch_add(1, std::memory_order_relaxed);
      if (options_.prefetch) engine_.prefetch(object);
    }
  }
  enforce_budget();
  maybe_restore();
}

// A refused reply means the kernel has no such request any more: answered
// already (by us, or by a second reader of the device) or withdrawn. The VM
// tests count these lines as invariant violations (vt_check_replies).
int CachefilesFrontend::reply_copen(std::uint32_t msg_id, std::uint32_t object_id, std::int64_t value) {
  if (value < 0) counters_.open_refused.fetch_add(1, std::memory_order_relaxed);
  // The callers' journal fields (request_fields) name msg, object and blob.
  const int err = replies_.copen(msg_id, value);
  if (err)
    spdlog::warn("copen msg_id={} object_id={} value={} failed: {}", msg_id, object_id, value,
                 sys::errno_name(err));
  return err;
}

void CachefilesFrontend::handle_read(const proto::ReadRequest& request) {
  // The request left the kernel just before this: read() returned it.
  const auto received_ns = sys::monotonic_ns();
  counters_.reads.fetch_add(1, std::memory_order_relaxed);
  auto object = table_.use(request.object_id);
  if (!object) {
    counters_.unknown_object.fetch_add(1, std::memory_order_relaxed);
    const auto fields = request_fields(request.msg_id, request.object_id);
    spdlog::warn("READ msg_id={} object_id={} for an unknown object: asking for restore",
                 request.msg_id, request.object_id);
    request_restore();
    return;
  }
  FillRequest fill;
  fill.target = object;
  fill.deadline = deadline_from_now();
  fill.what = fmt::format("READ msg_id={} object_id={} blob={} off={} len={}", request.msg_id, request.object_id,
                          escape_id(object->ref.blob_id), request.offset, request.length);
  // The window, decided here on the loop (the read-ahead state is the
  // loop's). Fixed windows are aligned to themselves, adaptive ones start at
  // the request. Either may be partly there already (fill-ahead cut short
  // by a CLOSE, a handover or a kill; a READ racing the end of the fill
  // that wrote its pages), so every fill skips what the file holds.
  const auto size = object->blob->size();
  const bool adaptive = options_.fill_window_min < options_.fill_window;
  const auto whole = fill_range(request.offset, request.length, size, align_up(size, PAGE));
  const auto range = adaptive ? object->read_ahead.plan(request.offset, request.length, size,
                                                        options_.fill_window_min, options_.fill_window)
                              : fill_range(request.offset, request.length, size, options_.fill_window);
  // Answer first, fill ahead after: the READ is answered once its own
  // pages are in the cache file (the kernel then reads them from there:
  // cachefiles_prepare_ondemand_read looks again with SEEK_DATA/SEEK_HOLE
  // after READ_COMPLETE and asks anew for any hole left), and the rest of
  // the window goes on in the background. A later READ inside that window
  // waits for the fill in flight instead of copying it again (the engine).
  fill.need = fill_range(request.offset, request.length, size, PAGE);
  // A compressed image must be whole before any READ of it is answered
  // (fill_whole_blob): never early. Once the first READ's probe knows it,
  // later READs plan the whole blob here, and so wait on a whole-blob fill
  // in flight rather than start a second one.
  const bool compressed = object->fill_whole.load(std::memory_order_relaxed) == 1;
  fill.plan = compressed ? FillPlan{whole, /*resume=*/true, options_.request_deadline, /*answer_early=*/false}
                         : FillPlan{range, /*resume=*/true, {}, /*answer_early=*/true};
  fill.decide = [plan = fill.plan, whole, stall = options_.request_deadline](Target& target, Deadline deadline) {
    if (fill_whole_blob(static_cast<Object&>(target), deadline))
      return FillPlan{whole, /*resume=*/true, stall, /*answer_early=*/false};
    return plan;
  };
  const auto deadline = fill.deadline;
  engine_.fill(std::move(fill), [this, request, object, received_ns](const FillResult& result) {
    finish_read(request, *object, result, received_ns);
  });
  // After the READ's own fill, which the fill-ahead must not overlap.
  fill_ahead(object, request, range, deadline);
}

// A READ that continues a sequential stream also starts fills of the next
// windows, nobody waiting on them, one fill per window so that they run
// beside the one the reader waits on (issue 12). Only once the first READ's
// probe has found the blob not compressed: a compressed image is filled
// whole, never a window of it (fill_whole_blob).
void CachefilesFrontend::fill_ahead(const std::shared_ptr<Object>& object, const proto::ReadRequest& request,
                                    FillRange range, Deadline deadline) {
  if (options_.fill_ahead_windows == 0) return;
  const bool plain = object->fill_whole.load(std::memory_order_relaxed) == 0;
  const auto ahead = object->fill_ahead.plan(request.offset, range, object->blob->size(), options_.fill_window,
                                             plain ? options_.fill_ahead_windows : 0);
  for (auto pos = ahead.start; pos < ahead.end; pos += options_.fill_window) {
    FillRequest window;
    window.target = object;
    window.deadline = deadline;
    window.plan = FillPlan{{pos, std::min(ahead.end, pos + options_.fill_window)}, /*resume=*/true, {},
                           /*answer_early=*/true};
    engine_.fill_ahead(std::move(window));
  }
}

// On the pool thread that did the fill.
void CachefilesFrontend::finish_read(const proto::ReadRequest& request, const Object& object,
                                     const FillResult& result, std::uint64_t received_ns) {
  const auto fields = request_fields(request.msg_id, request.object_id, object.ref.blob_id);
  if (result.withdrawn) {
    // Its object was closed before its bytes landed: the kernel failed it
    // itself when it sent the CLOSE (cachefiles_ondemand_clean_object
    // completes the object's pending requests with -EIO once the daemon has
    // read the CLOSE), so a READ_COMPLETE now would be refused.
    counters_.read_failed.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("READ msg_id={} object_id={} not answered: its object was closed first", request.msg_id,
                  request.object_id);
    return;
  }
  const auto [start, end] = result.range;
  if (!result.ok()) {
    const auto at = start + result.done;
    if (result.error)
      spdlog::warn("READ msg_id={} object_id={} blob {} off={}: backend {}: {}", request.msg_id, request.object_id,
                   proto::describe(object.ref), at, to_string(result.error->kind), result.error->message);
    else
      // ENOBUFS: cachefiles_has_space() found cache_dir below its free
      // space threshold (or the object lost its cache file).
      spdlog::warn("READ msg_id={} object_id={} pwrite off={} failed: {}{}", request.msg_id, request.object_id, at,
                   sys::errno_name(result.write_err), result.write_err == ENOBUFS ? " (cache_dir full?)" : "");
  }
  // The range may have been partly written; if the requested part is
  // missing the kernel fails the reader with EIO, which is the truth.
  const std::uint64_t needed =
      end > request.offset ? request.offset - start + std::min(request.length, end - request.offset) : 0;
  const bool covered = result.ok() || result.done >= needed;
  (covered ? metrics_.reads_ok : counters_.read_failed).fetch_add(1, std::memory_order_relaxed);
  if (int err = replies_.read_complete(object.fd.get(), request.msg_id))
    spdlog::warn("READ msg_id={} object_id={} READ_COMPLETE failed: {}", request.msg_id, request.object_id,
                 sys::errno_name(err));
  metrics_.read_latency.observe(proto::READ_LATENCY_BOUNDS_NS, sys::monotonic_ns() - received_ns);
  spdlog::trace("READ msg_id={} object_id={} off={} len={} wrote [{}, {}) of [{}, {})", request.msg_id,
                request.object_id, request.offset, request.length, start, start + result.done, start, end);
}

void CachefilesFrontend::drop(const std::shared_ptr<Object>& object) {
  // At once: a queued prefetch, or fill-ahead that no READ waits for any
  // more, would otherwise keep the anonymous fd (and the blob's fd) open
  // until it reached its end. READs of it still waiting get no reply (see
  // finish_read).
  engine_.withdraw(object.get());
}

// Closes the least recently used idle objects beyond the budget. Idle: the
// table holds the only reference, so no READ, fill or prefetch can be
// writing through its fd (they all hold the Object; only this loop thread
// hands out new references). The most recently used object is never
// closed: it is usually one just opened, whose READ comes next. Objects in
// use are skipped and closed once idle: every OPEN and every finished
// operation calls this, and while the table stays over the budget a timer
// tries again, so the budget is exceeded only by objects in use.
void CachefilesFrontend::enforce_budget() {
  const std::size_t budget = options_.max_open_objects;
  if (budget == 0 || table_.size() <= budget) return;
  std::vector<std::uint32_t> idle;
  const std::size_t excess = table_.size() - budget;
  const auto& order = table_.by_use();
  for (auto it = order.begin(); it != order.end() && std::next(it) != order.end(); ++it) {
    if (idle.size() == excess) break;
    if (table_.find(*it).use_count() == 2) idle.push_back(*it);  // the table's and find()'s
  }
  for (const auto id : idle) {
    auto object = table_.erase(id);
    spdlog::debug("object_id={} blob {} closed for the fd budget (max_open_objects={}); the kernel reopens it at "
                  "its next READ",
                  id, proto::describe(object->ref), budget);
    drop(object);
    budget_counters_.objects_closed.fetch_add(1, std::memory_order_relaxed);
  }
  if (table_.size() > budget && !budget_timer_armed_) {
    budget_timer_armed_ = true;
    budget_timer_.expires_after(BUDGET_RETRY);
    budget_timer_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;  // cancelled: the front end may be gone
      budget_timer_armed_ = false;
      enforce_budget();
    });
  }
}

void CachefilesFrontend::handle_close(const proto::CloseRequest& request) {
  counters_.closes.fetch_add(1, std::memory_order_relaxed);
  if (auto object = table_.erase(request.object_id))
    drop(object);
  else
    spdlog::debug("CLOSE msg_id={} object_id={} for an unknown object (late or duplicate)", request.msg_id,
                  request.object_id);
}

std::vector<std::shared_ptr<Object>> CachefilesFrontend::export_objects() {
  std::vector<std::shared_ptr<Object>> out;
  table_.for_each([&](const std::shared_ptr<Object>& o) { out.push_back(o); });
  for (const auto& o : out) {
    table_.erase(o->object_id);
    drop(o);
  }
  return out;
}

bool CachefilesFrontend::import_object(std::uint32_t object_id, const proto::BlobRef& ref, UniqueFd anon_fd) {
  if (auto why = proto::validate_blob_ref(ref)) {
    spdlog::warn("handover: object_id={} refused: {}", object_id, *why);
    return false;
  }
  auto opened = engine_.open_now(ref, deadline_from_now());
  if (opened.error) {
    spdlog::warn("handover: object_id={} blob {} cannot be opened: {}; dropping it (the kernel will reopen)",
                 object_id, proto::describe(ref), opened.error->message);
    return false;
  }
  auto object = std::make_shared<Object>();
  object->object_id = object_id;
  object->ref = ref;
  object->fd = std::move(anon_fd);
  object->blob = std::move(opened.blob);
  table_.insert(std::move(object));
  return true;
}

void CachefilesFrontend::request_restore() {
  restore_wanted_ = true;
  maybe_restore();
}

void CachefilesFrontend::maybe_restore() {
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
