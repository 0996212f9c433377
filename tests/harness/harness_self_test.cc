// The harness's own device trick, checked without a supervisor: a raw pty
// must carry kernel messages unchanged, one message per read() when the
// harness writes one at a time, and the worker's commands back.
#include <poll.h>
#include <unistd.h>

#include <thread>

#include <catch2/catch.hpp>

#include "proto/kernel_msg.h"
#include "tests/harness/harness.h"

using namespace ondemand::harness;

namespace {
std::string read_master(int master) {
  pollfd p{master, POLLIN, 0};
  if (::poll(&p, 1, 2000) <= 0) return {};
  char buf[2048];
  const ssize_t n = ::read(master, buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}
}  // namespace

// Property: inject() hands the worker exactly one intact message per read(),
// binary bytes included (NUL, 0x03, 0x11/0x13, CR, LF), as cachefiles does.
TEST_CASE("a raw pty passes each injected kernel message intact, one per read", "[harness][self]") {
  FakeDevice device;
  for (std::uint32_t i = 0; i < 200; ++i) {
    std::string message;
    switch (i % 3) {
      case 0: message = ondemand::proto::encode_open(i, 0x0d0a1113, 1000, "erofs,\r\n\x03\x11", "blob-" + std::to_string(i)); break;
      case 1: message = ondemand::proto::encode_read(i, 0x0313, 0x0a0d000000ULL, 4096); break;
      default: message = ondemand::proto::encode_close(i, 0x1113); break;
    }
    bool consumed = false;
    std::thread writer([&] { consumed = device.inject(message); });
    const std::string got = read_master(device.master());
    writer.join();
    REQUIRE(got == message);
    REQUIRE(consumed);
  }
}

// Why inject() waits: a pty, unlike /dev/cachefiles, merges messages that
// are written before the reader reads.
TEST_CASE("a pty merges back-to-back messages, so the harness writes one at a time", "[harness][self]") {
  FakeDevice device;
  const auto a = ondemand::proto::encode_close(1, 1), b = ondemand::proto::encode_close(2, 2);
  REQUIRE(device.write_raw(a));
  REQUIRE(device.write_raw(b));
  std::this_thread::sleep_for(50ms);
  CHECK(read_master(device.master()) == a + b);
}

// Property: the worker's replies (`restore`, `copen id,value`), written
// without separators, are all recognised.
TEST_CASE("the fake device parses restore and copen commands written to the master", "[harness][self]") {
  FakeDevice device;
  for (std::string command : {"restore", "copen 7,-2", "copen 8,4096", "restore", "copen 12,-22"})
    REQUIRE(::write(device.master(), command.data(), command.size()) == static_cast<ssize_t>(command.size()));
  const auto deadline = Clock::now() + 2s;
  CHECK(device.wait_copen(7, deadline) == -2);
  CHECK(device.wait_copen(8, deadline) == 4096);
  CHECK(device.wait_copen(12, deadline) == -22);
  CHECK(device.wait_restores(2, 2s));
}

// Property: the real supervisor starts on the fake device (fd store path)
// and its worker restores, serves, and answers an OPEN of a missing blob.
TEST_CASE("the real supervisor serves from the fake device", "[harness][self]") {
  SupervisorProcess sv;
  auto pid = sv.wait_serving();
  REQUIRE(pid);
  CHECK(sv.device().wait_restores(1, 5s));
  CHECK(sv.device().open_missing(1) == -2);
  CHECK(sv.device().open_missing(2) == -2);
}

// Property: the scan that fails a test on a sanitizer report in a
// supervisor's log (where a sandboxed worker's reports land) finds each
// sanitizer's report line, and not the daemon's own lines that merely
// mention an error.
TEST_CASE("sanitizer reports are found in a captured log, ordinary errors are not", "[harness][self]") {
  const std::string ordinary =
      "[2026-12-03 12:00:00.000] [error] worker[61] copen failed: std::runtime_error: bad\n"
      "[2026-12-03 12:00:00.001] [warning] supervisor[50] ERROR: nothing sanitized here\n";
  CHECK_FALSE(sanitizer_report(ordinary).has_value());
  const std::string ubsan = ordinary + "engine/engine.cc:42:17: runtime error: signed integer overflow\n";
  CHECK(sanitizer_report(ubsan) == "engine/engine.cc:42:17: runtime error: signed integer overflow");
  const std::string asan = ordinary + "==61==ERROR: AddressSanitizer: heap-use-after-free on address 0x6\n";
  CHECK(sanitizer_report(asan) == "==61==ERROR: AddressSanitizer: heap-use-after-free on address 0x6");
  CHECK(sanitizer_report("==7==ERROR: LeakSanitizer: detected memory leaks\n").has_value());
  CHECK(sanitizer_report("WARNING: ThreadSanitizer: data race (pid=9)\n").has_value());
  CHECK(sanitizer_report("==8==ERROR: Can't open file: /r/asan.8 (reason: 13)\n").has_value());
}
