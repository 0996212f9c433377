// The request engine, front-end neutral: it opens blob references and fills
// byte ranges of target fds from them, on its I/O pool, with exactly one
// completion per operation. It knows no kernel interface: which requests
// exist, how they are answered and which range a request needs are the
// front end's (frontends/cachefiles, frontends/fanotify).
//
//   open(ref)    -> backend open on the pool; on_done(OpenResult) on the loop.
//   fill(req)    -> [start, end) of the blob copied into the target fd, chunk
//                   by chunk, on the pool; on_done(FillResult) on the pool
//                   thread that did the copy (a front end answers its kernel
//                   from there without a loop hop; it posts to the loop for
//                   anything else). Stops at the first error, or when the
//                   deadline has passed (Kind::TIMEOUT).
//   prefetch(t)  -> the whole blob of t in the background, one window at a
//                   time, only while demand is light. cancel_prefetch(t)
//                   drops t from the queue at once (a CLOSEd object's fds
//                   must not wait for the queue to reach them).
//
// Every open and demand fill is one in-flight operation; oldest_request_ns()
// is the oldest *last progress* among them: a long fill that keeps landing
// chunks is alive, one that stalls is not (the supervisor's request limit
// judges that).
//
// Event-loop thread only, except the pool jobs it starts and what the
// completion contracts above say.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>

#include "backends/backend.h"
#include "common/unique_fd.h"
#include "proto/blob_ref.h"
#include "proto/shm_layout.h"

namespace ondemand::worker {

inline constexpr std::uint64_t PAGE = 4096;

struct EngineOptions {
  std::uint32_t io_threads = 4;
  std::uint64_t prefetch_window = 4 << 20;  // bytes per background chunk
};

// What a fill writes into: the bytes of `blob` go to `fd` at the same
// offsets. Front ends extend it with their own per-object state. Shared: a
// fill in flight keeps its target (and so its fd) alive.
struct Target {
  proto::BlobRef ref;
  std::shared_ptr<Blob> blob;
  UniqueFd fd;
};

struct FillRange {
  std::uint64_t start = 0;
  std::uint64_t end = 0;  // exclusive; start == end means nothing to write
};

// The fill-window-aligned range around [off, off+len), clipped to the blob
// rounded up to a page (targets take page-aligned direct writes: the
// cachefiles anonymous fd refuses an unaligned start with ENOBUFS,
// __cachefiles_prepare_write). Pure, unit-tested.
FillRange fill_range(std::uint64_t off, std::uint64_t len, std::uint64_t blob_size,
                     std::uint64_t window);

// Read-ahead that adapts, per object (issue 12): up to STREAMS sequential
// streams, each the end of its last fill and its window. A READ that starts
// where a stream's fill ended continues it and doubles its window, up to
// `max`; a READ inside a stream's last fill (a second reader, or the kernel
// asking again before the fill landed) keeps that window; any other READ is
// a jump and starts a stream at `min`, replacing the least recently used.
// A stream that starts at offset 0 starts at `max`: the mount reads an
// image's head in order. Not thread-safe (the front end's loop owns it);
// unit-tested.
class ReadAhead {
 public:
  static constexpr std::size_t STREAMS = 4;
  // The range to fill for a READ of [off, off+len): from its page on, the
  // stream's window long (at least the request, clipped to the blob rounded
  // up to a page), and the stream moved on to its end.
  FillRange plan(std::uint64_t off, std::uint64_t len, std::uint64_t blob_size, std::uint64_t min,
                 std::uint64_t max);
  std::uint64_t sequential() const { return sequential_; }  // READs that continued a stream
  std::uint64_t jumps() const { return jumps_; }            // READs that started one

