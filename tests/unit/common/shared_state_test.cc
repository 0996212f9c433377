#include "common/shared_state.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include <memory>
#include <random>

#include <catch2/catch.hpp>

#include "common/unique_fd.h"

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

// A segment made by hand, as another version (or another user) would make
// it: `bytes` long, header from `header` (none if null), then `mode`/`uid`.
void make_segment(const std::string& name, std::size_t bytes, const proto::SharedState* header, mode_t mode,
                  uid_t uid) {
  int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  UniqueFd owner{fd};
  REQUIRE(::ftruncate(fd, static_cast<off_t>(bytes)) == 0);
  if (header) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    REQUIRE(p != MAP_FAILED);
    std::memcpy(p, header, std::min(bytes, sizeof(proto::SharedState)));
    ::munmap(p, bytes);
  }
  REQUIRE(::fchmod(fd, mode) == 0);
  REQUIRE(::fchown(fd, uid, static_cast<gid_t>(-1)) == 0);
}

struct stat segment_stat(const std::string& name) {
  struct stat st{};
  REQUIRE(::stat(("/dev/shm/" + name).c_str(), &st) == 0);
  return st;
}

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

TEST_CASE("attach_fd() maps an inherited fd of the segment, checking its header", "[common][shared_state][sandbox]") {
  SegmentName seg;
  auto created = SharedStateMapping::create(seg.name);
  created.state().generation.store(9);
  UniqueFd fd{::open(("/dev/shm/" + seg.name).c_str(), O_RDWR | O_CLOEXEC)};
  REQUIRE(fd);
  auto attached = SharedStateMapping::attach_fd(fd.get(), seg.name);
  fd.reset();  // the mapping outlives the fd
  CHECK(attached.state().generation.load() == 9);
  attached.state().heartbeat_ns.store(42);
  CHECK(created.state().heartbeat_ns.load() == 42);

  // Not a segment: a memfd with a bad header, an empty one, a pipe.
  UniqueFd bad{::memfd_create("not-ondemand", MFD_CLOEXEC)};
  REQUIRE(::ftruncate(bad.get(), sizeof(proto::SharedState)) == 0);
  CHECK_THROWS_WITH(SharedStateMapping::attach_fd(bad.get(), seg.name), Catch::Contains("bad magic"));
  UniqueFd empty{::memfd_create("empty", MFD_CLOEXEC)};
  CHECK_THROWS_AS(SharedStateMapping::attach_fd(empty.get(), seg.name), SharedStateError);
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  UniqueFd r{p[0]}, w{p[1]};
  CHECK_THROWS_AS(SharedStateMapping::attach_fd(r.get(), seg.name), SharedStateError);
  CHECK_THROWS_AS(SharedStateMapping::attach_fd(-1, seg.name), SharedStateError);
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

TEST_CASE("check_header accepts a larger (newer, appended) layout, refuses an older one", "[common][shared_state]") {
  Header h;
  h.state->size = sizeof(proto::SharedState) + 64;
  CHECK_THAT(check_header(h.state.get(), sizeof(proto::SharedState)), Catch::Contains("exceeds"));
  CHECK(check_header(h.state.get(), sizeof(proto::SharedState) + 64) == "");
  h.state->size = sizeof(proto::SharedState) - 8;
  CHECK_THAT(check_header(h.state.get(), sizeof(proto::SharedState) + 64), Catch::Contains("older"));
}

TEST_CASE("create() makes the segment 0600 and ours", "[common][shared_state]") {
  SegmentName seg;
  const mode_t old_mask = ::umask(0);  // the mode must not depend on the umask
  auto created = SharedStateMapping::create(seg.name);
  ::umask(old_mask);
  const auto st = segment_stat(seg.name);
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_uid == ::geteuid());
}

TEST_CASE("attach() accepts a larger segment from a future version", "[common][shared_state]") {
  SegmentName seg;
  Header h;
  const std::size_t future = sizeof(proto::SharedState) + 512;
  h.state->size = static_cast<std::uint32_t>(future);
  h.state->counters.reads.store(11);
  make_segment(seg.name, future, h.state.get(), 0600, ::geteuid());
  auto attached = SharedStateMapping::attach(seg.name);
  CHECK(attached.state().counters.reads.load() == 11);
  CHECK(attached.state().size == future);
  auto supervisor = SharedStateMapping::open_or_create(seg.name);  // kept, not re-created
  CHECK(supervisor.state().counters.reads.load() == 11);
}

