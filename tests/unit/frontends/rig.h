// The vocabulary of the front-end-neutral suite (shared_engine_test.cc):
// what a rig is built from and what it reports. A rig is one front end on the
// real engine, driven the way its kernel drives it, with real fds for the
// kernel's side; one per front end:
//   tests/unit/frontends/cachefiles/rig.h  OPEN/READ, replies recorded
//   tests/unit/frontends/fanotify/rig.h    pre-content events, FAN_ALLOW/DENY
//
// Every rig has the same interface, which the suite is written against:
//
//   static constexpr const char* NAME;
//   Rig(BlobSpec, RigOptions);
//   Ask ask(offset, length);               // the kernel asks for a range
//   bool wait(asks);                       // true once each has an answer
//   void settle();                         // time for a wrong extra answer
//   std::vector<Answer> answers(ask);      // what came back for it
//   const Ledger& ledger();                // every kernel request and its answers
//   int target_fd();                       // the target (our own fd of it)
//   std::string target(offset, length);    // what the target holds
//   bool target_empty();                   // nothing ever written
//   FakeBlob* blob();                      // null when there is no blob
//   const std::string& content();          // the blob's bytes
#pragma once

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "tests/unit/fake_backend.h"

namespace ondemand::test {

// The kernel's view of one reply: did the reader get its bytes, and if not,
// which errno (0 when the reply carries none: a READ_COMPLETE over a hole,
// which the kernel turns into EIO).
struct Answer {
  bool ok = false;
  int err = 0;
  // A success while some asked byte was not in the target: the reader
  // would read the hole's zeros. Never right.
  bool over_hole = false;
};

// The blob behind the target.
struct BlobSpec {
  std::uint64_t size = 0;
  bool exists = true;
  // Every backend read touching offsets >= fail_from fails with this errno.
  int fail_errno = 0;
  std::uint64_t fail_from = 0;
  // Every backend read blocks until its deadline, then fails with TIMEOUT
  // (a backend that honours deadlines, held up).
  bool hangs = false;
};

// The blob `spec` describes, holding `content`; null when it does not
// exist. A hanging blob waits on `gate` until its read's deadline.
inline std::shared_ptr<FakeBlob> make_blob(const BlobSpec& spec, const std::string& content,
                                           const std::shared_ptr<Gate>& gate) {
  if (!spec.exists) return nullptr;
  auto blob = std::make_shared<FakeBlob>(content);
  blob->err = spec.fail_errno;
  blob->fail_from = spec.fail_from;
  if (spec.hangs) {
    blob->gate = gate;
    blob->gate_honours_deadline = true;
  }
  return blob;
}

struct RigOptions {
  std::uint64_t window = 64 * 1024;  // the front end's fill window
  // A request's backend work must end this long after it arrived (0: the
  // front end's default).
  std::chrono::milliseconds deadline{0};
  std::uint32_t io_threads = 4;
};

// Which request an ask ended as: its key in the ledger.
using Ask = std::uint64_t;

// Every request a rig sent its front end, and every answer that came back,
// keyed by request. Thread-safe: answers come from pool threads.
class Ledger {
 public:
  std::uint64_t expect() {
    std::lock_guard lock(mu_);
    const auto key = next_++;
    answers_[key];
    return key;
  }
  void answer(std::uint64_t key, Answer a) {
    std::lock_guard lock(mu_);
    auto it = answers_.find(key);
    if (it == answers_.end())
      ++stray_;
    else
      it->second.push_back(a);
  }
  void stray() {
    std::lock_guard lock(mu_);
    ++stray_;
  }
  std::vector<Answer> answers(std::uint64_t key) const {
    std::lock_guard lock(mu_);
    auto it = answers_.find(key);
    return it == answers_.end() ? std::vector<Answer>{} : it->second;
  }
  std::size_t requests() const {
    std::lock_guard lock(mu_);
    return answers_.size();
  }
  // Requests answered other than exactly once, as "key: n" lines.
  std::vector<std::string> not_answered_once() const {
    std::lock_guard lock(mu_);
    std::vector<std::string> out;
    for (const auto& [key, answers] : answers_)
      if (answers.size() != 1) out.push_back(std::to_string(key) + ": " + std::to_string(answers.size()));
    return out;
  }
  // Successes that let a reader read a hole.
  int over_holes() const {
    std::lock_guard lock(mu_);
    int n = 0;
    for (const auto& [key, answers] : answers_)
      for (const auto& a : answers) n += a.ok && a.over_hole;
    return n;
  }
  // Answers to no request the rig sent.
  int strays() const {
    std::lock_guard lock(mu_);
    return stray_;
  }

 private:
  mutable std::mutex mu_;
  std::uint64_t next_ = 1;
  std::map<std::uint64_t, std::vector<Answer>> answers_;
  int stray_ = 0;
};

// True when [offset, end) of `fd` holds no hole (SEEK_HOLE; memfds and
// sparse files both answer it): what the kernel checks before it serves a
// read from the cache file.
inline bool range_is_data(int fd, std::uint64_t offset, std::uint64_t end) {
  if (offset >= end) return true;
  const off_t hole = ::lseek(fd, static_cast<off_t>(offset), SEEK_HOLE);
  if (hole < 0) return false;  // ENXIO: at or past EOF
  return static_cast<std::uint64_t>(hole) >= end;
}

// True when nothing was ever written to `fd` (no data anywhere).
inline bool has_no_data(int fd) { return ::lseek(fd, 0, SEEK_DATA) < 0 && errno == ENXIO; }

}  // namespace ondemand::test
