#include "frontends/fanotify/server.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include <boost/asio/post.hpp>

#include <spdlog/spdlog.h>

#include "common/sys.h"
#include "config/config.h"
#include "frontends/fanotify/group.h"

namespace ondemand::fanotify {
namespace {

namespace pf = proto::fanotify;

int dup_or_die(int fd) {
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) {
    spdlog::critical("fanotify: dup of group fd {} failed: {}", fd, ondemand::sys::errno_name(errno));
    std::abort();
  }
  return copy;
}

std::span<const std::byte> inbox_bytes(const pf::PendingInbox& inbox) {
  return {inbox.bytes, pf::INBOX_BYTES};
}

}  // namespace

Server::Server(boost::asio::io_context& loop, int group, CacheFileSet& files, RangeFiller& filler,
               PendingRecord& record, KillHook hook)
    : loop_(loop),
      group_(group),
      descriptor_(loop, dup_or_die(group)),
      heartbeat_(loop),
      files_(files),
      filler_(filler),
      record_(record),
      hook_(hook) {
  std::uint32_t max_index = 0;
  for (const auto& f : files_.files()) max_index = std::max(max_index, f.index);
  unmarked_.assign(max_index + 1, false);
  record_.layout().worker_generation.fetch_add(1);
  record_.layout().first_answer_ns.store(0);
}

void Server::note_answer() {
  std::uint64_t zero = 0;
  record_.layout().first_answer_ns.compare_exchange_strong(zero, ondemand::sys::monotonic_ns());
}

Server::~Server() = default;

void Server::maybe_die(KillPoint point) {
  if (hook_.point == point && handled_ + 1 == hook_.at_event) {
    spdlog::warn("fanotify: test hook: SIGKILL at step {} of event {}", static_cast<int>(point),
                 handled_ + 1);
    ::kill(::getpid(), SIGKILL);
  }
}

int Server::fill_now_for(std::uint32_t slot, std::uint64_t offset, std::uint64_t count, bool& unknown) {
  unknown = slot == pf::FILE_UNKNOWN;
  if (!unknown) {
    auto* f = files_.at(pf::file_index(slot));
    if (!f) return EIO;
    return fill_now(filler_, *f, offset, count);
  }
  // The event's file was never recorded (its worker died between read()
  // and fstat). Filling the range in every cache file is always correct:
  // each fill writes that file's own bytes.
  for (auto& f : files_.files()) {
    if (offset >= f.size) continue;
    if (int err = fill_now(filler_, f, offset, count)) return err;
  }
  return 0;
}

void Server::answer(std::int32_t fd, int fill_err) {
  const auto response = fill_err ? pf::deny_with_errno(fill_err) : pf::RESPONSE_ALLOW;
  if (int err = respond(group_, fd, response)) {
    spdlog::error("fanotify: response fd={} {}: {}", fd, fill_err ? "deny" : "allow",
                  ondemand::sys::errno_name(err));
    return;
  }
  note_answer();
  auto& l = record_.layout();
  l.events_answered.fetch_add(1);
  if (fill_err) l.events_denied.fetch_add(1);
}

void Server::after_fill(std::uint32_t file) {
  if (file >= unmarked_.size()) unmarked_.resize(file + 1, false);  // a file added at run time
  if (unmarked_[file]) return;
  auto* f = files_.at(file);
  if (!f || !cache_file_complete(*f)) return;
  // A complete file needs no events any more. ENOENT: already unmarked by
  // a predecessor.
  int err = unmark(group_, f->writer.get());
  if (err && err != ENOENT)
    spdlog::warn("fanotify: unmark {}: {}", f->path, ondemand::sys::errno_name(err));
  else
    spdlog::info("fanotify: {} complete, mark removed", f->path);
  unmarked_[file] = true;
}

void Server::clear(pf::PendingInbox& inbox) {
  // Bytes first: once they are zero no event parses, whatever the flags say;
  // flags after, so an interrupted clear still shows each event answered.
  std::memset(inbox.bytes, 0, pf::INBOX_BYTES);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (std::size_t k = 0; k < pf::INBOX_MAX_EVENTS; ++k) {
    inbox.file[k].store(pf::FILE_UNKNOWN);
    inbox.answered[k].store(0);
  }
  inbox.bytes_read.store(0);
  inbox.state.store(pf::INBOX_EMPTY);
}

