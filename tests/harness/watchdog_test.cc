// The watchdog judges a worker by its own requests only (issue 9.6). The
// oldest-request age lives in shared memory and outlives the worker that
// wrote it: when a worker is killed with a request stuck in flight, its
// successor must not be killed for that request before it has even had a
// chance to publish its own (empty) queue.
//
// The stuck request is real: an OPEN whose anonymous fd is the worker's own
// fd 0 (/dev/null, inherited from the supervisor: the harness cannot install
// a real anonymous fd, and /dev/null swallows pwrite like a cache file), of
// a sparse blob that looks like a compressed EROFS image, so its first READ
// fills the whole blob on an I/O thread (cachefiles_frontend.cc
// fill_whole_blob). A fill that makes progress counts as alive (issue 9.10),
// so the blob's reads are made to hang: the test marks the blob file with
// FAN_PRE_ACCESS in a fanotify pre-content group it never answers, and the
// worker's first pread of it (the superblock probe) sleeps, killably, in
// fanotify_get_response. The worker's loop keeps beating; only its oldest
// request ages, past request_timeout_ms, and the watchdog kills it.
// (Needs root, a kernel with pre-content hooks, 6.14+, and blob_dir on
// ext4/xfs/btrfs.)
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "frontends/fanotify/group.h"
#include "proto/kernel_msg.h"
#include "tests/harness/harness.h"

using namespace ondemand::harness;

namespace {
void write_compressed_looking_sparse_blob(const std::filesystem::path& path, std::uint64_t size) {
  ondemand::UniqueFd fd{::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  REQUIRE(fd);
  unsigned char sb[128] = {};
  const std::uint32_t magic = 0xE0F5E1E2, lz4 = 0x1;
  std::memcpy(sb, &magic, 4);  // little-endian host
  std::memcpy(sb + 80, &lz4, 4);
  REQUIRE(::pwrite(fd.get(), sb, sizeof sb, 1024) == static_cast<ssize_t>(sizeof sb));
  REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
}
}  // namespace

// Property: after the watchdog kills a worker for its stuck request, the
// successor is not killed for that same request: exactly one hang per
// stuck request, and the successor keeps serving. Repeated, because on the
// old code the successor dies only when a health check falls between its
// "serving" and its first heartbeat (about half the time).
TEST_CASE("the watchdog does not kill a successor for its predecessor's stuck request",
          "[harness][watchdog][fixed-by-lead]") {
  SupervisorOptions options;
  options.config = {{"request_timeout_ms", 1000}, {"io_threads", 1}};
  SupervisorProcess sv(options);
  constexpr std::uint64_t BLOB_SIZE = std::uint64_t{64} << 30;
  write_compressed_looking_sparse_blob(sv.blob_dir() / "stuck", BLOB_SIZE);
  // Never read, never answered: every read of the blob through an fd opened
  // from now on blocks until the group closes at the end of the test.
  const auto group = ondemand::fanotify::create_group();
  REQUIRE(ondemand::fanotify::mark(group.get(), (sv.blob_dir() / "stuck").string()) == 0);
  auto serving = sv.wait_serving();
  REQUIRE(serving);

  std::uint32_t msg_id = 1;
  for (int round = 0; round < 6; ++round) {
    INFO(fmt::format("round {}: worker pid={}", round, *serving));
    auto before = sv.status();
    REQUIRE(before);
    const auto hangs = (*before)["hangs_detected"].get<std::uint64_t>();
    const std::uint32_t object_id = 100 + static_cast<std::uint32_t>(round);
    const std::uint32_t open_id = ++msg_id;
    REQUIRE(sv.device().inject(ondemand::proto::encode_open(open_id, object_id, /*fd=*/0, "erofs,harness", "stuck")));
    REQUIRE(sv.device().wait_copen(open_id, Clock::now() + 5s) == static_cast<std::int64_t>(BLOB_SIZE));
    REQUIRE(sv.device().inject(ondemand::proto::encode_read(++msg_id, object_id, 0, 4096)));

    // The watchdog kills the stuck worker; a successor serves.
    auto next = sv.wait_serving(15s, *serving);
    REQUIRE(next);
    // Give a wrongly inherited request age several health checks to bite.
    std::this_thread::sleep_for(700ms);
    auto after = sv.status();
    REQUIRE(after);
    CHECK((*after)["hangs_detected"].get<std::uint64_t>() == hangs + 1);
    REQUIRE((*after)["worker"].value("pid", -1) == *next);
    REQUIRE(process_alive(*next));
    CHECK(sv.device().open_missing(++msg_id) == -2);
    serving = next;
  }
}