// Property: an older layout's segment (header size == its length, below
// ours) is grown in place to ours, keeping every field it had, so an
// upgrade that appends a field can attach the live segment; the new
// fields read as zero.
TEST_CASE("attach(), open_or_create() and attach_fd() grow an older layout's segment, keeping its fields",
          "[common][shared_state]") {
  const std::size_t older = sizeof(proto::SharedState) - 64;  // an older, shorter layout
  Header h;
  h.state->size = static_cast<std::uint32_t>(older);
  h.state->counters.reads.store(17);
  SECTION("attach") {
    SegmentName seg;
    make_segment(seg.name, older, h.state.get(), 0600, ::geteuid());
    auto attached = SharedStateMapping::attach(seg.name);
    CHECK(attached.state().counters.reads.load() == 17);
    CHECK(attached.state().size == sizeof(proto::SharedState));
    CHECK(attached.state().oldest_request.text[0] == '\0');
    CHECK(segment_stat(seg.name).st_size == static_cast<off_t>(sizeof(proto::SharedState)));
  }
  SECTION("open_or_create") {
    SegmentName seg;
    make_segment(seg.name, older, h.state.get(), 0600, ::geteuid());
    auto supervisor = SharedStateMapping::open_or_create(seg.name);
    CHECK(supervisor.state().counters.reads.load() == 17);  // kept, not re-created
    CHECK(segment_stat(seg.name).st_size == static_cast<off_t>(sizeof(proto::SharedState)));
  }
  SECTION("attach_fd") {
    SegmentName seg;
    make_segment(seg.name, older, h.state.get(), 0600, ::geteuid());
    UniqueFd fd{::shm_open(seg.name.c_str(), O_RDWR | O_CLOEXEC, 0)};
    REQUIRE(fd);
    auto worker = SharedStateMapping::attach_fd(fd.get(), seg.name);
    CHECK(worker.state().counters.reads.load() == 17);
    CHECK(worker.state().size == sizeof(proto::SharedState));
  }
}

// Property: a segment shorter than its own header says (damaged, or cut
// short under us) is refused, never grown or re-created.
TEST_CASE("attach() and open_or_create() refuse a segment shorter than its header says", "[common][shared_state]") {
  SegmentName seg;
  Header h;  // says sizeof(SharedState)
  make_segment(seg.name, sizeof(proto::SharedState) - 64, h.state.get(), 0600, ::geteuid());
  CHECK_THROWS_WITH(SharedStateMapping::attach(seg.name),
                    Catch::Contains("/dev/shm/" + seg.name) && Catch::Contains("bytes"));
  CHECK_THROWS_AS(SharedStateMapping::open_or_create(seg.name), SharedStateError);
  CHECK(segment_stat(seg.name).st_size == static_cast<off_t>(sizeof(proto::SharedState) - 64));
}

TEST_CASE("open_or_create() refuses a segment with a wrong magic instead of re-creating it", "[common][shared_state]") {
  SegmentName seg;
  Header h;
  h.state->magic = 0x1234;
  make_segment(seg.name, sizeof(proto::SharedState), h.state.get(), 0600, ::geteuid());
  CHECK_THROWS_WITH(SharedStateMapping::open_or_create(seg.name),
                    Catch::Contains("/dev/shm/" + seg.name) && Catch::Contains("magic"));
}

TEST_CASE("a segment of another user or with group/other bits is refused", "[common][shared_state]") {
  if (::geteuid() != 0) {
    WARN("not root: cannot chown a segment to another uid");
    return;
  }
  SECTION("0666, owned by nobody") {
    SegmentName seg;
    Header h;
    make_segment(seg.name, sizeof(proto::SharedState), h.state.get(), 0666, 65534);
    const auto path = "/dev/shm/" + seg.name;
    CHECK_THROWS_WITH(SharedStateMapping::attach(seg.name),
                      Catch::Contains(path) && Catch::Contains("uid 65534") && Catch::Contains("0666"));
    CHECK_THROWS_WITH(SharedStateMapping::open_or_create(seg.name),
                      Catch::Contains(path) && Catch::Contains("uid 65534") && Catch::Contains("0666"));
    const auto st = segment_stat(seg.name);  // left alone
    CHECK(st.st_uid == 65534);
    CHECK((st.st_mode & 0777) == 0666);
  }
  SECTION("ours, but 0640") {
    SegmentName seg;
    Header h;
    make_segment(seg.name, sizeof(proto::SharedState), h.state.get(), 0640, ::geteuid());
    CHECK_THROWS_WITH(SharedStateMapping::attach(seg.name), Catch::Contains("0640"));
  }
}

TEST_CASE("shm_name_for_tag gives one segment per cache tag", "[common][shared_state]") {
  CHECK(shm_name_for_tag("ondemand") == "ondemand-ondemand");
  CHECK(shm_name_for_tag("a") != shm_name_for_tag("b"));
}

}  // namespace ondemand
