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
//                   A request with a `need` (a demand: the bytes a reader
//                   waits for) is answered first and filled ahead after
//                   (issue 12): on_done comes as soon as those bytes are in
//                   the target, written first; the rest of the range goes on
//                   in the background. A demand whose bytes a fill already in
//                   flight on the same target will write joins that fill
//                   instead of copying them again. Exactly one on_done per
//                   request either way: a fill that fails after its
//                   requests were answered answers nobody again. A demand
//                   answered without a copy of its own (its bytes there
//                   already, or withdraw()) gets on_done on the calling
//                   thread, the loop.
//   fill_ahead(req) -> req.plan.range filled in the background with no
//                   request waiting on it (a sequential reader's next
//                   windows, issue 12): what fills in flight on the target
//                   already write is left out, each other stretch is a fill
//                   of its own, and a later demand joins it like any fill in
//                   flight. It is fill-ahead, not a request: not in
//                   flight, stopped by abandon_fill_ahead() and
//                   withdraw(), counted by fills_running().
//   prefetch(t)  -> the whole blob of t in the background, one window at a
//                   time, only while demand is light. cancel_prefetch(t)
//                   drops t from the queue at once (a CLOSEd object's fds
//                   must not wait for the queue to reach them).
//
// Every open and every fill request not yet answered is one in-flight
// operation; oldest_request_ns() is the oldest *last progress* among them: a
// long fill that keeps landing chunks is alive, one that stalls is not (the
// supervisor's request limit judges that). Fill-ahead that no request waits
// for is not in flight: a handover's drain does not wait for it
// (abandon_fill_ahead() stops it), and fills_running() counts it.
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
#include <mutex>
#include <optional>
#include <string>
#include <vector>

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
  // Where answer-first and fill-ahead are counted (the shared memory's);
  // null: nowhere.
  proto::FillCounters* fill_counters = nullptr;
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

// Fill-ahead for sequential readers (issue 12), per object: which bytes
// beyond a READ's own fill to fill before the reader asks, so that a
// second fill runs beside the one the reader waits on. Up to STREAMS
// streams, each its last READ's fill and the end of what it filled ahead. A
// READ is sequential when its page is where the stream's fill or fill-ahead
// ended or inside the fill-ahead, or when it is inside the stream's last
// fill and either the stream has gone on (the reader catching that fill up)
// or its own fill reaches past that one (a read crossing a window). Any
// other READ is a jump: it starts a stream (replacing the least recently
// used) and fills nothing ahead, so a random reader fetches no more than
// without it. Not thread-safe (the front end's loop owns it); unit-tested.
class FillAheadStreams {
 public:
  static constexpr std::size_t STREAMS = 4;
  // For a READ at `off` whose own fill is `fill`: up to `windows` windows
  // of `window` bytes after `fill`, clipped to the blob rounded up to a
  // page, less what the stream filled ahead already; empty for a jump (and
  // always for `windows` 0, which still follows the streams).
  FillRange plan(std::uint64_t off, FillRange fill, std::uint64_t blob_size, std::uint64_t window,
                 std::uint32_t windows);

 private:
  struct Stream {
    FillRange last;           // its last READ's fill
    std::uint64_t ahead = 0;  // end of what it filled ahead, at least last.end
    std::uint64_t runs = 0;   // sequential READs since it started
    std::uint64_t used = 0;   // clock of its last READ; 0: unused
  };
  std::array<Stream, STREAMS> streams_{};
  std::uint64_t clock_ = 0;
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
  // For a request with a `need` (FillRequest): answer it as soon as the
  // needed bytes are in the target, writing them first and the rest of the
  // range after, in the background. False: only once the whole range is
  // done (a compressed EROFS image must be whole in the cache before any
  // READ of it is answered: frontends/cachefiles). An early plan's range is
  // cut where it meets another fill in flight on the target; `decide` may
  // turn this off and widen the range (a whole-blob fill).
  bool answer_early = false;
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
  // What the requester waits for: page-aligned, inside plan.range. Empty:
  // the whole range is the demand, answered when the fill ends and never
  // shared with another request (the contract the fanotify front end
  // uses). Set: answered once those bytes are in the target, by this
  // request's own fill or by fills in flight on the same target that write
  // them; the FillResult then describes `need` alone.
  FillRange need;
};