 private:
  struct Stream {
    std::uint64_t start = 0;  // of its last fill
    std::uint64_t next = 0;   // end of its last fill
    std::uint64_t window = 0; // 0: unused
    std::uint64_t used = 0;   // clock of its last READ
  };
  std::array<Stream, STREAMS> streams_{};
  std::uint64_t clock_ = 0;
  std::uint64_t sequential_ = 0;
  std::uint64_t jumps_ = 0;
};

struct FillPlan {
  FillRange range;
  // Skip what the target already holds (lseek SEEK_DATA/SEEK_HOLE; both the
  // anonymous fd, cachefiles_ondemand_fd_llseek -> vfs_llseek on the cache
  // file, and a sparse cache file support it): a fill cut short by a kill
  // goes on where it stopped.
  bool resume = false;
  // When nonzero, every chunk that lands moves the deadline to now + this,
  // so a long fill fails only once it stalls.
  std::chrono::nanoseconds stall_timeout{0};
};

struct FillRequest {
  std::shared_ptr<Target> target;
  FillPlan plan;
  Deadline deadline = NO_DEADLINE;
  // Optional: decides the plan on the pool thread, where reading the blob
  // may block (a front end's format probe). Replaces `plan`.
  std::function<FillPlan(Target&, Deadline)> decide;
  // The request in words, for oldest_request_what() (default: the blob and
  // the plan's range).
  std::string what;
};

struct FillResult {
  FillRange range;
  std::uint64_t done = 0;     // contiguous bytes from range.start now in the target
  std::uint64_t written = 0;  // of those, written by this fill (the rest was there)
  std::optional<BackendError> error;  // the backend failed or the deadline passed
  int write_err = 0;                  // errno writing the target (ENOBUFS: cache full)
  bool ok() const { return !error && write_err == 0; }
};

class Engine {
 public:
  using OpenDone = std::function<void(OpenResult)>;
  using FillDone = std::function<void(const FillResult&)>;

  // `counters` and `metrics` are usually the shared memory's (they outlive
  // this worker); only ever fetch_add'ed here, from any thread.
  Engine(boost::asio::io_context& loop, Backend& backend, EngineOptions options,
         proto::WorkerCounters& counters, proto::WorkerMetrics& metrics);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // An invalid reference completes at once (on the loop, before open()
  // returns) with Kind::INVALID and never reaches the backend.
  // `what`: the request in words, for oldest_request_what() (default: the
  // blob reference).
  void open(proto::BlobRef ref, Deadline deadline, OpenDone on_done, std::string what = {});
  // The same, blocking on the calling thread (an upgrade's successor imports
  // its predecessor's objects before it serves anything).
  OpenResult open_now(const proto::BlobRef& ref, Deadline deadline);
  void fill(FillRequest request, FillDone on_done);

  void prefetch(std::shared_ptr<Target> target);
  void cancel_prefetch(const Target* target);
  std::size_t prefetch_queued() const { return prefetch_.size(); }

  std::uint32_t inflight() const { return static_cast<std::uint32_t>(ops_.size()); }
  // Monotonic ns of the oldest last progress among in-flight operations, 0
  // when idle.
  std::uint64_t oldest_request_ns() const;
  // The `what` of that operation, empty when idle: the supervisor names the
  // request a worker died with (a request that kills every worker).
  std::string oldest_request_what() const;
  // Called on the loop whenever an operation finishes.
  void on_op_done(std::function<void()> callback) { on_done_ = std::move(callback); }
  // Blocks until pool jobs finish; used at shutdown after inflight() == 0.
  void join();

 private:
  struct Op {
    std::atomic<std::uint64_t> progress_ns{0};
    std::string what;  // set at begin_op, read on the loop only
  };
  std::pair<std::uint64_t, std::shared_ptr<Op>> begin_op(std::string what);
  const Op* oldest_op() const;
  void end_op(std::uint64_t token);
  void pump_prefetch();
  void count_open_error(const BackendError& error);

  boost::asio::io_context& loop_;
  Backend& backend_;
  EngineOptions options_;
  proto::WorkerCounters& counters_;
  proto::WorkerMetrics& metrics_;
  boost::asio::thread_pool pool_;
  std::function<void()> on_done_;
  std::uint64_t next_token_ = 1;
  std::map<std::uint64_t, std::shared_ptr<Op>> ops_;
  struct PrefetchJob {
    std::shared_ptr<Target> target;
    std::uint64_t next = 0;
  };
  std::deque<PrefetchJob> prefetch_;
  bool prefetch_busy_ = false;
};

// Runs a fill synchronously on the calling thread (what the engine's pool
// jobs do). `progress` is called after every chunk that lands. Exposed for
// the unit tests and for front ends that fill outside the pool.
FillResult run_fill(Target& target, const FillPlan& plan, Deadline deadline,
                    const std::function<void()>& progress = {});

}  // namespace ondemand::worker
