// The cachefiles front end as a rig of the front-end-neutral suite
// (tests/unit/frontends/rig.h, shared_engine_test.cc): CachefilesFrontend on
// the real engine, driven with OPEN and READ requests the way
// /dev/cachefiles hands them over, a memfd standing in for each OPEN's
// anonymous fd.
//
// What the reader sees is judged the way the kernel judges it: copen with a
// negative errno refuses the OPEN (the reader gets that errno); a
// READ_COMPLETE carries no result, and the reader gets its bytes only when
// they are in the cache file by then, else EIO (the kernel reads the cache
// file again after the completion). So an answer is recorded as a success
// exactly when the READ's range holds no hole at the moment READ_COMPLETE is
// called.
//
// The first ask opens the object (OPEN, wait for its copen); a refused OPEN
// is that ask's answer, and the next ask sends a new OPEN, as the kernel does
// at the next lookup. Requests on a refused object never become READs: the
// kernel has no object to ask for.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include "engine/engine.h"
#include "frontends/cachefiles/cachefiles_frontend.h"
#include "proto/kernel_msg.h"
#include "tests/unit/fake_backend.h"
#include "tests/unit/frontends/rig.h"
#include "tests/unit/test_util.h"

namespace ondemand::test {

class CachefilesRig {
 public:
  static constexpr const char* NAME = "cachefiles";
  CachefilesRig(BlobSpec spec, RigOptions options) : content_(pattern_bytes(spec.size, 7)) {
    blob_ = make_blob(spec, content_, gate_);
    if (blob_) backend_.blobs[BLOB_ID] = blob_;
    engine_ = std::make_unique<worker::Engine>(
        loop_, backend_, worker::EngineOptions{.io_threads = options.io_threads, .prefetch_window = options.window},
        counters_, metrics_);
    // Fixed windows, as the worker runs by default (fill_window_min unset).
    frontend_ = std::make_unique<worker::CachefilesFrontend>(
        loop_, *engine_, replies_,
        worker::CachefilesOptions{.max_inflight = 1000,
                                  .fill_window = options.window,
                                  .fill_window_min = options.window,
                                  .request_deadline = options.deadline},
        counters_, metrics_);
  }
  ~CachefilesRig() {
    gate_->open();
    engine_->join();  // pool jobs call back into the front end
    frontend_.reset();
    engine_.reset();
  }
  CachefilesRig(const CachefilesRig&) = delete;
  CachefilesRig& operator=(const CachefilesRig&) = delete;

  Ask ask(std::uint64_t offset, std::uint64_t length) {
    if (!open_) {
      const auto key = open_object();
      if (!open_) return key;
    }
    const auto msg = next_msg_++;
    const auto key = ledger_.expect();
    replies_.expect(msg, {key, offset, std::min<std::uint64_t>(offset + length, content_.size()), target_fd()});
    frontend_->handle(proto::ReadRequest{msg, OBJECT_ID, offset, length}, UniqueFd{});
    return key;
  }

  bool wait(const std::vector<Ask>& asks, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return run_until(
        [&] {
          for (auto a : asks)
            if (ledger_.answers(a).empty()) return false;
          return engine_->inflight() == 0;
        },
        timeout);
  }
  void settle() { loop_.run_for(std::chrono::milliseconds(30)); }

  std::vector<Answer> answers(Ask a) const { return ledger_.answers(a); }
  const Ledger& ledger() const { return ledger_; }
  int target_fd() const { return memfds_.empty() ? -1 : memfds_.back().get(); }
  std::string target(std::uint64_t offset, std::uint64_t length) const {
    std::string out(length, '\0');
    const auto n = ::pread(target_fd(), out.data(), length, static_cast<off_t>(offset));
    out.resize(n < 0 ? 0 : static_cast<std::size_t>(n));
    return out;
  }
  bool target_empty() const {
    for (const auto& fd : memfds_)
      if (!has_no_data(fd.get())) return false;
    return true;
  }
  FakeBlob* blob() { return blob_.get(); }
  const std::string& content() const { return content_; }

