// The fanotify front end as a rig of the front-end-neutral suite
// (tests/unit/frontends/rig.h, shared_engine_test.cc): fanotify::Server over
// an EngineFiller on the real engine, a sparse cache file in a temp dir, and
// a SOCK_SEQPACKET socketpair standing in for the fanotify group, so no root
// and no pre-content-capable file system are needed.
//
// The rig plays the kernel on its end of the pair: an ask is a
// FAN_PRE_ACCESS event (encode_pre_access_event) whose fd is a read-only fd
// of the cache file, handed to the server as the kernel hands event fds
// over (the server closes it once answered); what the server writes back is
// struct fanotify_response, FAN_ALLOW or FAN_DENY with an errno. After
// FAN_ALLOW the kernel reads the cache file as it is, so an ALLOW over a
// hole is recorded as such (the reader would get zeros). Queued
// events go out as many to a read() as fit in one inbox, whole events only,
// as fanotify's read does (copy_event_to_user never splits one).
//
// Event fd numbers are never reused within a rig (F_DUPFD from a rising
// floor), so a response names its event even after the server closed the fd:
// a second answer to one event counts against that event.
#pragma once

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include "engine/engine.h"
#include "frontends/fanotify/cache_file.h"
#include "frontends/fanotify/engine_filler.h"
#include "frontends/fanotify/pending_record.h"
#include "frontends/fanotify/server.h"
#include "proto/fanotify_msg.h"
#include "tests/unit/fake_backend.h"
#include "tests/unit/frontends/rig.h"
#include "tests/unit/test_util.h"

