// libFuzzer target for the blob bindings file (backends/bindings/bindings.h):
// parse_bindings reads <data_dir>/bindings.json at supervisor start (a file
// that may be torn or edited by hand) and the worker's published copy at
// every change.
//
// Invariants: parse_bindings never throws (any exception is a finding) or
// crashes; it gives either bindings or a non-empty error, never both; every
// binding it accepts is valid by validate_binding; what it accepts
// serializes and parses back to the same bindings.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "backends/bindings/bindings.h"

#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ondemand::bindings;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    auto parsed = parse_bindings(text);
    if (auto* error = std::get_if<std::string>(&parsed)) {
      FUZZ_CHECK(!error->empty());
      return 0;
    }
    const auto& bindings = std::get<Bindings>(parsed);
    for (const auto& [id, b] : bindings) FUZZ_CHECK(validate_binding(id, b).empty());
    auto again = parse_bindings(serialize_bindings(bindings));
    FUZZ_CHECK(std::holds_alternative<Bindings>(again));
    FUZZ_CHECK(std::get<Bindings>(again) == bindings);
  } catch (...) {
    std::fprintf(stderr, "parse_bindings or serialize_bindings threw\n");
    std::abort();
  }
  return 0;
}
