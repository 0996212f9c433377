// The kernel side is an input too: a message the worker cannot parse (a
// short read, a lying length, an overflowing key size, an opcode from a
// newer kernel) must cost that message only, never the worker, and an OPEN
// still gets its one reply so no mount waits on it for ever
// (frontends/cachefiles/cachefiles_device.cc reject).
#include <cerrno>
#include <cstring>
#include <string>

#include <catch2/catch.hpp>

#include "proto/kernel_msg.h"
#include "tests/harness/harness.h"

using namespace ondemand::harness;

namespace {
// Overwrites the u32 at `at` of a kernel message.
std::string with_u32(std::string message, std::size_t at, std::uint32_t value) {
  std::memcpy(message.data() + at, &value, sizeof value);
  return message;
}
// struct cachefiles_msg {u32 msg_id, opcode, len, object_id} then, for an
// OPEN, struct cachefiles_open {u32 volume_key_size, cookie_key_size, fd,
// flags}.
constexpr std::size_t OPCODE = 4, LEN = 8, VOLUME_KEY_SIZE = 16;
}  // namespace

// Property: each malformed message is logged and counted; the OPEN among
// them is refused with EINVAL (its one reply); the same worker then answers
// a good OPEN, and nothing was restarted.
TEST_CASE("unparsable kernel messages cost only themselves", "[harness][malformed][kernel]") {
  SupervisorOptions options;
  options.config = {{"spare_worker", false}};
  SupervisorProcess sv(options);
  const auto worker = sv.wait_serving();
  REQUIRE(worker);
  auto& device = sv.device();
  const auto open = ondemand::proto::encode_open(21, 21, /*fd=*/1000, "erofs,harness", "x");

  REQUIRE(device.inject(std::string("\x01\x02\x03", 3)));                     // shorter than a header
  REQUIRE(device.inject(with_u32(ondemand::proto::encode_close(22, 22), LEN, 4096)));  // lying len
  REQUIRE(device.inject(with_u32(ondemand::proto::encode_close(23, 23), OPCODE, 99)));  // unknown opcode
  REQUIRE(device.inject(with_u32(open, VOLUME_KEY_SIZE, 0xffffff)));          // keys overflow the payload
  INFO(device.written());
  CHECK(device.wait_copen(21, Clock::now() + 5s) == -EINVAL);

  CHECK(device.open_missing(24) == -ENOENT);
  const auto status = sv.status();
  REQUIRE(status);
  INFO(sv.log());
  CHECK((*status)["worker"].value("pid", -1) == *worker);
  CHECK(status->value("restarts", -1) == 0);
  CHECK((*status)["counters"].value("bad_messages", 0) == 4);
  CHECK(sv.log().find("unparsable kernel message msg_id=21 opcode=0: key sizes overflow the payload") != std::string::npos);
}
