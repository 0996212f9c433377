#include "frontends/fanotify/filler.h"

#include <catch2/catch.hpp>

namespace ondemand::fanotify {

TEST_CASE("fanotify: fill ranges widen to the window and stop at the file end", "[fanotify]") {
  auto r = widen(5000, 10, 1 << 20, 65536);
  CHECK(r.start == 0);
  CHECK(r.end == 65536);
  r = widen(70000, 1 << 30, 100000, 65536);
  CHECK(r.start == 65536);
  CHECK(r.end == 100000);
  r = widen(200000, 10, 100000, 65536);
  CHECK(r.start == r.end);
  r = widen(~0ull - 10, 5, ~0ull, 4096);
  CHECK(r.end == ~0ull);
}

}  // namespace ondemand::fanotify