namespace ondemand::test {

class FanotifyRig {
 public:
  static constexpr const char* NAME = "fanotify";
  FanotifyRig(BlobSpec spec, RigOptions options) : content_(pattern_bytes(spec.size, 7)) {
    blob_ = make_blob(spec, content_, gate_);
    if (blob_) backend_.blobs[BLOB_ID] = blob_;
    cache_path_ = (dir_.path() / "cache").string();
    files_.add(fanotify::open_cache_file(0, cache_path_, spec.size));
    record_.emplace(fanotify::PendingRecord::create((dir_.path() / "record").string()));
    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) == 0);
    kernel_end_.reset(pair[0]);
    group_end_.reset(pair[1]);
    engine_ = std::make_unique<worker::Engine>(
        loop_, backend_, worker::EngineOptions{.io_threads = options.io_threads, .prefetch_window = options.window},
        counters_, metrics_);
    fanotify::FillOptions fill{.window = options.window};
    if (options.deadline.count()) fill.stall_timeout = options.deadline;
    filler_ = std::make_unique<fanotify::EngineFiller>(*engine_, files_, std::vector<proto::BlobRef>{{"", BLOB_ID}},
                                                       fill);
    server_ = std::make_unique<fanotify::Server>(loop_, group_end_.get(), files_, *filler_, *record_);
    server_->start();
  }
  ~FanotifyRig() {
    gate_->open();
    engine_->join();  // fills complete on the pool and post back to the server
    server_->stop();
    server_.reset();
    filler_.reset();
    engine_.reset();
  }
  FanotifyRig(const FanotifyRig&) = delete;
  FanotifyRig& operator=(const FanotifyRig&) = delete;

  Ask ask(std::uint64_t offset, std::uint64_t length) {
    UniqueFd reader(::open(cache_path_.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(reader);
    const int fd = ::fcntl(reader.get(), F_DUPFD_CLOEXEC, next_fd_++);
    REQUIRE(fd >= 0);
    const auto key = ledger_.expect();
    by_fd_[fd] = {key, offset, std::min<std::uint64_t>(offset + length, content_.size())};
    outbox_.push_back(proto::fanotify::encode_pre_access_event(fd, ::getpid(), offset, length));
    return key;
  }

  bool wait(const std::vector<Ask>& asks, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return run_until(
        [&] {
          for (auto a : asks)
            if (ledger_.answers(a).empty()) return false;
          return engine_->inflight() == 0 && server_->idle();
        },
        timeout);
  }
  void settle() {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(30);
    run_until([&] { return std::chrono::steady_clock::now() >= until; }, std::chrono::seconds(1));
  }

  std::vector<Answer> answers(Ask a) const { return ledger_.answers(a); }
  const Ledger& ledger() const { return ledger_; }
  int target_fd() { return files_.at(0)->writer.get(); }
  std::string target(std::uint64_t offset, std::uint64_t length) {
    std::string out(length, '\0');
    const auto n = ::pread(target_fd(), out.data(), length, static_cast<off_t>(offset));
    out.resize(n < 0 ? 0 : static_cast<std::size_t>(n));
    return out;
  }
  bool target_empty() { return has_no_data(target_fd()); }
  FakeBlob* blob() { return blob_.get(); }
  const std::string& content() const { return content_; }

 private:
  static constexpr const char* BLOB_ID = "blob";
  static constexpr std::size_t EVENTS_PER_READ =
      proto::fanotify::INBOX_BYTES / proto::fanotify::PRE_ACCESS_EVENT_LEN;

  // The kernel's half of one turn: queued events to the group, responses
  // from it.
  void exchange() {
    while (!outbox_.empty()) {
      std::string batch;
      std::size_t n = 0;
      for (; n < outbox_.size() && n < EVENTS_PER_READ; ++n) batch += outbox_[n];
      if (::send(kernel_end_.get(), batch.data(), batch.size(), MSG_NOSIGNAL) < 0) break;  // EAGAIN: later
      outbox_.erase(outbox_.begin(), outbox_.begin() + static_cast<std::ptrdiff_t>(n));
    }
    std::array<std::byte, 8> response;
    while (::recv(kernel_end_.get(), response.data(), response.size(), 0) == static_cast<ssize_t>(response.size())) {
      std::int32_t fd = 0;
      std::uint32_t value = 0;
      std::memcpy(&fd, response.data(), 4);
      std::memcpy(&value, response.data() + 4, 4);
      auto it = by_fd_.find(fd);
      if (it == by_fd_.end()) {
        ledger_.stray();
        continue;
      }
      const auto& event = it->second;
      const bool allow = value == proto::fanotify::RESPONSE_ALLOW;
      const int err = allow ? 0
                            : static_cast<int>((value >> proto::fanotify::ERRNO_SHIFT) &
                                               proto::fanotify::ERRNO_MASK);
      ledger_.answer(event.key, {allow, err, allow && !range_is_data(target_fd(), event.start, event.end)});
    }
  }

  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      exchange();
      if (done()) return true;
      if (std::chrono::steady_clock::now() >= deadline) return false;
      loop_.run_for(std::chrono::milliseconds(2));
    }
  }

  std::string content_;
  TempDir dir_;
  std::string cache_path_;
  boost::asio::io_context loop_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{loop_.get_executor()};
  proto::WorkerCounters counters_{};
  proto::WorkerMetrics metrics_{};
  std::shared_ptr<Gate> gate_ = std::make_shared<Gate>();
  std::shared_ptr<FakeBlob> blob_;
  FakeBackend backend_;
  fanotify::CacheFileSet files_;
  std::optional<fanotify::PendingRecord> record_;
  UniqueFd kernel_end_, group_end_;
  std::unique_ptr<worker::Engine> engine_;
  std::unique_ptr<fanotify::EngineFiller> filler_;
  std::unique_ptr<fanotify::Server> server_;
  Ledger ledger_;
  struct Event {
    Ask key = 0;
    std::uint64_t start = 0, end = 0;  // the asked bytes, clipped to the file
  };
  std::map<int, Event> by_fd_;  // by event fd number, answered or not
  std::vector<std::string> outbox_;
  int next_fd_ = 1000;
};

}  // namespace ondemand::test
