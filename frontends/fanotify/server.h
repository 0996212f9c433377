// The fanotify front end's event loop: wait readable, drain, and for every
// FAN_PRE_ACCESS event fill the asked range and answer, recording each step
// in the pending record first so that a successor can finish the event if
// this process dies at any instant.
//
// Per event, in this order (each step is a kill point in the tests):
//   read()      straight into an empty inbox of the record (the kernel
//               writes fd number and range into shared memory)
//   record      file[k] = the cache file the fd resolves to
//   fill        the range, through the file's writer fd
//   answer      FAN_ALLOW, or FAN_DENY with an errno when the fill failed
//   answered[k] then close the event fd
// recover() must run before the first read: it fills and answers whatever a
// dead predecessor left in the record. Event fd numbers repeat once the dead
// worker's fd table is gone, and the kernel answers the OLDEST pending event
// with a given number (list_for_each_entry over access_list in
// process_access_response), so a number must never be answered for a new
// event while an old one may still wait under it.
//
// Event-loop thread only. Live events are filled asynchronously (the
// filler completes on any thread; the answer is posted back to the loop),
// up to INBOX_COUNT reads' worth of events at once; recover() fills
// synchronously, before the loop serves anything.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "frontends/fanotify/cache_file.h"
#include "frontends/fanotify/filler.h"
#include "frontends/fanotify/pending_record.h"
#include "proto/fanotify_msg.h"

namespace ondemand::fanotify {

// Test hook: die by SIGKILL at one step of the Nth event handled.
enum class KillPoint { NONE, AFTER_READ, AFTER_RECORD, AFTER_FILL, AFTER_ANSWER };
struct KillHook {
  KillPoint point = KillPoint::NONE;
  std::uint64_t at_event = 1;  // 1-based, counted per process
};

struct RecoveryReport {
  std::uint64_t events = 0;         // unanswered events found in the record
  std::uint64_t stale = 0;          // answers that got ENOENT (already answered)
  std::uint64_t unknown_file = 0;   // events whose file was never recorded
  std::uint64_t denied = 0;         // fills that failed: FAN_DENY
};

class Server {
 public:
  // `group` is borrowed for the server's life (a duplicate is handed to asio).
  Server(boost::asio::io_context& loop, int group, CacheFileSet& files, RangeFiller& filler,
         PendingRecord& record, KillHook hook = {});
  ~Server();

  // Finish a dead predecessor's events. Call once, before start().
  RecoveryReport recover();
  // Arm the wait-readable/drain loop and the heartbeat (record
  // heartbeat_ns, every HEARTBEAT_PERIOD_MS).
  void start();
  void stop();
  // A graceful exit (an upgrade): read no more events, answer every event
  // already read, then call `done` on the loop. The successor may read only
  // after that: were both reading, an event of ours still waiting and one
  // of its could carry the same fd number, and the kernel answers the
  // oldest event with a number (process_access_response).
  void hand_over(std::function<void()> done);
  // Read again after hand_over() was called off (its `done` not yet
  // called): the successor that was to read is gone.
  void resume();
  bool idle() const;  // no event read and unanswered
  bool handing_over() const { return static_cast<bool>(handed_over_); }

  std::uint64_t events_handled() const { return handled_; }

 private:
  void wait();
  void drain();
  bool read_into(proto::fanotify::PendingInbox& inbox);
  void handle_event(std::size_t inbox, std::size_t k, const proto::fanotify::ParsedEvent& parsed);
  // On the loop, once the event's fill finished (or failed): answer, record
  // the answer, close the event fd.
  void complete(std::size_t inbox, std::size_t k, const proto::fanotify::PreAccessEvent& ev,
                std::shared_ptr<UniqueFd> event_fd, int fill_err, std::optional<std::uint32_t> file);
  // One event of the inbox is answered through; the last one clears it.
  void finish_one(std::size_t inbox);
  int fill_now_for(std::uint32_t slot, std::uint64_t offset, std::uint64_t count, bool& unknown);
  void answer(std::int32_t fd, int fill_err);
  void note_answer();  // first_answer_ns, once per worker
  void after_fill(std::uint32_t file);  // file index
  void clear(proto::fanotify::PendingInbox& inbox);
  void maybe_die(KillPoint point);
  void beat();

  boost::asio::io_context& loop_;
  int group_;
  boost::asio::posix::stream_descriptor descriptor_;
  boost::asio::steady_timer heartbeat_;
  CacheFileSet& files_;
  RangeFiller& filler_;
  PendingRecord& record_;
  KillHook hook_;
  std::uint64_t handled_ = 0;
  std::vector<bool> unmarked_;
  std::array<std::uint32_t, proto::fanotify::INBOX_COUNT> outstanding_{};  // per inbox
  bool paused_ = false;  // every inbox busy: not reading
  std::function<void()> handed_over_;  // hand_over()'s, until idle
  // Held while any event is unanswered.
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> busy_;
  bool stopped_ = false;
};

}  // namespace ondemand::fanotify
