// libFuzzer target for the configuration parser (config/config.cc): the
// file an operator edits, and (through `ondemandctl reload`) the one a
// running supervisor re-reads.
//
// Invariant: parse_config either returns a Config or throws ConfigError
// (whose message names what was wrong); any other exception, a crash or
// undefined behaviour is a finding.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    (void)ondemand::parse_config(text);
  } catch (const ondemand::ConfigError& e) {
    if (std::string_view(e.what()).empty()) {
      std::fprintf(stderr, "ConfigError without a message\n");
      std::abort();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parse_config threw something other than ConfigError: %s\n", e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "parse_config threw a non-exception\n");
    std::abort();
  }
  return 0;
}
