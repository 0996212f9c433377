// A backend in memory for the tests that run the engine: blobs that can
// block (a gate), fail from an offset on, or be slow, and that count their
// reads. Shared by the cachefiles front end's tests and the front-end-neutral
// suite (tests/unit/frontends/shared_engine_test.cc).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backends/backend.h"

namespace ondemand::test {

// Blocks pool threads until the test opens it.
class Gate {
 public:
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lock(mu_);
    ++waiting_;
    cv_.wait(lock, [&] { return open_; });
    --waiting_;
  }
  // False when `deadline` came first.
  bool wait_until(worker::Deadline deadline) {
    std::unique_lock lock(mu_);
    ++waiting_;
    const bool opened = cv_.wait_until(lock, deadline, [&] { return open_; });
    --waiting_;
    return opened;
  }
  int waiting() const {
    std::lock_guard lock(mu_);
    return waiting_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  int waiting_ = 0;
};

// A blob in memory that can block (gate) or fail (fail_from: every read
// touching offsets >= fail_from returns err).
class FakeBlob final : public worker::Blob {
 public:
  explicit FakeBlob(std::string content) : content_(std::move(content)) {}
  std::shared_ptr<Gate> gate;
  std::uint64_t gate_from = 0;  // only reads starting here or later wait for the gate
  // With a gate: give up with TIMEOUT at the read's deadline, as a backend
  // that can wait (the registry client) does, instead of waiting forever.
  bool gate_honours_deadline = false;
  int err = 0;
  std::uint64_t fail_from = 0;
  std::atomic<int> reads{0};
  std::atomic<int> misaligned{0};  // buffers not page-aligned (IOCB_DIRECT needs them aligned)
  std::chrono::milliseconds delay{0};  // per read: a slow backend

  const std::string& content() const { return content_; }
  std::uint64_t size() const override { return content_.size(); }
  std::optional<worker::BackendError> read(std::uint64_t off, std::span<std::byte> out,
                                           worker::Deadline deadline) override {
    // Page-sized reads are fills headed for the anonymous fd; smaller ones
    // (the front end's superblock probe) never reach pwrite.
    if (out.size() >= 4096 && reinterpret_cast<std::uintptr_t>(out.data()) % 4096 != 0)
      misaligned.fetch_add(1);
    reads.fetch_add(1);
    if (out.size() >= 4096) {
      std::lock_guard lock(mu_);
      fill_offsets_.push_back(off);
    }
    if (delay.count()) std::this_thread::sleep_for(delay);
    if (gate && off >= gate_from) {
      if (!gate_honours_deadline)
        gate->wait();
      else if (!gate->wait_until(deadline))
        return worker::timeout_error("fake blob: deadline passed while held");
    }
    if (err && off + out.size() > fail_from) return worker::error_from_errno(err, "fake failure");
    std::memset(out.data(), 0, out.size());
    if (off < content_.size())
      std::memcpy(out.data(), content_.data() + off,
                  std::min<std::uint64_t>(out.size(), content_.size() - off));
    return std::nullopt;
  }
  // Offsets of the page-sized (fill) reads, in order.
  std::vector<std::uint64_t> fill_offsets() const {
    std::lock_guard lock(mu_);
    return fill_offsets_;
  }

 private:
  std::string content_;
  mutable std::mutex mu_;
  std::vector<std::uint64_t> fill_offsets_;
};

class FakeBackend final : public worker::Backend {
 public:
  std::map<std::string, std::shared_ptr<FakeBlob>, std::less<>> blobs;
  std::shared_ptr<Gate> open_gate;

  worker::OpenResult open(const proto::BlobRef& ref, worker::Deadline) override {
    opens_.fetch_add(1);
    if (open_gate) open_gate->wait();
    auto it = blobs.find(ref.blob_id);
    if (it == blobs.end()) return {nullptr, worker::error_from_errno(ENOENT, "no such fake blob")};
    return {it->second, std::nullopt};
  }
  std::string describe() const override { return "fake"; }
  int opens() const { return opens_.load(); }

 private:
  std::atomic<int> opens_{0};
};

}  // namespace ondemand::test
