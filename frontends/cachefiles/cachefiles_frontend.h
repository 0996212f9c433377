// The cachefiles front end: cachefiles' OPEN/READ/CLOSE semantics on top of
// the front-end-neutral engine, exactly one reply per request.
//
//   OPEN  -> the volume key ("erofs,<domain or fsid>") and the cookie key
//            (the blob id) make the blob reference; validate it, open it
//            through the engine, then copen with its size or a negative
//            errno. The anonymous fd is owned from the moment the request is
//            handed in.
//   READ  -> the engine writes the requested pages into the anonymous fd
//            first, then READ_COMPLETE, also when anything failed or the
//            deadline passed (the reader gets EIO instead of sleeping
//            forever); the rest of the aligned fill window around the
//            request follows in the background (fill-ahead). A READ whose
//            pages a fill in flight is writing waits for that fill. A
//            compressed image is filled whole before any READ of it is
//            answered.
//   CLOSE -> drop the object: its fill-ahead and prefetch stop at once, its
//            READs still waiting get no reply (the kernel failed them when
//            it sent the CLOSE), and its fd closes when the last fill using
//            it has stopped.
// With an fd budget (`max_open_objects`), the least recently used objects
// beyond it that nothing is using (no READ, fill or prefetch holds them)
// are dropped and their anonymous fd (and the blob's) closed. That is the
// kernel's own "daemon closed the fd" path: the object becomes CLOSED
// (cachefiles_ondemand_fd_release), and its next READ makes the kernel send
// a fresh OPEN first (cachefiles_ondemand_select_req: CLOSE -> REOPENING),
// so readers see no error, only one more round trip.
// With `prefetch`, an opened blob is also written whole into its cache file
// in the background (the engine's prefetch queue).
//
// A READ for an object we do not know cannot be completed directly (the
// ioctl needs that object's fd). Its fd must have been closed, so the kernel
// holds the object CLOSED: a `restore` re-queues the READ, the kernel
// reopens the object first and the READ comes back under the new id. We
// write that restore only while no OPEN is between read() and copen,
// because restore re-delivers such an OPEN and the kernel then fails the
// original with EEXIST (cachefiles_ondemand_get_fd, Linux 6.12).
//
// Event-loop thread only, except the engine's pool jobs.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/unique_fd.h"
#include "engine/engine.h"
#include "frontends/cachefiles/cachefiles_device.h"
#include "frontends/cachefiles/object_table.h"
#include "frontends/cachefiles/replies.h"
#include "frontends/frontend.h"
#include "proto/kernel_msg.h"
#include "proto/shm_layout.h"

namespace ondemand::worker {

struct CachefilesOptions {
  std::uint32_t max_inflight = 64;
  std::uint64_t fill_window = 4 << 20;  // multiple of PAGE; the most a READ fills
  // The window of a READ that does not continue a sequential stream of its
  // object (ReadAhead); fill_window_min == fill_window: fixed,
  // window-aligned fills.
  std::uint64_t fill_window_min = 4 << 20;
  // Windows of fill_window bytes filled ahead of a sequential reader
  // (FillAheadStreams), beyond its READ's own fill; 0: none.
  std::uint32_t fill_ahead_windows = 0;
  bool prefetch = false;
  // Minimum spacing of restores asked for by unknown-object READs, so an
  // object that stays open elsewhere cannot make us spin.
  std::chrono::milliseconds restore_spacing{200};
  // A request's backend work must end this long after it arrived (a READ's
  // fill fails with TIMEOUT and is completed, so the reader gets EIO); 0:
  // no deadline. A whole-blob fill's deadline moves on with every chunk
  // that lands: it fails only when it stalls this long.
  std::chrono::milliseconds request_deadline{0};
  // The fd budget: at most this many objects held open (0: no limit).
  std::uint32_t max_open_objects = 0;
  // Where objects closed for the budget are counted (shared memory); null:
  // a counter of the front end's own.
  proto::BudgetCounters* budget_counters = nullptr;
};

// The request deadline the worker derives from `request_timeout_ms` (the
// supervisor's limit for a request in flight): three quarters of it, so a
// slow backend fails its request before the supervisor judges the worker
// hung. 0 stays 0 (no limit).
std::chrono::milliseconds request_deadline_for(std::uint32_t request_timeout_ms);

class CachefilesFrontend final : public Frontend, public RequestSink {
 public:
  // `device` may be null when nothing reads (tests drive handle()).
  CachefilesFrontend(boost::asio::io_context& loop, Engine& engine, Replies& replies,
                     CachefilesOptions options, proto::WorkerCounters& counters,
                     proto::WorkerMetrics& metrics, CachefilesDevice* device = nullptr);
  ~CachefilesFrontend() override;
  CachefilesFrontend(const CachefilesFrontend&) = delete;
  CachefilesFrontend& operator=(const CachefilesFrontend&) = delete;

