// What every front end owes its kernel over the shared request engine,
// written once and run against each front end through its rig
// (tests/unit/frontends/rig.h): the same blobs, the same asks, the same
// checks. A property that holds for one front end only is not here.
//
// The suite lives beside frontends/frontend.h, the front-end-neutral
// contract; each rig lives with its own front end's tests.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "tests/unit/frontends/cachefiles/rig.h"
#include "tests/unit/frontends/fanotify/rig.h"
#include "tests/unit/frontends/rig.h"

namespace ondemand::test {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;

// "" when [offset, offset+length) of the target, clipped to the blob, holds
// the blob's bytes; else where it does not.
template <class Rig>
std::string wrong_bytes(Rig& rig, std::uint64_t offset, std::uint64_t length) {
  const auto& blob = rig.content();
  const auto end = std::min<std::uint64_t>(offset + length, blob.size());
  if (offset >= end) return {};
  const auto got = rig.target(offset, end - offset);
  if (got.size() != end - offset) return fmt::format("only {} of {} bytes at {}", got.size(), end - offset, offset);
  const auto at = std::mismatch(got.begin(), got.end(), blob.begin() + static_cast<std::ptrdiff_t>(offset)).first;
  if (at == got.end()) return {};
  return fmt::format("first wrong byte at {}", offset + static_cast<std::uint64_t>(at - got.begin()));
}

// "" when everything the target holds (each data extent, SEEK_DATA/SEEK_HOLE)
// is the blob's (zeros past its end, where a page-aligned write put them).
template <class Rig>
std::string foreign_bytes(Rig& rig) {
  const int fd = rig.target_fd();
  const auto& blob = rig.content();
  for (off_t pos = 0;;) {
    const off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) return {};  // ENXIO: no data after pos
    const off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return "SEEK_HOLE failed";
    const auto start = static_cast<std::uint64_t>(data);
    const auto got = rig.target(start, static_cast<std::uint64_t>(hole - data));
    for (std::size_t i = 0; i < got.size(); ++i) {
      const auto at = start + i;
      if (got[i] != (at < blob.size() ? blob[at] : '\0')) return fmt::format("wrong byte at {}", at);
    }
    pos = hole;
  }
}

// Every request the rig sent was answered exactly once, nothing else came
// back, and no success let a reader read a hole; given time for a wrong
// extra answer to show.
template <class Rig>
void check_answers(Rig& rig) {
  rig.settle();
  const auto& ledger = rig.ledger();
  // "request: answers" for each request answered other than once.
  CHECK(fmt::format("{}", fmt::join(ledger.not_answered_once(), ", ")) == "");
  CHECK(ledger.strays() == 0);
  CHECK(ledger.over_holes() == 0);
}

// One ask, waited for: its answers.
template <class Rig>
std::vector<Answer> ask_and_wait(Rig& rig, std::uint64_t offset, std::uint64_t length) {
  const auto a = rig.ask(offset, length);
  INFO(Rig::NAME << ": ask [" << offset << ", +" << length << ")");
  REQUIRE(rig.wait({a}));
  return rig.answers(a);
}

}  // namespace

TEMPLATE_TEST_CASE("shared engine: every request gets exactly one answer, and a success holds the blob's bytes",
                   "[shared_engine]", CachefilesRig, FanotifyRig) {
  const std::uint64_t size = MiB + 3000;
  TestType rig({.size = size}, {});
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges{
      {0, 4096}, {70000, 10}, {500000, 200000}, {size - 100, 100}, {0, size}};
  std::mt19937_64 rng(14);
  for (int i = 0; i < 12; ++i) {
    const auto offset = rng() % size;
    ranges.emplace_back(offset, std::min<std::uint64_t>(1 + rng() % 100000, size - offset));
  }
  for (const auto& [offset, length] : ranges) {
    INFO(TestType::NAME << ": [" << offset << ", +" << length << ")");
    const auto answers = ask_and_wait(rig, offset, length);
    REQUIRE(answers.size() == 1);
    CHECK(answers[0].ok);
    if (answers[0].ok) CHECK(wrong_bytes(rig, offset, length) == "");
  }
  check_answers(rig);
  CHECK(foreign_bytes(rig) == "");
}

