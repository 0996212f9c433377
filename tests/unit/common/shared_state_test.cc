#include "common/shared_state.h"

#include <unistd.h>

#include <memory>
#include <random>

#include <catch2/catch.hpp>

namespace ondemand {
namespace {

struct Header {
  std::unique_ptr<proto::SharedState> state = std::make_unique<proto::SharedState>();
  Header() {
    state->magic = proto::SHM_MAGIC;
    state->version = proto::SHM_VERSION;
    state->size = sizeof(proto::SharedState);
  }
};

std::string unique_name() {
  std::random_device rd;
  return "ondemand-unit-" + std::to_string(::getpid()) + "-" + std::to_string(rd());
}

// Removes the segment even when a check fails.
struct SegmentName {
  std::string name = unique_name();
  ~SegmentName() { SharedStateMapping::remove(name); }
};

}  // namespace

TEST_CASE("check_header accepts the current layout", "[common][shared_state]") {
  Header h;
  CHECK(check_header(h.state.get(), sizeof(proto::SharedState)) == "");
  CHECK(check_header(h.state.get(), sizeof(proto::SharedState) + 4096) == "");  // page-rounded mapping
}

TEST_CASE("check_header refuses a bad magic, version, size or a short mapping", "[common][shared_state]") {
  SECTION("magic") {
    Header h;
    h.state->magic = 0;
    CHECK_THAT(check_header(h.state.get(), sizeof(proto::SharedState)), Catch::Contains("magic"));
  }
  SECTION("version") {
    Header h;
    h.state->version = proto::SHM_VERSION + 1;
    CHECK_THAT(check_header(h.state.get(), sizeof(proto::SharedState)), Catch::Contains("version"));
  }
  SECTION("recorded size") {
    Header h;
    h.state->size = sizeof(proto::SharedState) - 8;
    CHECK_THAT(check_header(h.state.get(), sizeof(proto::SharedState)), Catch::Contains("size"));
  }
  SECTION("mapping shorter than the layout") {
    Header h;
    CHECK_THAT(check_header(h.state.get(), sizeof(proto::SharedState) - 1), Catch::Contains("bytes"));
    CHECK_FALSE(check_header(h.state.get(), 0).empty());
  }
}

TEST_CASE("create() then attach() share one segment both ways", "[common][shared_state]") {
  SegmentName seg;
  auto created = SharedStateMapping::create(seg.name);
  CHECK(created.state().magic == proto::SHM_MAGIC);
  CHECK(created.state().version == proto::SHM_VERSION);
  CHECK(created.state().size == sizeof(proto::SharedState));
  CHECK(created.state().generation.load() == 0);
  created.state().generation.store(5);
  created.state().counters.opens.fetch_add(3);

  auto attached = SharedStateMapping::attach(seg.name);
  CHECK(attached.name() == seg.name);
  CHECK(attached.state().generation.load() == 5);
  CHECK(attached.state().counters.opens.load() == 3);
  CHECK(&attached.state() != &created.state());  // two mappings...
  attached.state().heartbeat_ns.store(777);
  CHECK(created.state().heartbeat_ns.load() == 777);  // ...of the same memory
}

TEST_CASE("create() zeroes a segment left over by a previous supervisor", "[common][shared_state]") {
  SegmentName seg;
  {
    auto first = SharedStateMapping::create(seg.name);
    first.state().restarts.store(9);
  }
  auto second = SharedStateMapping::create(seg.name);
  CHECK(second.state().restarts.load() == 0);
}

TEST_CASE("attach() refuses a missing segment or a wrong header", "[common][shared_state]") {
  SegmentName seg;
  CHECK_THROWS_AS(SharedStateMapping::attach(seg.name), SharedStateError);

  auto created = SharedStateMapping::create(seg.name);
  created.state().version = proto::SHM_VERSION + 7;
  CHECK_THROWS_WITH(SharedStateMapping::attach(seg.name),
                    Catch::Contains(seg.name) && Catch::Contains("version"));
}

TEST_CASE("open_or_create() keeps the counters of a valid segment", "[common][shared_state]") {
  SegmentName seg;
  auto created = SharedStateMapping::create(seg.name);
  created.state().counters.reads.store(42);
  auto adopted = SharedStateMapping::open_or_create(seg.name);
  CHECK(adopted.state().counters.reads.load() == 42);
}

TEST_CASE("open_or_create() creates a fresh segment when none exists", "[common][shared_state]") {
  SegmentName seg;
  auto m = SharedStateMapping::open_or_create(seg.name);
  CHECK(check_header(&m.state(), sizeof(proto::SharedState)) == "");
}

TEST_CASE("shm_name_for_tag gives one segment per cache tag", "[common][shared_state]") {
  CHECK(shm_name_for_tag("ondemand") == "ondemand-ondemand");
  CHECK(shm_name_for_tag("a") != shm_name_for_tag("b"));
}

}  // namespace ondemand