struct FillResult {
  FillRange range;            // the fill's; for a request with a need, the need
  std::uint64_t done = 0;     // contiguous bytes from range.start now in the target
  std::uint64_t written = 0;  // of those, written by this fill (the rest was there); 0 for a need
  std::optional<BackendError> error;  // the backend failed or the deadline passed
  int write_err = 0;                  // errno writing the target (ENOBUFS: cache full)
  // The target was withdrawn (Engine::withdraw) before the need was in it:
  // whoever asked has been answered by someone else (cachefiles: the
  // kernel, at CLOSE), so the front end must not answer.
  bool withdrawn = false;
  bool ok() const { return !error && write_err == 0 && !withdrawn; }
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
  // Set plan.resume, so what the target holds is skipped; `need` and
  // plan.answer_early are ignored.
  void fill_ahead(FillRequest request);

  void prefetch(std::shared_ptr<Target> target);
  void cancel_prefetch(const Target* target);
  std::size_t prefetch_queued() const { return prefetch_.size(); }

  // Fill-ahead in flight stops at its next chunk, once no request waits on
  // it (those are answered first, as promised). For a worker that stops
  // reading (handover, stop): what is not written yet is asked for again by
  // the next READ that needs it, from whoever serves then.
  void abandon_fill_ahead();
  // The target is gone (cachefiles: CLOSE). Requests still waiting on it
  // complete at once with `withdrawn` set, its fills stop at their next
  // chunk (releasing the target, and so its fd) and its prefetch is
  // dropped.
  void withdraw(const Target* target);
  // Fills running or queued on the pool, demand and fill-ahead (not
  // prefetch). Any thread.
  std::uint32_t fills_running() const { return fills_running_.load(std::memory_order_relaxed); }

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
  struct ActiveFill;
  struct Waiter;
  struct Answer {
    FillDone on_done;
    FillResult result;
    std::uint64_t token;
  };
  std::pair<std::uint64_t, std::shared_ptr<Op>> begin_op(std::string what);
  const Op* oldest_op() const;
  void end_op(std::uint64_t token);
  void pump_prefetch();
  void count_open_error(const BackendError& error);
  void count_fill(const FillResult& result);
  void fill_demand(FillRequest request, FillDone on_done);
  void run_active(const std::shared_ptr<ActiveFill>& fill, FillRequest& request);
  // Under fills_mu_:
  std::shared_ptr<ActiveFill> add_active(const Target* target, FillRange need, FillRange range,
                                         const std::vector<FillRange>& others, Deadline deadline);
  void settle(const ActiveFill& fill, std::vector<Answer>& out);
  bool settle_one(Waiter& waiter, std::vector<Answer>& out, bool withdrawn = false);
  void add_waiter(ActiveFill& fill);
  void drop_waiter(ActiveFill& fill);
  void publish_ahead();
  // Outside fills_mu_, on any thread.
  void answer(std::vector<Answer>& answers);

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

  // Demand fills and the requests waiting on them: the loop adds, pool
  // threads make progress and answer, so both sides take fills_mu_ (held
  // for bookkeeping only, never across a backend read, a write or a
  // completion).
  mutable std::mutex fills_mu_;
  std::vector<std::shared_ptr<ActiveFill>> active_;
  std::vector<std::unique_ptr<Waiter>> waiting_;
  std::uint64_t ahead_ = 0;  // active fills no request waits on
  std::atomic<std::uint32_t> fills_running_{0};
  proto::FillCounters own_fill_counters_{};
  proto::FillCounters& fill_counters_;
};

// Runs a fill synchronously on the calling thread (what the engine's pool
// jobs do). `progress` is called after every chunk that lands. Exposed for
// the unit tests and for front ends that fill outside the pool.
FillResult run_fill(Target& target, const FillPlan& plan, Deadline deadline,
                    const std::function<void()>& progress = {});

}  // namespace ondemand::worker