RecoveryReport Server::recover() {
  RecoveryReport report;
  auto& l = record_.layout();
  l.recovery_start_ns.store(ondemand::sys::monotonic_ns());
  l.recovery_first_answer_ns.store(0);
  for (auto& inbox : l.inbox) {
    if (inbox.state.load() == pf::INBOX_EMPTY) continue;
    const auto parsed = pf::parse_fanotify_events(inbox_bytes(inbox));
    for (std::size_t k = 0; k < parsed.events.size() && k < pf::INBOX_MAX_EVENTS; ++k) {
      if (inbox.answered[k].load()) continue;
      std::int32_t fd = pf::NO_FD;
      std::uint64_t offset = 0, count = 0;
      bool malformed = false;
      if (const auto* ev = std::get_if<pf::PreAccessEvent>(&parsed.events[k])) {
        fd = ev->fd;
        offset = ev->offset;
        count = ev->count;
      } else {
        fd = std::get<pf::EventError>(parsed.events[k]).fd;
        malformed = true;
      }
      if (fd < 0) continue;
      ++report.events;
      bool unknown = false;
      const auto slot = inbox.file[k].load();
      const int fill_err = malformed ? EIO : fill_now_for(slot, offset, count, unknown);
      if (unknown) ++report.unknown_file;
      if (fill_err) ++report.denied;
      // The number is the dead worker's: nobody else can hold a pending
      // event under it until we read new events, which we have not.
      const auto response = fill_err ? pf::deny_with_errno(fill_err) : pf::RESPONSE_ALLOW;
      const int err = respond(group_, fd, response);
      std::uint64_t zero = 0;
      l.recovery_first_answer_ns.compare_exchange_strong(zero, ondemand::sys::monotonic_ns());
      if (err == ENOENT) {
        // The predecessor answered it and died before recording that.
        ++report.stale;
      } else if (err) {
        spdlog::error("fanotify: recovery response fd={}: {}", fd, ondemand::sys::errno_name(err));
      } else {
        note_answer();
        l.events_answered.fetch_add(1);
      }
      spdlog::info("fanotify: recovered event fd={} range={}+{} file={} {}", fd, offset, count,
                   unknown ? std::string("unknown (filled in all)") : std::to_string(pf::file_index(slot)),
                   err == ENOENT ? "was answered" : (fill_err ? "denied" : "allowed"));
      inbox.answered[k].store(1);
      if (!unknown && !malformed) after_fill(pf::file_index(slot));
    }
    clear(inbox);
  }
  l.events_recovered.fetch_add(report.events);
  l.stale_answers.fetch_add(report.stale);
  l.unknown_file_fills.fetch_add(report.unknown_file);
  // Files completed by a predecessor that died before unmarking them.
  for (auto& f : files_.files()) after_fill(f.index);
  return report;
}

void Server::start() {
  beat();
  wait();
}

void Server::beat() {
  record_.layout().heartbeat_ns.store(ondemand::sys::monotonic_ns());
  heartbeat_.expires_after(std::chrono::milliseconds(HEARTBEAT_PERIOD_MS));
  heartbeat_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && !stopped_) beat();
  });
}

void Server::stop() {
  stopped_ = true;
  boost::system::error_code ignored;
  descriptor_.cancel(ignored);
  heartbeat_.cancel();
}

bool Server::idle() const {
  return std::all_of(outstanding_.begin(), outstanding_.end(), [](auto n) { return n == 0; });
}

void Server::hand_over(std::function<void()> done) {
  stop();
  record_.layout().hand_overs.fetch_add(1);
  if (!idle()) record_.layout().hand_overs_in_flight.fetch_add(1);
  spdlog::info("fanotify: handing over: reading stopped, {} inbox(es) still being answered",
               std::count_if(outstanding_.begin(), outstanding_.end(), [](auto n) { return n != 0; }));
  if (idle()) {
    boost::asio::post(loop_, std::move(done));
    return;
  }
  handed_over_ = std::move(done);
}

void Server::resume() {
  handed_over_ = nullptr;
  stopped_ = false;
  spdlog::info("fanotify: hand-over called off: reading again");
  start();
}

void Server::wait() {
  if (stopped_ || paused_) return;
  descriptor_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                         [this](const boost::system::error_code& ec) {
                           if (ec) return;
                           drain();
                           wait();
                         });
}

bool Server::read_into(pf::PendingInbox& inbox) {
  // FILLED before read(): should we die inside read(), the successor looks
  // at bytes that are either zero (nothing read) or whole kernel events.
  inbox.state.store(pf::INBOX_FILLED);
  auto r = ondemand::sys::read(group_, inbox.bytes, pf::INBOX_BYTES);
  if (!r.ok() || r.rc == 0) {
    if (r.ok() || (r.err != EAGAIN && r.err != EWOULDBLOCK))
      spdlog::error("fanotify: read group: {}", r.ok() ? "0 bytes" : ondemand::sys::errno_name(r.err));
    inbox.state.store(pf::INBOX_EMPTY);
    return false;
  }
  inbox.bytes_read.store(static_cast<std::uint32_t>(r.rc));
  return true;
}

