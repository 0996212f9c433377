// libFuzzer target for proto::decode, which reads every datagram on the
// supervisor <-> worker channel, on worker.sock (adoption) and between
// workers during an upgrade.
//
// Input: first byte = number of fds "received" with the datagram (mod 256),
// the rest = the datagram. Invariants: decode never throws (any exception is
// a finding) and never crashes; a decoded message re-encodes to a datagram
// of at most MAX_MESSAGE_BYTES that decodes to the same type with the same
// fd count (what we accept, we can also say).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "proto/channel.h"

#include "tests/fuzz/fuzz_check.h"


extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ondemand::proto;
  if (size == 0) return 0;
  const std::size_t fds = data[0];
  const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    auto decoded = decode(bytes, fds);
    if (auto* m = std::get_if<Message>(&decoded)) {
      FUZZ_CHECK(fds_of(*m) == fds);
      const std::string again = encode(*m);
      // A decoded message fits (its strings came from at most 64 KiB), unless
      // re-escaping grew it: then encode must refuse, never truncate.
      if (!again.empty()) {
        FUZZ_CHECK(again.size() <= MAX_MESSAGE_BYTES);
        auto back = decode(again, fds_of(*m));
        FUZZ_CHECK(std::holds_alternative<Message>(back));
        FUZZ_CHECK(type_of(std::get<Message>(back)) == type_of(*m));
      }
    } else {
      FUZZ_CHECK(!std::get<DecodeError>(decoded).what.empty());
    }
  } catch (...) {
    std::fprintf(stderr, "decode threw\n");
    std::abort();
  }
  return 0;
}