 private:
  static constexpr const char* BLOB_ID = "blob";
  static constexpr std::uint32_t OBJECT_ID = 1;

  // The kernel's side of the replies: each one is matched to the request it
  // answers and judged as the kernel would (see the top of this file).
  class KernelReplies final : public worker::Replies {
   public:
    struct Sent {
      std::uint64_t key = 0;
      std::uint64_t start = 0, end = 0;  // a READ's asked bytes, clipped to the blob
      int fd = -1;                       // our view of its target; -1 for an OPEN
    };
    explicit KernelReplies(Ledger& ledger) : ledger_(ledger) {}
    void expect(std::uint32_t msg, Sent sent) {
      std::lock_guard lock(mu_);
      sent_[msg] = sent;
    }
    int copen(std::uint32_t msg, std::int64_t size_or_negative_errno) override {
      const auto sent = find(msg);
      if (!sent || sent->fd != -1) {
        ledger_.stray();
        return ENOENT;  // what the kernel says to a reply it has no request for
      }
      ledger_.answer(sent->key, {size_or_negative_errno >= 0,
                                 size_or_negative_errno < 0 ? static_cast<int>(-size_or_negative_errno) : 0});
      return 0;
    }
    int read_complete(int, std::uint32_t msg) override {
      const auto sent = find(msg);
      if (!sent || sent->fd == -1) {
        ledger_.stray();
        return ENOENT;
      }
      const bool there = range_is_data(sent->fd, sent->start, sent->end);
      ledger_.answer(sent->key, {there, 0});
      return 0;
    }
    int restore() override {  // nothing the suite does asks for one
      ledger_.stray();
      return 0;
    }

   private:
    std::optional<Sent> find(std::uint32_t msg) {
      std::lock_guard lock(mu_);
      auto it = sent_.find(msg);
      return it == sent_.end() ? std::nullopt : std::optional<Sent>(it->second);
    }
    Ledger& ledger_;
    std::mutex mu_;
    std::map<std::uint32_t, Sent> sent_;
  };

  // OPEN with a fresh memfd as its anonymous fd; waits for the copen.
  Ask open_object() {
    auto anon = make_memfd("cachefiles-rig");
    memfds_.emplace_back(::dup(anon.get()));
    const auto msg = next_msg_++;
    const auto key = ledger_.expect();
    replies_.expect(msg, {key, 0, 0, -1});
    const auto bytes = proto::encode_open(msg, OBJECT_ID, anon.get(), "erofs,test", BLOB_ID);
    auto parsed = proto::parse_kernel_msg({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()});
    frontend_->handle(std::get<proto::KernelRequest>(std::move(parsed)), std::move(anon));
    REQUIRE(run_until([&] { return !ledger_.answers(key).empty(); }, std::chrono::seconds(10)));
    open_ = ledger_.answers(key).front().ok;
    return key;
  }

  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
      if (std::chrono::steady_clock::now() >= deadline) return done();
      loop_.run_for(std::chrono::milliseconds(2));
    }
    return true;
  }

  std::string content_;
  boost::asio::io_context loop_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{loop_.get_executor()};
  proto::WorkerCounters counters_{};
  proto::WorkerMetrics metrics_{};
  std::shared_ptr<Gate> gate_ = std::make_shared<Gate>();
  std::shared_ptr<FakeBlob> blob_;
  FakeBackend backend_;
  Ledger ledger_;
  KernelReplies replies_{ledger_};
  std::unique_ptr<worker::Engine> engine_;
  std::unique_ptr<worker::CachefilesFrontend> frontend_;
  std::vector<UniqueFd> memfds_;  // our dups of every OPEN's anonymous fd
  std::uint32_t next_msg_ = 1;
  bool open_ = false;
};

}  // namespace ondemand::test