void Server::drain() {
  auto& l = record_.layout();
  while (!stopped_) {
    std::size_t idx = pf::INBOX_COUNT;
    for (std::size_t i = 0; i < pf::INBOX_COUNT; ++i)
      if (l.inbox[i].state.load() == pf::INBOX_EMPTY) {
        idx = i;
        break;
      }
    if (idx == pf::INBOX_COUNT) {
      // Every inbox holds events still being filled: read no more until one
      // is answered through (finish_one resumes). The kernel queues the
      // rest (FAN_UNLIMITED_QUEUE).
      paused_ = true;
      return;
    }
    auto& inbox = l.inbox[idx];
    if (!read_into(inbox)) return;
    maybe_die(KillPoint::AFTER_READ);
    const auto parsed = pf::parse_fanotify_events({inbox.bytes, inbox.bytes_read.load()});
    // One count per event, plus one held while dispatching so that events
    // completing inline cannot clear the inbox under the loop.
    outstanding_[idx] = static_cast<std::uint32_t>(parsed.events.size()) + 1;
    // Fills complete on another thread: keep the loop running until they
    // are answered, even with nothing else to wait for (a hand-over).
    if (!busy_) busy_.emplace(loop_.get_executor());
    for (std::size_t k = 0; k < parsed.events.size(); ++k) handle_event(idx, k, parsed.events[k]);
    finish_one(idx);
  }
}

void Server::finish_one(std::size_t idx) {
  if (--outstanding_[idx] != 0) return;
  clear(record_.layout().inbox[idx]);
  if (idle()) busy_.reset();
  if (handed_over_ && idle()) {
    boost::asio::post(loop_, std::exchange(handed_over_, nullptr));
    return;
  }
  if (paused_ && !stopped_) {
    paused_ = false;
    boost::asio::post(loop_, [this] {
      drain();
      wait();
    });
  }
}

void Server::handle_event(std::size_t idx, std::size_t k, const pf::ParsedEvent& parsed) {
  auto& inbox = record_.layout().inbox[idx];
  if (k >= pf::INBOX_MAX_EVENTS) {
    spdlog::critical("fanotify: more events than inbox positions");
    std::abort();
  }
  if (const auto* err = std::get_if<pf::EventError>(&parsed)) {
    spdlog::error("fanotify: bad event at byte {}: {} fd={}", err->at, to_string(err->kind), err->fd);
    if (err->fd >= 0) {
      UniqueFd owned(err->fd);
      answer(err->fd, EIO);
      inbox.answered[k].store(1);
    }
    finish_one(idx);
    return;
  }
  const auto& ev = std::get<pf::PreAccessEvent>(parsed);
  // The event fd stays open until the answer is recorded: while it is, no
  // other event can carry its number.
  auto event_fd = std::make_shared<UniqueFd>(ev.fd);
  const auto file = files_.resolve(ev.fd);
  if (file) inbox.file[k].store(pf::file_slot(*file));
  maybe_die(KillPoint::AFTER_RECORD);
  CacheFile* f = file ? files_.at(*file) : nullptr;
  if (!f) {
    // Not one of our files (we mark nothing else): never allow blindly.
    spdlog::error("fanotify: event fd={} pid={} on a file that is not a cache file", ev.fd, ev.pid);
    complete(idx, k, ev, std::move(event_fd), EIO, std::nullopt);
    return;
  }
  filler_.fill(*f, ev.offset, ev.count, [this, idx, k, ev, event_fd, file](int fill_err) {
    boost::asio::post(loop_, [this, idx, k, ev, event_fd, file, fill_err]() mutable {
      complete(idx, k, ev, std::move(event_fd), fill_err, file);
    });
  });
}

void Server::complete(std::size_t idx, std::size_t k, const pf::PreAccessEvent& ev,
                      std::shared_ptr<UniqueFd> event_fd, int fill_err, std::optional<std::uint32_t> file) {
  maybe_die(KillPoint::AFTER_FILL);
  answer(ev.fd, fill_err);
  maybe_die(KillPoint::AFTER_ANSWER);
  record_.layout().inbox[idx].answered[k].store(1);
  event_fd.reset();
  ++handled_;
  spdlog::debug("fanotify: event fd={} pid={} range={}+{} file={} {}", ev.fd, ev.pid, ev.offset,
                ev.count, file ? std::to_string(*file) : std::string("unknown"),
                fill_err ? "denied" : "allowed");
  if (file) after_fill(*file);
  finish_one(idx);
}

}  // namespace ondemand::fanotify
