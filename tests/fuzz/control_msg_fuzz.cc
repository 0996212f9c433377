// libFuzzer target for the control protocol's decoders (proto/control.h):
// decode_request reads every datagram a local peer sends to control.sock,
// decode_reply everything ondemandctl gets back.
//
// Input: first byte selects the decoder (mod 6): 0 decode_request, 1..5
// decode_reply to status, restart-worker, stop, upgrade, reload; the rest is the
// datagram. Invariants: neither decoder throws (any exception is a finding)
// or crashes; what decodes re-encodes to at most CONTROL_MAX_BYTES (or is
// refused with "", never truncated) and decodes again to the same kind.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "proto/control.h"

#include "tests/fuzz/fuzz_check.h"


extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ondemand::proto;
  if (size == 0) return 0;
  const unsigned which = data[0] % 6;
  const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    if (which == 0) {
      auto decoded = decode_request(bytes);
      if (auto* r = std::get_if<ControlRequest>(&decoded)) {
        const auto again = encode_request(*r);
        FUZZ_CHECK(!again.empty());  // a request's only string is bounded by CONTROL_MAX_PATH
        FUZZ_CHECK(again.size() <= CONTROL_MAX_BYTES);
        auto back = decode_request(again);
        FUZZ_CHECK(std::holds_alternative<ControlRequest>(back));
        FUZZ_CHECK(std::get<ControlRequest>(back).index() == r->index());
      } else {
        FUZZ_CHECK(!std::get<std::string>(decoded).empty());
      }
      return 0;
    }
    const ControlRequest answered[] = {control::Status{}, control::RestartWorker{}, control::Stop{},
                                       control::Upgrade{}, control::Reload{}};
    const auto& request = answered[which - 1];
    auto decoded = decode_reply(bytes, request);
    if (auto* r = std::get_if<ControlReply>(&decoded)) {
      const auto again = encode_reply(*r);
      if (!again.empty()) {
        FUZZ_CHECK(again.size() <= CONTROL_MAX_BYTES);
        auto back = decode_reply(again, request);
        FUZZ_CHECK(std::holds_alternative<ControlReply>(back));
        FUZZ_CHECK(std::get<ControlReply>(back).index() == r->index());
      }
    } else {
      FUZZ_CHECK(!std::get<std::string>(decoded).empty());
    }
  } catch (...) {
    std::fprintf(stderr, "a control decoder threw\n");
    std::abort();
  }
  return 0;
}
