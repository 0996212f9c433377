// The request engine: turns kernel requests into backend work and exactly
// one reply each.
//
//   OPEN  -> validate the blob id, open the blob on the pool, then copen
//            with its size or a negative errno. The anonymous fd is owned
//            from the moment the request is handed in.
//   READ  -> on the pool: read the aligned fill window around the request
//            from the blob, pwrite it into the anonymous fd, then
//            READ_COMPLETE, also when anything failed (the reader gets EIO
//            instead of sleeping forever).
//   CLOSE -> drop the object; its fd closes after its in-flight READs.
// With `prefetch`, an opened blob is also written whole into its cache file
// in the background, one fill_window chunk at a time, and only while at most
// PREFETCH_MAX_DEMAND demand requests are in flight: demand READs go first.
//
// A READ for an object we do not know cannot be completed directly (the
// ioctl needs that object's fd). Its fd must have been closed, so the kernel
// holds the object CLOSED: a `restore` re-queues the READ, the kernel
// reopens the object first and the READ comes back under the new id. The
// engine writes that restore only while no OPEN is between read() and copen,
// because restore re-delivers such an OPEN and the kernel then fails the
// original with EEXIST (cachefiles_ondemand_get_fd, Linux 6.12).
//
// Event-loop thread only, except the pool jobs it starts.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "common/unique_fd.h"
#include "proto/kernel_msg.h"
#include "proto/shm_layout.h"
#include "backends/backend.h"
#include "frontends/cachefiles/object_table.h"
#include "frontends/cachefiles/replies.h"

namespace ondemand::worker {

struct EngineOptions {
  std::uint32_t max_inflight = 64;
  std::uint32_t io_threads = 4;
  std::uint64_t fill_window = 4 << 20;  // multiple of PAGE_SIZE
  bool prefetch = false;
  // Minimum spacing of restores asked for by unknown-object READs, so an
  // object that stays open elsewhere cannot make us spin.
  std::chrono::milliseconds restore_spacing{200};
};

// The byte range a READ job writes: the fill-window-aligned range around
// [off, off+len), clipped to the blob rounded up to a page (the anonymous
// fd takes page-aligned direct writes: __cachefiles_prepare_write refuses an
// unaligned start with ENOBUFS). Pure, unit-tested.
struct FillRange {
  std::uint64_t start = 0;
  std::uint64_t end = 0;  // exclusive; start == end means nothing to write
};
FillRange fill_range(std::uint64_t off, std::uint64_t len, std::uint64_t blob_size,
                     std::uint64_t window);

inline constexpr std::uint64_t PAGE = 4096;

class Engine {
 public:
  // `counters` and `metrics` are usually the shared memory's (they outlive
  // this worker); both are only ever fetch_add'ed, from any thread.
  Engine(boost::asio::io_context& loop, Backend& backend, Replies& replies, EngineOptions options,
         proto::WorkerCounters& counters, proto::WorkerMetrics& metrics);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // `anon_fd` is the OPEN's fd, already adopted; empty for READ/CLOSE.
  void handle(proto::KernelRequest request, UniqueFd anon_fd);

  bool has_capacity() const { return inflight_ < options_.max_inflight; }
  std::uint32_t inflight() const { return inflight_; }
  std::size_t objects() const { return table_.size(); }
  // Called (on the loop) whenever a request finishes; the device loop uses
  // it to resume reading after hitting max_inflight.
  void on_request_done(std::function<void()> callback) { on_done_ = std::move(callback); }
  // Monotonic start time (ns) of the oldest in-flight request, 0 when idle.
  std::uint64_t oldest_request_ns() const;
  // Blocks until pool jobs finish; used at shutdown after inflight() == 0.
  void join();

  // Upgrade handover. export_objects() empties the table and returns its
  // objects (call only with nothing in flight); import_object() adds one
  // received from the previous worker, opening its blob synchronously (the
  // incoming worker does this before it reads its first request). Returns
  // false, dropping the fd, when the blob cannot be opened: the kernel then
  // sees the object closed and reopens it on the next READ.
  std::vector<std::shared_ptr<Object>> export_objects();
  bool import_object(std::uint32_t object_id, const std::string& blob_id, UniqueFd anon_fd);

 private:
  void handle_open(proto::OpenRequest&& request, UniqueFd anon_fd);
  void handle_read(const proto::ReadRequest& request);
  void handle_close(const proto::CloseRequest& request);
  void count_backend_error(proto::BackendErrorKind kind);
  void finish_open(std::uint64_t token, proto::OpenRequest request, UniqueFd anon_fd,
                   OpenedBlob opened);
  void reply_copen(std::uint32_t msg_id, std::uint32_t object_id, std::int64_t value);
  void request_restore();
  void maybe_restore();
  std::uint64_t begin_request();
  void end_request(std::uint64_t token);
  void queue_prefetch(std::shared_ptr<Object> object);
  void pump_prefetch();

  boost::asio::io_context& loop_;
  Backend& backend_;
  Replies& replies_;
  EngineOptions options_;
  proto::WorkerCounters& counters_;
  proto::WorkerMetrics& metrics_;
  boost::asio::thread_pool pool_;
  ObjectTable table_;
  std::uint32_t inflight_ = 0;
  std::uint32_t opens_pending_ = 0;
  bool restore_wanted_ = false;
  bool restore_timer_armed_ = false;
  std::chrono::steady_clock::time_point last_restore_{};
  boost::asio::steady_timer restore_timer_;
  std::function<void()> on_done_;
  // token -> start time (ns); tokens increase, so the first entry is oldest.
  std::uint64_t next_token_ = 1;
  std::map<std::uint64_t, std::uint64_t> started_;
  // Whole-blob prefetch: objects still to fill, front first, one chunk in
  // flight at a time and only while demand is light.
  struct PrefetchJob {
    std::shared_ptr<Object> object;
    std::uint64_t next = 0;
  };
  std::deque<PrefetchJob> prefetch_;
  bool prefetch_busy_ = false;
};

}  // namespace ondemand::worker