TEMPLATE_TEST_CASE("shared engine: a blob that does not exist gets one error answer and nothing is written",
                   "[shared_engine]", CachefilesRig, FanotifyRig) {
  // cachefiles: the OPEN is refused (copen -ENOENT), so no READ ever comes;
  // fanotify: the blob was not found at startup, the event gets FAN_DENY.
  TestType rig({.size = 256 * KiB, .exists = false}, {});
  for (const std::uint64_t offset : {std::uint64_t{0}, 100 * KiB}) {  // and again: nothing wrong remembered
    const auto answers = ask_and_wait(rig, offset, 4096);
    REQUIRE(answers.size() == 1);
    CHECK_FALSE(answers[0].ok);
    CHECK(answers[0].err != 0);
  }
  check_answers(rig);
  CHECK(rig.target_empty());
}

TEMPLATE_TEST_CASE("shared engine: a backend that fails in the middle of a fill gets one error answer, never a success",
                   "[shared_engine]", CachefilesRig, FanotifyRig) {
  // One 4 MiB window, copied in 1 MiB chunks, the asked ones first: the
  // request spans two chunks, the first lands, the second fails.
  TestType rig({.size = 3 * MiB, .fail_errno = EIO, .fail_from = 3 * MiB / 2}, {.window = 4 * MiB});
  const auto answers = ask_and_wait(rig, 0, 2 * MiB);
  check_answers(rig);
  REQUIRE(answers.size() == 1);
  CHECK_FALSE(answers[0].ok);
  CHECK(wrong_bytes(rig, 0, MiB) == "");  // the fill did start: the failure was in its middle
  CHECK(foreign_bytes(rig) == "");
}

TEMPLATE_TEST_CASE("shared engine: a backend failure beyond the asked bytes does not fail the request",
                   "[shared_engine]", CachefilesRig, FanotifyRig) {
  // The same window; the asked bytes are in the chunk that landed.
  TestType rig({.size = 3 * MiB, .fail_errno = EIO, .fail_from = 3 * MiB / 2}, {.window = 4 * MiB});
  const auto answers = ask_and_wait(rig, 4096, 4096);
  check_answers(rig);
  REQUIRE(answers.size() == 1);
  CHECK(answers[0].ok);
  CHECK(wrong_bytes(rig, 4096, 4096) == "");
  CHECK(foreign_bytes(rig) == "");
}

TEMPLATE_TEST_CASE("shared engine: the tail of a blob that is not a whole number of pages is served up to its end",
                   "[shared_engine]", CachefilesRig, FanotifyRig) {
  const std::uint64_t size = 70000;  // 17 pages and 464 bytes
  TestType rig({.size = size}, {});
  // Inside the last page; the last page from its start; a length past the
  // end (a reader's page-sized request at EOF); the last window.
  for (const auto& [offset, length] : std::vector<std::pair<std::uint64_t, std::uint64_t>>{
           {69900, 100}, {69632, 368}, {69000, 5000}, {65536, 4464}}) {
    INFO(TestType::NAME << ": [" << offset << ", +" << length << ")");
    const auto answers = ask_and_wait(rig, offset, length);
    REQUIRE(answers.size() == 1);
    CHECK(answers[0].ok);
    CHECK(wrong_bytes(rig, offset, length) == "");
  }
  check_answers(rig);
  CHECK(foreign_bytes(rig) == "");
}