  // RequestSink: `anon_fd` is the OPEN's fd, already adopted; empty for
  // READ/CLOSE.
  void handle(proto::KernelRequest request, UniqueFd anon_fd) override;
  bool has_capacity() const override { return inflight() < options_.max_inflight; }

  // Frontend.
  void start() override;
  void stop_reading() override;
  void resume_reading() override;
  std::uint32_t inflight() const override { return engine_.inflight(); }
  std::size_t objects() const override { return table_.size(); }
  std::uint64_t oldest_request_ns() const override { return engine_.oldest_request_ns(); }
  std::string oldest_request_what() const override { return engine_.oldest_request_what(); }
  void on_request_done(std::function<void()> callback) override { on_done_ = std::move(callback); }

  // Upgrade handover. export_objects() empties the table and returns its
  // objects (call only with nothing in flight); import_object() adds one
  // received from the previous worker, opening its blob synchronously (the
  // incoming worker does this before it reads its first request). Returns
  // false, dropping the fd, when the blob cannot be opened: the kernel then
  // sees the object closed and reopens it on the next READ.
  std::vector<std::shared_ptr<Object>> export_objects();
  bool import_object(std::uint32_t object_id, const proto::BlobRef& ref, UniqueFd anon_fd);

 private:
  void handle_open(proto::OpenRequest&& request, UniqueFd anon_fd);
  void handle_read(const proto::ReadRequest& request);
  void handle_close(const proto::CloseRequest& request);
  void finish_open(const proto::OpenRequest& request, proto::BlobRef ref, UniqueFd anon_fd, OpenResult opened);
  void fill_ahead(const std::shared_ptr<Object>& object, const proto::ReadRequest& request, FillRange range,
                  Deadline deadline);
  void finish_read(const proto::ReadRequest& request, const Object& object, const FillResult& result,
                   std::uint64_t received_ns);
  int reply_copen(std::uint32_t msg_id, std::uint32_t object_id, std::int64_t value);  // 0 or the errno
  void drop(const std::shared_ptr<Object>& object);
  void enforce_budget();
  void request_restore();
  void maybe_restore();
  Deadline deadline_from_now() const;

  boost::asio::io_context& loop_;
  Engine& engine_;
  Replies& replies_;
  CachefilesOptions options_;
  proto::WorkerCounters& counters_;
  proto::WorkerMetrics& metrics_;
  CachefilesDevice* device_;
  ObjectTable table_;
  proto::BudgetCounters own_budget_counters_{};
  proto::BudgetCounters& budget_counters_;
  std::uint32_t opens_pending_ = 0;
  bool restore_wanted_ = false;
  bool restore_timer_armed_ = false;
  std::chrono::steady_clock::time_point last_restore_{};
  boost::asio::steady_timer restore_timer_;
  static constexpr std::chrono::milliseconds BUDGET_RETRY{50};
  bool budget_timer_armed_ = false;
  boost::asio::steady_timer budget_timer_;
  std::function<void()> on_done_;
};

}  // namespace ondemand::worker