TEMPLATE_TEST_CASE("shared engine: many requests at once on one blob are each answered once with the right bytes",
                   "[shared_engine]", CachefilesRig, FanotifyRig) {
  const std::uint64_t size = MiB + 777;
  TestType rig({.size = size}, {.window = 64 * KiB, .io_threads = 4});
  std::mt19937_64 rng(5);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  std::vector<Ask> asks;
  // Overlapping on purpose: several requests land in each window.
  for (int i = 0; i < 64; ++i) {
    const auto offset = rng() % size;
    ranges.emplace_back(offset, std::min<std::uint64_t>(1 + rng() % (3 * 4096), size - offset));
    asks.push_back(rig.ask(ranges.back().first, ranges.back().second));
  }
  REQUIRE(rig.wait(asks));
  check_answers(rig);
  for (std::size_t i = 0; i < asks.size(); ++i) {
    INFO(TestType::NAME << ": [" << ranges[i].first << ", +" << ranges[i].second << ")");
    const auto answers = rig.answers(asks[i]);
    REQUIRE(answers.size() == 1);
    CHECK(answers[0].ok);
    CHECK(wrong_bytes(rig, ranges[i].first, ranges[i].second) == "");
  }
  CHECK(foreign_bytes(rig) == "");
}

TEMPLATE_TEST_CASE("shared engine: a range already in the target is answered without reading the backend again",
                   "[shared_engine]", CachefilesRig, FanotifyRig) {
  TestType rig({.size = 256 * KiB}, {.window = 64 * KiB});
  REQUIRE(ask_and_wait(rig, 0, 4096).at(0).ok);
  const int reads = rig.blob()->reads.load();
  for (const auto& [offset, length] : std::vector<std::pair<std::uint64_t, std::uint64_t>>{
           {0, 4096}, {8192, 4096}, {100, 50}, {60 * KiB, 4 * KiB}}) {
    INFO(TestType::NAME << ": [" << offset << ", +" << length << ")");
    const auto answers = ask_and_wait(rig, offset, length);
    REQUIRE(answers.size() == 1);
    CHECK(answers[0].ok);
    CHECK(wrong_bytes(rig, offset, length) == "");
  }
  check_answers(rig);
  // fanotify's kernel asks again for every access of a marked file, filled
  // or not; cachefiles' asks only for holes, but a fill (and a READ joining
  // one) skips what the target already holds either way.
  CHECK(rig.blob()->reads.load() == reads);
}

TEMPLATE_TEST_CASE("shared engine: a backend that hangs past the request deadline gets one error answer in time",
                   "[shared_engine]", CachefilesRig, FanotifyRig) {
  // The backend gives up at the request's deadline (as a network backend
  // does); the answer must not wait for anything else. No timing assertion
  // beyond "it came": the machine is shared.
  TestType rig({.size = 256 * KiB, .hangs = true}, {.deadline = 100ms});
  const auto answers = ask_and_wait(rig, 0, 4096);
  check_answers(rig);
  REQUIRE(answers.size() == 1);
  CHECK_FALSE(answers[0].ok);
  CHECK(rig.target_empty());
}

TEMPLATE_TEST_CASE("shared engine: after a failed request the same range is served once the backend is healthy",
                   "[shared_engine]", CachefilesRig, FanotifyRig) {
  SECTION("a backend that failed") {
    TestType rig({.size = 256 * KiB, .fail_errno = EIO, .fail_from = 0}, {});
    CHECK_FALSE(ask_and_wait(rig, 4096, 4096).at(0).ok);
    rig.blob()->err = 0;
    const auto answers = ask_and_wait(rig, 4096, 4096);
    REQUIRE(answers.size() == 1);
    CHECK(answers[0].ok);
    CHECK(wrong_bytes(rig, 4096, 4096) == "");
    check_answers(rig);
  }
  SECTION("a backend that hung") {
    TestType rig({.size = 256 * KiB, .hangs = true}, {.deadline = 100ms});
    CHECK_FALSE(ask_and_wait(rig, 4096, 4096).at(0).ok);
    rig.blob()->gate->open();
    const auto answers = ask_and_wait(rig, 4096, 4096);
    REQUIRE(answers.size() == 1);
    CHECK(answers[0].ok);
    CHECK(wrong_bytes(rig, 4096, 4096) == "");
    check_answers(rig);
  }
}

}  // namespace ondemand::test
