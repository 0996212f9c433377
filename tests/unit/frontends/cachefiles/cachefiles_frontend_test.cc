// The cachefiles front end on the real engine, against real fds: memfds
// stand in for the kernel's anonymous fds (the engine pwrites into them, the
// test preads them back),
// pipes show when the engine closes an fd (the read end sees POLLHUP), and
// FakeReplies records every reply so "exactly one reply per request" can be
// counted.
#include "common/sys.h"
#include "frontends/cachefiles/cachefiles_frontend.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <catch2/catch.hpp>

#include "tests/unit/fake_backend.h"
#include "tests/unit/test_util.h"
#include "backends/local.h"
#include "proto/blob_id.h"

namespace ondemand::worker {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;

constexpr std::uint64_t MiB = 1 << 20;

// ---------------------------------------------------------------- fakes

using test::FakeBackend;
using test::FakeBlob;
using test::Gate;

class FakeReplies final : public Replies {
 public:
  explicit FakeReplies(std::thread::id loop_thread) : loop_thread_(loop_thread) {}

  int copen(std::uint32_t msg_id, std::int64_t value) override {
    std::lock_guard lock(mu_);
    if (std::this_thread::get_id() != loop_thread_) ++off_loop_;
    copens_.emplace_back(msg_id, value);
    events_.push_back("copen " + std::to_string(msg_id));
    return copen_result_;
  }
  int read_complete(int anon_fd, std::uint32_t msg_id) override {
    std::lock_guard lock(mu_);
    completes_.emplace_back(anon_fd, msg_id);
    events_.push_back("complete " + std::to_string(msg_id));
    return 0;
  }
  int restore() override {
    std::lock_guard lock(mu_);
    if (std::this_thread::get_id() != loop_thread_) ++off_loop_;
    ++restores_;
    events_.push_back("restore");
    return 0;
  }

  std::vector<std::pair<std::uint32_t, std::int64_t>> copens() const {
    std::lock_guard lock(mu_);
    return copens_;
  }
  std::vector<std::pair<int, std::uint32_t>> completes() const {
    std::lock_guard lock(mu_);
    return completes_;
  }
  int restores() const {
    std::lock_guard lock(mu_);
    return restores_;
  }
  std::vector<std::string> events() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  int off_loop_calls() const {
    std::lock_guard lock(mu_);
    return off_loop_;
  }
  void fail_copen_with(int err) {
    std::lock_guard lock(mu_);
    copen_result_ = err;
  }

 private:
  mutable std::mutex mu_;
  std::thread::id loop_thread_;
  std::vector<std::pair<std::uint32_t, std::int64_t>> copens_;
  std::vector<std::pair<int, std::uint32_t>> completes_;
  std::vector<std::string> events_;
  int restores_ = 0;
  int off_loop_ = 0;
  int copen_result_ = 0;
};

// ---------------------------------------------------------------- harness

proto::OpenRequest open_req(std::uint32_t msg_id, std::uint32_t object_id, int fd,
                            std::string_view blob_id) {
  const auto bytes = proto::encode_open(msg_id, object_id, fd, "erofs,test", blob_id);
  auto parsed = proto::parse_kernel_msg(
      {reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()});
  return std::get<proto::OpenRequest>(std::get<proto::KernelRequest>(parsed));
}

// The knobs of engine and front end together, as the worker sets them.
struct Options {
  std::uint32_t max_inflight = 64;
  std::uint32_t io_threads = 4;
  std::uint64_t fill_window = 4 << 20;
  std::uint64_t fill_window_min = 0;  // 0: fill_window (fixed windows)
  std::uint32_t fill_ahead_windows = 0;
  bool prefetch = false;
  std::chrono::milliseconds restore_spacing{200};
  std::chrono::milliseconds request_deadline{0};
  std::uint32_t max_open_objects = 0;
};

struct Harness {
  asio::io_context loop;
  asio::executor_work_guard<asio::io_context::executor_type> guard{loop.get_executor()};
  FakeReplies replies{std::this_thread::get_id()};
  proto::WorkerCounters counters{};
  proto::WorkerMetrics metrics{};
  proto::BudgetCounters budget{};
  std::unique_ptr<Engine> core;
  std::unique_ptr<CachefilesFrontend> frontend;
  int done_callbacks = 0;
  // Opened before the engine joins its pool, so a failed check cannot hang
  // the test run on a blocked pool thread.
  std::vector<std::shared_ptr<Gate>> gates;

  Harness(Backend& backend, Options options = fast_options()) {
    core = std::make_unique<Engine>(loop, backend,
                                    EngineOptions{.io_threads = options.io_threads,
                                                  .prefetch_window = options.fill_window},
                                    counters, metrics);
    frontend = std::make_unique<CachefilesFrontend>(
        loop, *core, replies,
        CachefilesOptions{.max_inflight = options.max_inflight,
                          .fill_window = options.fill_window,
                          .fill_window_min = options.fill_window_min ? options.fill_window_min
                                                                     : options.fill_window,
                          .fill_ahead_windows = options.fill_ahead_windows,
                          .prefetch = options.prefetch,
                          .restore_spacing = options.restore_spacing,
                          .request_deadline = options.request_deadline,
                          .max_open_objects = options.max_open_objects,
                          .budget_counters = &budget},
        counters, metrics);
    frontend->on_request_done([this] { ++done_callbacks; });
  }
  ~Harness() {
    for (auto& g : gates) g->open();
    core->join();  // pool jobs call back into the front end
    frontend.reset();
    core.reset();
  }

  static Options fast_options() {
    Options o;
    o.max_inflight = 8;
    o.io_threads = 2;
    o.fill_window = 8192;
    o.restore_spacing = 50ms;
    return o;
  }

  void open(std::uint32_t msg_id, std::uint32_t object_id, UniqueFd fd, std::string_view blob_id) {
    const int raw = fd.get();
    frontend->handle(open_req(msg_id, object_id, raw, blob_id), std::move(fd));
  }
  void read(std::uint32_t msg_id, std::uint32_t object_id, std::uint64_t off, std::uint64_t len) {
    frontend->handle(proto::ReadRequest{msg_id, object_id, off, len}, UniqueFd{});
  }
  void close(std::uint32_t msg_id, std::uint32_t object_id) {
    frontend->handle(proto::CloseRequest{msg_id, object_id}, UniqueFd{});
  }

  // Runs the loop until `pred` holds (bounded).
  bool run_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
      if (std::chrono::steady_clock::now() >= deadline) return pred();
      loop.run_for(2ms);
    }
    return true;
  }
  // Runs the loop for a while, to give a wrong extra reply time to show up.
  void settle(std::chrono::milliseconds d = 30ms) { loop.run_for(d); }

  // No request in flight and no fill-ahead running behind them.
  bool idle() { return frontend->inflight() == 0 && core->fills_running() == 0; }
};

std::string pread_all(int fd, std::uint64_t off, std::size_t len) {
  std::string out(len, '\0');
  const auto n = ::pread(fd, out.data(), len, static_cast<off_t>(off));
  REQUIRE(n >= 0);
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::uint64_t file_size(int fd) {
  struct stat st{};
  REQUIRE(::fstat(fd, &st) == 0);
  return static_cast<std::uint64_t>(st.st_size);
}

// A memfd handed to the engine as an anonymous fd, plus our own dup of it to
// read back what the engine wrote.
struct AnonMemfd {
  UniqueFd engine_end;
  UniqueFd ours;
  int number;
  std::string target;  // /proc/self/fd/<number> while it is open
  explicit AnonMemfd(const char* name) : engine_end(test::make_memfd(name)) {
    ours.reset(::dup(engine_end.get()));
    number = engine_end.get();
    target = test::fd_target(number);
  }
  bool engine_end_open() const { return test::fd_target(number) == target; }
};

}  // namespace

// ---------------------------------------------------------------- OPEN

TEST_CASE("Cachefiles: OPEN of an existing blob gets exactly one copen with its size", "[worker][cachefiles]") {
  test::TempDir dir;
  dir.write("blob1", test::pattern_bytes(12345));
  LocalBackend backend(dir.path());
  Harness h(backend);
  auto fd = test::make_memfd("open");
  h.open(1, 10, std::move(fd), "blob1");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  h.settle();
  REQUIRE(h.replies.copens().size() == 1);
  CHECK(h.replies.copens()[0] == std::pair<std::uint32_t, std::int64_t>{1, 12345});
  CHECK(h.frontend->objects() == 1);
  CHECK(h.replies.completes().empty());
  CHECK(h.replies.restores() == 0);
  CHECK(h.counters.opens.load() == 1);
  CHECK(h.counters.open_refused.load() == 0);
  CHECK(h.idle());
  CHECK(h.done_callbacks == 1);
  CHECK(h.replies.off_loop_calls() == 0);
}

TEST_CASE("Cachefiles: OPEN of a missing blob gets exactly one copen -ENOENT and its fd is closed",
          "[worker][cachefiles]") {
  test::TempDir dir;
  LocalBackend backend(dir.path());
  Harness h(backend);
  auto pipe = test::make_pipe();
  h.open(2, 11, std::move(pipe.write), "absent");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  h.settle();
  REQUIRE(h.replies.copens().size() == 1);
  CHECK(h.replies.copens()[0] == std::pair<std::uint32_t, std::int64_t>{2, -ENOENT});
  CHECK(test::pipe_writer_closed(pipe.read.get(), 1000));
  CHECK(h.frontend->objects() == 0);
  CHECK(h.counters.open_refused.load() == 1);
  CHECK(h.idle());
}

TEST_CASE("Cachefiles: OPEN with a hostile blob id gets copen -EINVAL, never reaches the backend, and closes its fd",
          "[worker][cachefiles]") {
  FakeBackend backend;
  backend.blobs["x"] = std::make_shared<FakeBlob>("secret");
  Harness h(backend);
  const std::string hostile[] = {"../etc/passwd", "/etc/passwd", "..", ".", "", "a/b",
                                 std::string("x\0", 2), std::string(256, 'a'), "x y"};
  std::uint32_t msg = 100;
  for (const auto& id : hostile) {
    INFO("id: " << escape_id(id));
    auto pipe = test::make_pipe();
    const auto before = h.replies.copens().size();
    h.open(msg, msg, std::move(pipe.write), id);
    // Refused synchronously: no pool round trip needed.
    CHECK(test::pipe_writer_closed(pipe.read.get(), 1000));
    h.settle(5ms);
    REQUIRE(h.replies.copens().size() == before + 1);
    CHECK(h.replies.copens().back() == std::pair<std::uint32_t, std::int64_t>{msg, -EINVAL});
    ++msg;
  }
  CHECK(backend.opens() == 0);
  CHECK(h.frontend->objects() == 0);
  CHECK(h.counters.open_refused.load() == std::size(hostile));
  CHECK(h.idle());
}

TEST_CASE("Cachefiles: when copen itself fails the object is dropped and its fd closed", "[worker][cachefiles]") {
  FakeBackend backend;
  backend.blobs["b"] = std::make_shared<FakeBlob>("data");
  Harness h(backend);
  h.replies.fail_copen_with(ENOENT);  // e.g. the kernel already dropped the request
  auto pipe = test::make_pipe();
  h.open(3, 12, std::move(pipe.write), "b");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  CHECK(h.frontend->objects() == 0);
  CHECK(test::pipe_writer_closed(pipe.read.get(), 1000));
  CHECK(h.idle());
}

TEST_CASE("Cachefiles: a second OPEN for a live object id replaces it and closes the old fd", "[worker][cachefiles]") {
  FakeBackend backend;
  backend.blobs["b"] = std::make_shared<FakeBlob>("data");
  Harness h(backend);
  auto pipe = test::make_pipe();
  h.open(1, 7, std::move(pipe.write), "b");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  CHECK_FALSE(test::pipe_writer_closed(pipe.read.get()));
  h.open(2, 7, test::make_memfd("second"), "b");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 2; }));
  CHECK(h.frontend->objects() == 1);
  CHECK(test::pipe_writer_closed(pipe.read.get(), 1000));
}

// ---------------------------------------------------------------- READ

TEST_CASE("Cachefiles: READ writes the fill window at the right offsets and completes once",
          "[worker][cachefiles]") {
  test::TempDir dir;
  const auto content = test::pattern_bytes(3 * 4096 + 100);  // 12388 bytes
  dir.write("blob", content);
  LocalBackend backend(dir.path());
  Harness h(backend);  // fill_window 8192
  AnonMemfd anon("read-offsets");
  h.open(1, 20, std::move(anon.engine_end), "blob");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  REQUIRE(h.replies.copens()[0].second == 12388);

  h.read(2, 20, 4096, 100);  // window [0, 8192)
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1 && h.idle(); }));
  CHECK(h.replies.completes()[0] == std::pair<int, std::uint32_t>{anon.number, 2});
  CHECK(file_size(anon.ours.get()) == 8192);  // nothing beyond the window
  CHECK(pread_all(anon.ours.get(), 0, 8192) == content.substr(0, 8192));

  h.read(3, 20, 12300, 88);  // tail window [8192, 16384), clipped to the page after EOF
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 2 && h.idle(); }));
  h.settle();
  REQUIRE(h.replies.completes().size() == 2);
  CHECK(h.replies.completes()[1] == std::pair<int, std::uint32_t>{anon.number, 3});
  CHECK(file_size(anon.ours.get()) == 16384);
  CHECK(pread_all(anon.ours.get(), 8192, 12388 - 8192) == content.substr(8192));
  CHECK(pread_all(anon.ours.get(), 12388, 16384 - 12388) == std::string(16384 - 12388, '\0'));

  CHECK(h.counters.reads.load() == 2);
  CHECK(h.counters.read_failed.load() == 0);
  CHECK(h.counters.bytes_written.load() == 16384);
  CHECK(h.replies.copens().size() == 1);
  CHECK(h.replies.restores() == 0);
}

TEST_CASE("Cachefiles: with adaptive read-ahead a random READ fills its pages and a sequential run grows",
          "[worker][cachefiles][readahead]") {
  test::TempDir dir;
  const auto content = test::pattern_bytes(4 << 20);
  dir.write("blob", content);
  LocalBackend backend(dir.path());
  auto options = Harness::fast_options();
  options.fill_window = 1 << 20;
  options.fill_window_min = 4096;
  Harness h(backend, options);
  AnonMemfd anon("readahead");
  h.open(1, 20, std::move(anon.engine_end), "blob");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  // A READ in the middle: just its page, not a 1 MiB window.
  h.read(2, 20, 2 * 1048576 + 100, 200);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1 && h.idle(); }));
  CHECK(h.counters.bytes_written.load() == 4096);
  CHECK(pread_all(anon.ours.get(), 2 * 1048576, 4096) == content.substr(2 * 1048576, 4096));
  // Going on from there: 8 KiB, then 16 KiB.
  h.read(3, 20, 2 * 1048576 + 4096, 4096);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 2 && h.idle(); }));
  CHECK(h.counters.bytes_written.load() == 4096 + 8192);
  h.read(4, 20, 2 * 1048576 + 12288, 4096);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 3 && h.idle(); }));
  CHECK(h.counters.bytes_written.load() == 4096 + 8192 + 16384);
  CHECK(pread_all(anon.ours.get(), 2 * 1048576, 28672) == content.substr(2 * 1048576, 28672));
  CHECK(h.counters.read_failed.load() == 0);
}

TEST_CASE("Cachefiles: a fill larger than one chunk lands intact", "[worker][cachefiles]") {
  test::TempDir dir;
  const auto content = test::pattern_bytes(2 * MiB + MiB / 2 + 7, 3);
  dir.write("big", content);
  LocalBackend backend(dir.path());
  auto options = Harness::fast_options();
  options.fill_window = 4 * MiB;
  Harness h(backend, options);
  AnonMemfd anon("big");
  h.open(1, 21, std::move(anon.engine_end), "big");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  h.read(2, 21, 2 * MiB, 4096);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1 && h.idle(); }));
  const std::uint64_t rounded = (content.size() + 4095) / 4096 * 4096;
  CHECK(file_size(anon.ours.get()) == rounded);
  CHECK(pread_all(anon.ours.get(), 0, content.size()) == content);
  CHECK(h.counters.bytes_written.load() == rounded);
}

TEST_CASE("Cachefiles: READ past the end of the blob completes once without writing", "[worker][cachefiles]") {
  FakeBackend backend;
  backend.blobs["b"] = std::make_shared<FakeBlob>(test::pattern_bytes(5000));
  Harness h(backend);
  AnonMemfd anon("past-eof");
  h.open(1, 22, std::move(anon.engine_end), "b");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  h.read(2, 22, 1 << 30, 4096);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1 && h.idle(); }));
  h.settle();
  CHECK(h.replies.completes().size() == 1);
  CHECK(file_size(anon.ours.get()) == 0);
  CHECK(h.counters.read_failed.load() == 0);
}

TEST_CASE("Cachefiles: READ whose backend read fails still completes exactly once and counts read_failed",
          "[worker][cachefiles]") {
  FakeBackend backend;
  auto blob = std::make_shared<FakeBlob>(test::pattern_bytes(20000));
  blob->err = EIO;
  backend.blobs["b"] = blob;
  Harness h(backend);
  AnonMemfd anon("eio");
  h.open(1, 23, std::move(anon.engine_end), "b");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  h.read(2, 23, 0, 4096);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1 && h.idle(); }));
  h.settle();
  REQUIRE(h.replies.completes().size() == 1);
  CHECK(h.replies.completes()[0] == std::pair<int, std::uint32_t>{anon.number, 2});
  CHECK(h.counters.read_failed.load() == 1);
  CHECK(h.counters.bytes_written.load() == 0);
  CHECK(h.done_callbacks == 2);
}

TEST_CASE("Cachefiles: a backend failure beyond the requested bytes does not fail the READ",
          "[worker][cachefiles]") {
  FakeBackend backend;
  const auto content = test::pattern_bytes(3 * MiB, 5);
  auto blob = std::make_shared<FakeBlob>(content);
  blob->err = EIO;
  blob->fail_from = MiB;  // the first 1 MiB chunk reads, the next ones fail
  backend.blobs["b"] = blob;
  auto options = Harness::fast_options();
  options.fill_window = 4 * MiB;
  Harness h(backend, options);
  AnonMemfd anon("partial");
  h.open(1, 24, std::move(anon.engine_end), "b");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));

  h.read(2, 24, 4096, 4096);  // inside the chunk that was written
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1 && h.idle(); }));
  CHECK(h.counters.read_failed.load() == 0);
  CHECK(pread_all(anon.ours.get(), 4096, 4096) == content.substr(4096, 4096));

  h.read(3, 24, 2 * MiB, 4096);  // inside a chunk that failed
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 2 && h.idle(); }));
  CHECK(h.counters.read_failed.load() == 1);
  CHECK(h.replies.completes()[1].second == 3);
}

TEST_CASE("Cachefiles: READ whose pwrite fails still completes exactly once and counts read_failed",
          "[worker][cachefiles]") {
  FakeBackend backend;
  backend.blobs["b"] = std::make_shared<FakeBlob>(test::pattern_bytes(9000));
  Harness h(backend);
  auto pipe = test::make_pipe();  // pwrite on a pipe fails with ESPIPE
  const int number = pipe.write.get();
  h.open(1, 25, std::move(pipe.write), "b");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  h.read(2, 25, 0, 100);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1 && h.idle(); }));
  h.settle();
  CHECK(h.replies.completes().size() == 1);
  CHECK(h.replies.completes()[0] == std::pair<int, std::uint32_t>{number, 2});
  CHECK(h.counters.read_failed.load() == 1);
}

TEST_CASE("Cachefiles: READ fills from page-aligned buffers, as the anonymous fd's direct write requires",
          "[worker][cachefiles]") {
  FakeBackend backend;
  auto blob = std::make_shared<FakeBlob>(test::pattern_bytes(3 * MiB, 13));
  backend.blobs["b"] = blob;
  auto options = Harness::fast_options();
  options.fill_window = 4 * MiB;
  options.io_threads = 3;
  Harness h(backend, options);
  AnonMemfd anon("aligned");
  h.open(1, 26, std::move(anon.engine_end), "b");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  for (std::uint32_t i = 0; i < 6; ++i) h.read(10 + i, 26, i * 4096, 4096);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 6 && h.idle(); }));
  CHECK(blob->reads.load() >= 3);  // 3 MiB, in 1 MiB chunks at most
  CHECK(blob->misaligned.load() == 0);
}

std::uint64_t backend_errors_read(const proto::WorkerMetrics& m) {
  return m.backend_errors[static_cast<std::size_t>(proto::BackendErrorKind::READ)].load();
}

// An EROFS superblock at 1024 with the given feature_incompat bits.
std::string erofs_image(std::size_t size, std::uint32_t feature_incompat, unsigned seed) {
  auto bytes = test::pattern_bytes(size, seed);
  auto put_le32 = [&](std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) bytes[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
  };
  put_le32(1024, 0xE0F5E1E2);      // EROFS_SUPER_MAGIC_V1
  put_le32(1024 + 80, feature_incompat);
  return bytes;
}

TEST_CASE("Cachefiles: a compressed EROFS image is filled whole at its first READ, other blobs by window",
          "[worker][cachefiles]") {
  const std::size_t size = 5 * 8192 + 100;
  const std::uint64_t rounded = (size + 4095) / 4096 * 4096;
  struct Case {
    const char* what;
    std::string content;
    std::uint64_t expect_filled;
  };
  const Case cases[] = {
      {"lz4 (ZERO_PADDING)", erofs_image(size, 0x1, 21), rounded},
      {"COMPR_CFGS", erofs_image(size, 0x2, 22), rounded},
      {"uncompressed EROFS", erofs_image(size, 0x0, 23), 8192},
      {"other feature bits only", erofs_image(size, 0x4, 24), 8192},
      {"not EROFS", test::pattern_bytes(size, 25), 8192},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    FakeBackend backend;
    backend.blobs["img"] = std::make_shared<FakeBlob>(c.content);
    Harness h(backend);  // fill_window 8192
    AnonMemfd anon("whole");
    h.open(1, 27, std::move(anon.engine_end), "img");
    REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
    h.read(2, 27, 0, 4096);
    REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1 && h.idle(); }));
    CHECK(file_size(anon.ours.get()) == c.expect_filled);
    CHECK(pread_all(anon.ours.get(), 0, c.expect_filled) ==
          (c.content + std::string(rounded - size, '\0')).substr(0, c.expect_filled));
    CHECK(h.replies.completes().size() == 1);
  }
}

TEST_CASE("Cachefiles: a compressed image's whole-blob fill resumes from what the cache file already holds",
          "[worker][cachefiles][resume]") {
  // A predecessor killed mid-fill left the first 3 windows in the cache file;
  // the next OPEN's anonymous fd writes into the same cache file (here: the
  // same memfd). Only the rest is fetched, and the blob ends up whole.
  const std::size_t size = 5 * 8192 + 100;
  const std::uint64_t rounded = (size + 4095) / 4096 * 4096;
  const auto content = erofs_image(size, 0x1, 31);
  FakeBackend backend;
  auto blob = std::make_shared<FakeBlob>(content);
  backend.blobs["img"] = blob;
  Harness h(backend);  // fill_window 8192
  AnonMemfd anon("resume");
  REQUIRE(::pwrite(anon.ours.get(), content.data(), 3 * 8192, 0) == 3 * 8192);
  h.open(1, 28, std::move(anon.engine_end), "img");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  h.read(2, 28, 0, 4096);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1 && h.idle(); }));
  CHECK(blob->fill_offsets() == std::vector<std::uint64_t>{3 * 8192});
  CHECK(file_size(anon.ours.get()) == rounded);
  CHECK(pread_all(anon.ours.get(), 0, size) == content);
  CHECK(h.counters.bytes_written.load() == rounded - 3 * 8192);
  CHECK(h.metrics.reads_ok.load() == 1);
}

TEST_CASE("Cachefiles: a READ whose backend passes the request deadline fails alone, with one completion",
          "[worker][cachefiles][deadline]") {
  FakeBackend backend;
  auto blob = std::make_shared<FakeBlob>(test::pattern_bytes(4 * MiB, 41));
  blob->delay = 80ms;  // per 1 MiB chunk
  backend.blobs["slow"] = blob;
  backend.blobs["fast"] = std::make_shared<FakeBlob>(test::pattern_bytes(8192, 42));
  auto options = Harness::fast_options();
  options.fill_window = 4 * MiB;
  options.request_deadline = 200ms;
  Harness h(backend, options);
  AnonMemfd slow("slow");
  AnonMemfd fast("fast");
  h.open(1, 60, std::move(slow.engine_end), "slow");
  h.open(2, 61, std::move(fast.engine_end), "fast");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 2 && h.idle(); }));
  const auto started = std::chrono::steady_clock::now();
  h.read(3, 60, 0, 4 * MiB);  // needs all 4 chunks: the 4th is past the deadline
  h.read(4, 61, 0, 4096);        // another object is not held up
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 2 && h.idle(); }));
  CHECK(std::chrono::steady_clock::now() - started < 1s);
  h.settle();
  const auto completes = h.replies.completes();
  REQUIRE(completes.size() == 2);
  CHECK(std::count(completes.begin(), completes.end(), std::pair<int, std::uint32_t>{slow.number, 3}) == 1);
  CHECK(h.counters.read_failed.load() == 1);
  CHECK(h.metrics.reads_ok.load() == 1);
  CHECK(backend_errors_read(h.metrics) == 1);
  CHECK(file_size(slow.ours.get()) < 4 * MiB);
}

TEST_CASE("Cachefiles: CLOSE drops its object from the prefetch queue at once, fds included",
          "[worker][cachefiles][prefetch]") {
  FakeBackend backend;
  auto busy = std::make_shared<FakeBlob>(test::pattern_bytes(64 * 8192));
  busy->gate = std::make_shared<Gate>();  // the queue's front stays busy
  backend.blobs["busy"] = busy;
  backend.blobs["queued"] = std::make_shared<FakeBlob>(test::pattern_bytes(64 * 8192));
  auto options = Harness::fast_options();
  options.prefetch = true;
  Harness h(backend, options);
  h.gates.push_back(busy->gate);
  h.open(1, 70, test::make_memfd("busy"), "busy");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1 && busy->gate->waiting() == 1; }));
  std::vector<test::Pipe> pipes;
  for (std::uint32_t i = 0; i < 20; ++i) {
    auto pipe = test::make_pipe();
    h.open(10 + i, 100 + i, std::move(pipe.write), "queued");
    pipes.push_back(std::move(pipe));
  }
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 21 && h.idle(); }));
  for (std::uint32_t i = 0; i < 20; ++i) h.close(40 + i, 100 + i);
  // At once: the busy front of the queue has not moved.
  for (auto& pipe : pipes) CHECK(test::pipe_writer_closed(pipe.read.get()));
  CHECK(busy->gate->waiting() == 1);
  CHECK(h.frontend->objects() == 1);
}

// ---------------------------------------------------------------- upgrade handover

TEST_CASE("Cachefiles: export_objects hands over every object with its fd and empties the table",
          "[worker][cachefiles]") {
  FakeBackend backend;
  backend.blobs["a"] = std::make_shared<FakeBlob>("aaaa");
  backend.blobs["b"] = std::make_shared<FakeBlob>("bbbb");
  Harness h(backend);
  auto pipe = test::make_pipe();
  const int pipe_number = pipe.write.get();
  h.open(1, 31, std::move(pipe.write), "a");
  h.open(2, 32, test::make_memfd("export"), "b");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 2 && h.idle(); }));
  auto exported = h.frontend->export_objects();
  CHECK(h.frontend->objects() == 0);
  REQUIRE(exported.size() == 2);
  std::map<std::uint32_t, std::shared_ptr<Object>> by_id;
  for (auto& o : exported) by_id[o->object_id] = o;
  REQUIRE(by_id.count(31) == 1);
  REQUIRE(by_id.count(32) == 1);
  CHECK(by_id[31]->ref.blob_id == "a");
  CHECK(by_id[31]->ref.domain == "test");  // from the volume key "erofs,test"
  CHECK(by_id[31]->fd.get() == pipe_number);
  CHECK(by_id[32]->ref.blob_id == "b");
  CHECK_FALSE(test::pipe_writer_closed(pipe.read.get()));  // handed over, not closed
  by_id.clear();
  exported.clear();
  CHECK(test::pipe_writer_closed(pipe.read.get()));
  // A READ for an exported object is now unknown here.
  h.read(3, 31, 0, 4096);
  CHECK(h.counters.unknown_object.load() == 1);
}

TEST_CASE("Cachefiles: import_object serves an object received in a handover", "[worker][cachefiles]") {
  test::TempDir dir;
  const auto content = test::pattern_bytes(8192, 31);
  dir.write("blob", content);
  LocalBackend backend(dir.path());
  Harness h(backend);
  AnonMemfd anon("imported");
  REQUIRE(h.frontend->import_object(41, proto::BlobRef{"", "blob"}, std::move(anon.engine_end)));
  CHECK(h.frontend->objects() == 1);
  h.read(1, 41, 0, 4096);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1 && h.idle(); }));
  CHECK(h.replies.completes()[0] == std::pair<int, std::uint32_t>{anon.number, 1});
  CHECK(pread_all(anon.ours.get(), 0, 8192) == content);
  CHECK(h.replies.copens().empty());  // nothing is reopened
  CHECK(h.replies.restores() == 0);
}

TEST_CASE("Cachefiles: import_object refuses a hostile or missing blob and closes the fd", "[worker][cachefiles]") {
  test::TempDir dir;
  LocalBackend backend(dir.path());
  Harness h(backend);
  for (std::string id : {std::string("../etc/passwd"), std::string("missing"), std::string()}) {
    INFO("id: " << escape_id(id));
    auto pipe = test::make_pipe();
    CHECK_FALSE(h.frontend->import_object(42, proto::BlobRef{"", id}, std::move(pipe.write)));
    CHECK(test::pipe_writer_closed(pipe.read.get()));
    CHECK(h.frontend->objects() == 0);
  }
}

// ---------------------------------------------------------------- unknown objects and restore

TEST_CASE("Cachefiles: READ for an unknown object gets no completion and exactly one restore",
          "[worker][cachefiles]") {
  FakeBackend backend;
  Harness h(backend);
  h.read(5, 999, 0, 4096);
  REQUIRE(h.run_until([&] { return h.replies.restores() == 1; }));
  h.settle(150ms);  // longer than restore_spacing: no second restore may follow
  CHECK(h.replies.restores() == 1);
  CHECK(h.replies.completes().empty());
  CHECK(h.replies.copens().empty());
  CHECK(h.counters.unknown_object.load() == 1);
  CHECK(h.counters.restores_repair.load() == 1);
  CHECK(h.counters.restores.load() == 0);  // start-time restores are the worker's, not ours
  CHECK(h.idle());
  CHECK(h.replies.off_loop_calls() == 0);
}

TEST_CASE("Cachefiles: restores asked for in a burst are spaced by restore_spacing and coalesced",
          "[worker][cachefiles]") {
  FakeBackend backend;
  Harness h(backend);  // restore_spacing 50ms
  const auto start = std::chrono::steady_clock::now();
  h.read(1, 900, 0, 4096);
  CHECK(h.replies.restores() == 1);  // the first one is immediate
  h.read(2, 901, 0, 4096);
  h.read(3, 902, 0, 4096);
  h.read(4, 903, 0, 4096);
  CHECK(h.replies.restores() == 1);
  REQUIRE(h.run_until([&] { return h.replies.restores() == 2; }));
  CHECK(std::chrono::steady_clock::now() - start >= 45ms);
  h.settle(150ms);
  CHECK(h.replies.restores() == 2);  // one restore re-queues all of them
  CHECK(h.counters.unknown_object.load() == 4);
}

TEST_CASE("Cachefiles: once a restore is written, later OPENs and timers write no more of them",
          "[worker][cachefiles]") {
  FakeBackend backend;
  backend.blobs["b"] = std::make_shared<FakeBlob>("data");
  Harness h(backend);
  h.read(1, 500, 0, 4096);
  REQUIRE(h.replies.restores() == 1);
  // An OPEN finishing inside and then after restore_spacing re-checks for a
  // wanted restore: none is wanted any more.
  h.open(2, 501, test::make_memfd("after-restore-1"), "b");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  h.settle(100ms);
  h.open(3, 502, test::make_memfd("after-restore-2"), "b");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 2; }));
  h.settle(100ms);
  CHECK(h.replies.restores() == 1);
  CHECK(h.counters.restores_repair.load() == 1);
}

TEST_CASE("Cachefiles: no restore while an OPEN is between read() and copen; it follows the copen",
          "[worker][cachefiles]") {
  FakeBackend backend;
  backend.blobs["b"] = std::make_shared<FakeBlob>("data");
  backend.open_gate = std::make_shared<Gate>();
  Harness h(backend);
  h.gates.push_back(backend.open_gate);

  h.open(1, 30, test::make_memfd("pending"), "b");
  REQUIRE(test::eventually([&] { return backend.open_gate->waiting() == 1; }));
  h.read(2, 31, 0, 4096);  // unknown object while the OPEN is pending
  h.settle(150ms);         // well past restore_spacing
  CHECK(h.replies.restores() == 0);
  CHECK(h.replies.copens().empty());
  CHECK(h.counters.unknown_object.load() == 1);

  backend.open_gate->open();
  REQUIRE(h.run_until([&] { return h.replies.restores() == 1; }));
  h.settle(150ms);
  CHECK(h.replies.restores() == 1);
  const auto events = h.replies.events();
  REQUIRE(events.size() == 2);
  CHECK(events[0] == "copen 1");
  CHECK(events[1] == "restore");
}

TEST_CASE("Cachefiles: a refused OPEN also releases a restore held back for it", "[worker][cachefiles]") {
  FakeBackend backend;  // no blobs: every OPEN is ENOENT
  backend.open_gate = std::make_shared<Gate>();
  Harness h(backend);
  h.gates.push_back(backend.open_gate);
  h.open(1, 40, test::make_memfd("refused"), "missing");
  REQUIRE(test::eventually([&] { return backend.open_gate->waiting() == 1; }));
  h.read(2, 41, 0, 4096);
  h.settle(100ms);
  CHECK(h.replies.restores() == 0);
  backend.open_gate->open();
  REQUIRE(h.run_until([&] { return h.replies.restores() == 1; }));
  const auto events = h.replies.events();
  REQUIRE(events.size() == 2);
  CHECK(events[0] == "copen 1");
  CHECK(events[1] == "restore");
  CHECK(h.replies.copens()[0].second == -ENOENT);
}

// ---------------------------------------------------------------- answer first

namespace {

// Every offset the front end asked the blob for, asked once: no byte copied
// twice.
bool each_offset_once(const FakeBlob& blob) {
  auto offs = blob.fill_offsets();
  std::sort(offs.begin(), offs.end());
  return std::adjacent_find(offs.begin(), offs.end()) == offs.end();
}

// A 4 MiB blob behind a 4 MiB fill window whose reads from `gate_from` on
// wait for the test, opened as object 40.
struct EarlyFixture {
  FakeBackend backend;
  std::string content;
  std::shared_ptr<FakeBlob> blob;
  std::unique_ptr<Harness> h;
  AnonMemfd anon{"early"};

  explicit EarlyFixture(std::uint64_t gate_from, std::string bytes = test::pattern_bytes(4 * MiB, 51))
      : content(std::move(bytes)) {
    blob = std::make_shared<FakeBlob>(content);
    blob->gate = std::make_shared<Gate>();
    blob->gate_from = gate_from;
    backend.blobs["b"] = blob;
    auto options = Harness::fast_options();
    options.fill_window = 4 * MiB;
    h = std::make_unique<Harness>(backend, options);
    h->gates.push_back(blob->gate);
    h->open(1, 40, std::move(anon.engine_end), "b");
    REQUIRE(h->run_until([&] { return h->replies.copens().size() == 1; }));
  }
  std::size_t completes_of(std::uint32_t msg_id) const {
    const auto all = h->replies.completes();
    return static_cast<std::size_t>(std::count(all.begin(), all.end(), std::pair<int, std::uint32_t>{anon.number, msg_id}));
  }
  bool offsets_unique() const { return each_offset_once(*blob); }
};

}  // namespace

// Issue 12: the reader waits for the pages it asked for, not for the 4 MiB
// window around them.
TEST_CASE("Cachefiles: a READ is answered once its pages are in the cache file, before the rest of its window",
          "[worker][cachefiles][early]") {
  EarlyFixture f(4096);  // everything after the first page waits
  auto& h = *f.h;
  h.read(2, 40, 100, 3000);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1; }));
  CHECK(f.completes_of(2) == 1);
  CHECK(f.blob->gate->waiting() == 1);  // the window's rest is held
  CHECK(file_size(f.anon.ours.get()) == 4096);
  CHECK(pread_all(f.anon.ours.get(), 0, 4096) == f.content.substr(0, 4096));
  // Nothing left to drain, once the loop has seen the answer.
  CHECK(h.run_until([&] { return h.frontend->inflight() == 0; }));
  CHECK(f.blob->gate->waiting() == 1);
  CHECK(h.metrics.reads_ok.load() == 1);
  f.blob->gate->open();
  REQUIRE(h.run_until([&] { return h.idle(); }));
  h.settle();
  CHECK(pread_all(f.anon.ours.get(), 0, f.content.size()) == f.content);
  CHECK(h.replies.completes().size() == 1);
  CHECK(h.counters.bytes_written.load() == 4 * MiB);
}

TEST_CASE("Cachefiles: a READ inside a window being filled waits for that fill: answered once, copied once",
          "[worker][cachefiles][early]") {
  EarlyFixture f(MiB);
  auto& h = *f.h;
  h.read(2, 40, 0, 4096);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1; }));
  h.read(3, 40, 3 * MiB + 100, 4096);  // the same window, not written yet
  h.settle(50ms);
  CHECK(h.replies.completes().size() == 1);
  CHECK(h.frontend->inflight() == 1);
  CHECK(h.core->fills_running() == 1);  // no second fill
  f.blob->gate->open();
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 2 && h.idle(); }));
  h.settle();
  CHECK(f.completes_of(2) == 1);
  CHECK(f.completes_of(3) == 1);
  CHECK(f.offsets_unique());
  CHECK(h.counters.bytes_written.load() == 4 * MiB);
  CHECK(pread_all(f.anon.ours.get(), 0, f.content.size()) == f.content);
  CHECK(h.metrics.reads_ok.load() == 2);
  CHECK(h.counters.read_failed.load() == 0);
}

TEST_CASE("Cachefiles: CLOSE during fill-ahead stops it at its next chunk and closes the fd, with no further reply",
          "[worker][cachefiles][early]") {
  EarlyFixture f(MiB);
  auto& h = *f.h;
  h.read(2, 40, 0, 4096);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1 && f.blob->gate->waiting() == 1; }));
  h.close(3, 40);
  h.settle(20ms);
  CHECK(f.anon.engine_end_open());  // held by the fill, blocked in the backend
  f.blob->gate->open();
  REQUIRE(h.run_until([&] { return h.idle() && !f.anon.engine_end_open(); }));
  h.settle();
  CHECK(h.replies.completes().size() == 1);
  // The chunk it was in landed; nothing after it was fetched.
  const auto offs = f.blob->fill_offsets();
  CHECK(*std::max_element(offs.begin(), offs.end()) < 2 * MiB);
  CHECK(file_size(f.anon.ours.get()) < 4 * MiB);
}

TEST_CASE("Cachefiles: a backend failing mid-window after the early answer makes no second reply",
          "[worker][cachefiles][early]") {
  EarlyFixture f(MiB);
  auto& h = *f.h;
  f.blob->err = EIO;
  f.blob->fail_from = 2 * MiB;
  h.read(2, 40, 0, 4096);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1; }));
  h.read(3, 40, 3 * MiB, 4096);  // waits on the fill, which will fail first
  h.settle(20ms);
  f.blob->gate->open();
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 2 && h.idle(); }));
  h.settle(50ms);
  CHECK(f.completes_of(2) == 1);
  CHECK(f.completes_of(3) == 1);
  CHECK(h.metrics.reads_ok.load() == 1);
  CHECK(h.counters.read_failed.load() == 1);
  CHECK(backend_errors_read(h.metrics) == 1);
}

// A compressed image keeps its rule (fill_whole_blob): no READ of it is
// answered before the whole blob is in the cache file, the first one
// included, and a READ arriving meanwhile waits for the same whole fill.
TEST_CASE("Cachefiles: READs of a compressed image are answered only once the whole blob is in, never early",
          "[worker][cachefiles][early]") {
  EarlyFixture f(2 * MiB, erofs_image(4 * MiB, 0x1, 52));
  auto& h = *f.h;
  h.read(2, 40, 0, 4096);
  REQUIRE(test::eventually([&] { return f.blob->gate->waiting() == 1; }));
  CHECK(pread_all(f.anon.ours.get(), 0, 4096) == f.content.substr(0, 4096));  // its pages are there
  h.read(3, 40, MiB, 4096);  // written already, but the blob is not whole
  h.settle(50ms);
  CHECK(h.replies.completes().empty());
  CHECK(h.core->fills_running() == 1);
  f.blob->gate->open();
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 2 && h.idle(); }));
  CHECK(f.completes_of(2) == 1);
  CHECK(f.completes_of(3) == 1);
  CHECK(f.offsets_unique());
  CHECK(pread_all(f.anon.ours.get(), 0, f.content.size()) == f.content);
}

// The outgoing side of a handover: stop_reading() abandons the fill-ahead,
// so the drain has nothing to wait for and the fill stops at its next chunk.
TEST_CASE("Cachefiles: stop_reading abandons fill-ahead: nothing to drain, and the fill stops",
          "[worker][cachefiles][early]") {
  EarlyFixture f(MiB);
  auto& h = *f.h;
  h.read(2, 40, 0, 4096);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1 && f.blob->gate->waiting() == 1; }));
  h.frontend->stop_reading();
  REQUIRE(h.run_until([&] { return h.frontend->inflight() == 0; }));
  f.blob->gate->open();
  REQUIRE(h.run_until([&] { return h.core->fills_running() == 0; }));
  const auto offs = f.blob->fill_offsets();
  CHECK(*std::max_element(offs.begin(), offs.end()) < 2 * MiB);
  CHECK(h.replies.completes().size() == 1);
  // The object, fd included, goes to the successor as it is.
  auto exported = h.frontend->export_objects();
  REQUIRE(exported.size() == 1);
  CHECK(f.anon.engine_end_open());
  exported.clear();
  CHECK(h.run_until([&] { return !f.anon.engine_end_open(); }));
}

// ---------------------------------------------------------------- fill-ahead

namespace {

// A 32 MiB blob behind 4 MiB windows, filling one window ahead of a
// sequential reader; reads from `gate_from` on wait for the test. Object 60.
struct AheadFixture {
  static constexpr std::uint64_t W = 4 * MiB;
  FakeBackend backend;
  std::string content = test::pattern_bytes(32 * MiB, 61);
  std::shared_ptr<FakeBlob> blob = std::make_shared<FakeBlob>(content);
  std::unique_ptr<Harness> h;
  AnonMemfd anon{"ahead"};

  explicit AheadFixture(std::uint64_t gate_from = UINT64_MAX, std::uint32_t windows = 1) {
    blob->gate = std::make_shared<Gate>();
    blob->gate_from = gate_from;
    backend.blobs["b"] = blob;
    auto options = Harness::fast_options();
    options.io_threads = 4;
    options.fill_window = W;
    options.fill_ahead_windows = windows;
    h = std::make_unique<Harness>(backend, options);
    h->gates.push_back(blob->gate);
    h->open(1, 60, std::move(anon.engine_end), "b");
    REQUIRE(h->run_until([&] { return h->replies.copens().size() == 1; }));
  }
  // READ msg_id of [off, off+4096), waited for until answered and, with
  // `idle`, until nothing runs.
  void read(std::uint32_t msg_id, std::uint64_t off, bool idle = true) {
    const auto before = h->replies.completes().size();
    h->read(msg_id, 60, off, 4096);
    REQUIRE(h->run_until([&] { return h->replies.completes().size() == before + 1 && (!idle || h->idle()); }));
  }
  bool fetched(std::uint64_t start, std::uint64_t end) const {
    const auto offs = blob->fill_offsets();
    return std::any_of(offs.begin(), offs.end(), [&](auto o) { return o >= start && o < end; });
  }
  bool offsets_unique() const { return each_offset_once(*blob); }
};

}  // namespace

// Issue 12: a second fill runs beside the one a sequential reader waits on.
TEST_CASE("Cachefiles: a READ that goes on to the next window fills the window after it ahead, unasked",
          "[worker][cachefiles][fill_ahead]") {
  AheadFixture f;
  auto& h = *f.h;
  f.read(2, 0);      // a jump (the first READ): its window only
  CHECK_FALSE(f.fetched(f.W, 32 * MiB));
  f.read(3, f.W);    // goes on: window 2 too, with no READ for it
  CHECK(pread_all(f.anon.ours.get(), 2 * f.W, f.W) == f.content.substr(2 * f.W, f.W));
  CHECK_FALSE(f.fetched(3 * f.W, 32 * MiB));
  CHECK(file_size(f.anon.ours.get()) == 3 * f.W);
  CHECK(h.counters.bytes_written.load() == 3 * f.W);
  CHECK(h.replies.completes().size() == 2);
  CHECK(h.metrics.reads_ok.load() == 2);
}

TEST_CASE("Cachefiles: a READ that jumps fills nothing ahead; the stream it starts does once it goes on",
          "[worker][cachefiles][fill_ahead]") {
  AheadFixture f;
  auto& h = *f.h;
  f.read(2, 0);
  f.read(3, 5 * f.W + 8192);  // a jump
  f.read(4, f.W + 8192);      // the window after the first, but not where it ended: a jump too
  CHECK_FALSE(f.fetched(2 * f.W, 5 * f.W));
  CHECK_FALSE(f.fetched(6 * f.W, 32 * MiB));
  CHECK(h.counters.bytes_written.load() == 3 * f.W);
  f.read(5, 2 * f.W);  // where the last one's window ended: window 3 ahead
  CHECK(f.fetched(3 * f.W, 4 * f.W));
  CHECK_FALSE(f.fetched(4 * f.W, 5 * f.W));
  CHECK(h.counters.bytes_written.load() == 5 * f.W);
}

TEST_CASE("Cachefiles: a READ in a window being filled ahead waits for that fill: answered once, copied once",
          "[worker][cachefiles][fill_ahead]") {
  AheadFixture f(2 * AheadFixture::W + MiB);  // the fill-ahead of window 2 holds after its first MiB
  auto& h = *f.h;
  f.read(2, 0);
  f.read(3, f.W, /*idle=*/false);
  // READ 3's reply is written on the pool and its request ends on the loop
  // after it: wait for both. A fill-ahead counted as a request in flight
  // would keep inflight() at 1 and time this out.
  REQUIRE(h.run_until([&] {
    return f.blob->gate->waiting() == 1 && h.core->fills_running() == 1 && h.frontend->inflight() == 0;
  }));
  h.read(4, 60, 2 * f.W + 2 * MiB + 100, 4096);
  h.settle(50ms);
  CHECK(h.replies.completes().size() == 2);
  CHECK(h.frontend->inflight() == 1);
  // No second fill of window 2: the one in flight, and window 3's ahead
  // (the READ went on into window 2).
  CHECK(h.core->fills_running() == 2);
  f.blob->gate->open();
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 3 && h.idle(); }));
  h.settle();
  CHECK(f.offsets_unique());
  CHECK(h.counters.bytes_written.load() == 4 * f.W);
  CHECK(pread_all(f.anon.ours.get(), 0, 4 * f.W) == f.content.substr(0, 4 * f.W));
  CHECK(h.metrics.reads_ok.load() == 3);
  CHECK(h.counters.read_failed.load() == 0);
}

TEST_CASE("Cachefiles: CLOSE during a fill-ahead of the next window stops it and closes the fd",
          "[worker][cachefiles][fill_ahead]") {
  AheadFixture f(2 * AheadFixture::W + MiB);
  auto& h = *f.h;
  f.read(2, 0);
  f.read(3, f.W, /*idle=*/false);
  REQUIRE(h.run_until([&] { return f.blob->gate->waiting() == 1 && h.frontend->inflight() == 0; }));
  h.close(4, 60);
  h.settle(20ms);
  CHECK(f.anon.engine_end_open());  // held by the fill, blocked in the backend
  f.blob->gate->open();
  REQUIRE(h.run_until([&] { return h.idle() && !f.anon.engine_end_open(); }));
  h.settle();
  CHECK(h.replies.completes().size() == 2);
  CHECK_FALSE(f.fetched(2 * f.W + 2 * MiB, 32 * MiB));  // the held piece landed, nothing after it
}

TEST_CASE("Cachefiles: stop_reading abandons a fill-ahead of the next window", "[worker][cachefiles][fill_ahead]") {
  AheadFixture f(2 * AheadFixture::W + MiB);
  auto& h = *f.h;
  f.read(2, 0);
  f.read(3, f.W, /*idle=*/false);
  REQUIRE(h.run_until([&] { return f.blob->gate->waiting() == 1 && h.frontend->inflight() == 0; }));
  h.frontend->stop_reading();
  f.blob->gate->open();
  REQUIRE(h.run_until([&] { return h.core->fills_running() == 0; }));
  CHECK_FALSE(f.fetched(2 * f.W + 2 * MiB, 32 * MiB));
  CHECK(h.replies.completes().size() == 2);
}

// ---------------------------------------------------------------- CLOSE

// The kernel fails an object's pending READs itself when it sends CLOSE
// (cachefiles_ondemand_clean_object, after the daemon has read the CLOSE):
// a READ_COMPLETE after that would be refused, a reply to a dead object.
TEST_CASE("Cachefiles: CLOSE while a READ waits gets that READ no reply, and the fd closes once the fill stops",
          "[worker][cachefiles]") {
  FakeBackend backend;
  const auto content = test::pattern_bytes(8192, 9);
  auto blob = std::make_shared<FakeBlob>(content);
  blob->gate = std::make_shared<Gate>();
  backend.blobs["b"] = blob;
  Harness h(backend);
  h.gates.push_back(blob->gate);
  AnonMemfd anon("inflight-close");
  h.open(1, 50, std::move(anon.engine_end), "b");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));

  h.read(2, 50, 0, 4096);
  REQUIRE(test::eventually([&] { return blob->gate->waiting() == 1; }));
  h.close(3, 50);
  CHECK(h.frontend->objects() == 0);
  REQUIRE(h.run_until([&] { return h.frontend->inflight() == 0; }));  // settled, without a reply
  h.settle(50ms);
  CHECK(anon.engine_end_open());  // the fill held in the backend still has it
  CHECK(h.replies.completes().empty());

  const auto reads = blob->reads.load();
  blob->gate->open();
  REQUIRE(h.run_until([&] { return h.idle() && !anon.engine_end_open(); }));
  h.settle();
  CHECK(h.replies.completes().empty());
  CHECK(blob->reads.load() == reads);  // nothing fetched after the piece it was in
  CHECK(h.counters.read_failed.load() == 1);
}

TEST_CASE("Cachefiles: CLOSE closes the fd at once when nothing is in flight, and a duplicate CLOSE is harmless",
          "[worker][cachefiles]") {
  FakeBackend backend;
  backend.blobs["b"] = std::make_shared<FakeBlob>("data");
  Harness h(backend);
  auto pipe = test::make_pipe();
  h.open(1, 60, std::move(pipe.write), "b");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  REQUIRE(h.frontend->objects() == 1);
  CHECK_FALSE(test::pipe_writer_closed(pipe.read.get()));

  h.close(2, 60);
  CHECK(test::pipe_writer_closed(pipe.read.get()));
  CHECK(h.frontend->objects() == 0);
  h.close(3, 60);
  h.close(4, 12345);  // never opened
  h.settle();
  CHECK(h.frontend->objects() == 0);
  CHECK(h.counters.closes.load() == 3);
  CHECK(h.replies.copens().size() == 1);
  CHECK(h.replies.completes().empty());
  CHECK(h.replies.restores() == 0);
  CHECK(h.idle());

  // A READ after the CLOSE is for an unknown object: restore, not a completion.
  h.read(5, 60, 0, 4096);
  REQUIRE(h.run_until([&] { return h.replies.restores() == 1; }));
  CHECK(h.replies.completes().empty());
}

// ---------------------------------------------------------------- fd budget

namespace {
// Objects 1.. of a budgeted front end, each on its own blob and memfd.
struct BudgetFixture {
  FakeBackend backend;
  std::unique_ptr<Harness> h;
  std::map<std::uint32_t, std::unique_ptr<AnonMemfd>> anon;
  std::uint32_t next_msg = 1;

  explicit BudgetFixture(std::uint32_t budget) {
    for (int i = 1; i <= 8; ++i)
      backend.blobs["b" + std::to_string(i)] = std::make_shared<FakeBlob>(test::pattern_bytes(8192, i));
    auto options = Harness::fast_options();
    options.max_open_objects = budget;
    h = std::make_unique<Harness>(backend, options);
  }
  void open(std::uint32_t id) {
    // Its own name: a closed fd's number is reused, and the name tells them apart.
    const auto name = "budget-" + std::to_string(id);
    anon[id] = std::make_unique<AnonMemfd>(name.c_str());
    const auto copens = h->replies.copens().size();
    h->open(next_msg++, id, std::move(anon[id]->engine_end), "b" + std::to_string(id));
    REQUIRE(h->run_until([&] { return h->replies.copens().size() == copens + 1; }));
  }
  void read(std::uint32_t id) {
    const auto completes = h->replies.completes().size();
    h->read(next_msg++, id, 0, 4096);
    REQUIRE(h->run_until([&] { return h->replies.completes().size() == completes + 1 && h->idle(); }));
  }
  // Which of the objects opened so far still have their fd open.
  std::vector<std::uint32_t> open_fds() const {
    std::vector<std::uint32_t> out;
    for (const auto& [id, a] : anon)
      if (a->engine_end_open()) out.push_back(id);
    return out;
  }
};
}  // namespace

TEST_CASE("Cachefiles: the fd budget closes the least recently used objects, a READ counting as a use",
          "[worker][cachefiles][budget]") {
  BudgetFixture f(2);
  auto& h = *f.h;
  f.open(1);
  f.open(2);
  CHECK(f.open_fds() == std::vector<std::uint32_t>{1, 2});
  f.open(3);
  h.settle();
  CHECK(f.open_fds() == std::vector<std::uint32_t>{2, 3});  // 1 was least recently used
  CHECK(h.frontend->objects() == 2);
  CHECK(h.budget.objects_closed.load() == 1);

  f.read(2);  // 2 is now more recent than 3
  f.open(4);
  h.settle();
  CHECK(f.open_fds() == std::vector<std::uint32_t>{2, 4});
  CHECK(h.budget.objects_closed.load() == 2);

  // A READ of a closed object comes back only after the kernel reopened it
  // under a new id; the old id is unknown, as after a CLOSE.
  h.read(f.next_msg++, 1, 0, 4096);
  REQUIRE(h.run_until([&] { return h.replies.restores() == 1; }));
  // Every OPEN got exactly one copen with its size; nothing else was replied.
  for (const auto& [msg, value] : h.replies.copens()) CHECK(value == 8192);
  CHECK(h.replies.copens().size() == 4);
  CHECK(h.replies.completes().size() == 1);
}

TEST_CASE("Cachefiles: the fd budget never closes an object in use; it closes it once idle, without a request",
          "[worker][cachefiles][budget]") {
  BudgetFixture f(1);
  auto& h = *f.h;
  auto blob = f.backend.blobs["b1"];
  blob->gate = std::make_shared<Gate>();
  h.gates.push_back(blob->gate);
  f.open(1);
  h.read(f.next_msg++, 1, 0, 4096);  // held in the backend
  REQUIRE(h.run_until([&] { return blob->gate->waiting() == 1; }));
  f.open(2);  // 1 is least recently used but busy, 2 the newest: both stay
  h.settle(100ms);
  CHECK(f.open_fds() == std::vector<std::uint32_t>{1, 2});
  CHECK(h.frontend->objects() == 2);
  CHECK(h.budget.objects_closed.load() == 0);

  blob->gate->open();
  // The READ is answered through the fd, then the fd closes, though no
  // other request comes.
  REQUIRE(h.run_until([&] { return f.open_fds() == std::vector<std::uint32_t>{2}; }));
  CHECK(h.replies.completes().size() == 1);
  CHECK(pread_all(f.anon[1]->ours.get(), 0, 4096) == blob->content().substr(0, 4096));
  CHECK(h.frontend->objects() == 1);
  CHECK(h.budget.objects_closed.load() == 1);
  CHECK(h.metrics.reads_ok.load() == 1);
}

TEST_CASE("Cachefiles: without a budget no object is closed", "[worker][cachefiles][budget]") {
  BudgetFixture f(0);
  for (std::uint32_t id = 1; id <= 8; ++id) f.open(id);
  f.h->settle();
  CHECK(f.open_fds().size() == 8);
  CHECK(f.h->budget.objects_closed.load() == 0);
}

// ---------------------------------------------------------------- capacity

TEST_CASE("Cachefiles: has_capacity() is false at max_inflight and true again as requests finish",
          "[worker][cachefiles]") {
  FakeBackend backend;
  backend.blobs["b"] = std::make_shared<FakeBlob>(test::pattern_bytes(4096));
  backend.open_gate = std::make_shared<Gate>();
  auto options = Harness::fast_options();
  options.max_inflight = 2;
  Harness h(backend, options);
  h.gates.push_back(backend.open_gate);

  CHECK(h.frontend->has_capacity());
  CHECK(h.frontend->oldest_request_ns() == 0);
  const auto before = sys::monotonic_ns();
  h.open(1, 70, test::make_memfd("cap1"), "b");
  CHECK(h.frontend->has_capacity());
  CHECK(h.frontend->inflight() == 1);
  h.open(2, 71, test::make_memfd("cap2"), "b");
  CHECK_FALSE(h.frontend->has_capacity());
  CHECK(h.frontend->inflight() == 2);
  CHECK(h.counters.inflight.load() == 2);
  CHECK(h.frontend->oldest_request_ns() >= before);
  CHECK(h.frontend->oldest_request_ns() <= sys::monotonic_ns());

  h.settle(20ms);
  CHECK_FALSE(h.frontend->has_capacity());  // still blocked in the backend

  backend.open_gate->open();
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 2; }));
  CHECK(h.frontend->has_capacity());
  CHECK(h.frontend->inflight() == 0);
  CHECK(h.counters.inflight.load() == 0);
  CHECK(h.frontend->oldest_request_ns() == 0);
  CHECK(h.done_callbacks == 2);
  CHECK(h.counters.first_reply_ns.load() >= before);
}

TEST_CASE("Cachefiles: in-flight READs count against max_inflight too", "[worker][cachefiles]") {
  FakeBackend backend;
  auto blob = std::make_shared<FakeBlob>(test::pattern_bytes(8192));
  backend.blobs["b"] = blob;
  auto options = Harness::fast_options();
  options.max_inflight = 1;
  Harness h(backend, options);
  h.open(1, 80, test::make_memfd("rcap"), "b");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1 && h.idle(); }));
  CHECK(h.frontend->has_capacity());
  blob->gate = std::make_shared<Gate>();
  h.gates.push_back(blob->gate);
  h.read(2, 80, 0, 4096);
  CHECK_FALSE(h.frontend->has_capacity());
  blob->gate->open();
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 1 && h.idle(); }));
  CHECK(h.frontend->has_capacity());
}

TEST_CASE("Cachefiles: many concurrent READs each complete exactly once", "[worker][cachefiles]") {
  test::TempDir dir;
  const auto content = test::pattern_bytes(64 * 4096 + 17, 11);
  dir.write("blob", content);
  LocalBackend backend(dir.path());
  auto options = Harness::fast_options();
  options.fill_window = 4096;
  options.io_threads = 4;
  options.max_inflight = 1000;
  Harness h(backend, options);
  AnonMemfd anon("many");
  h.open(1, 90, std::move(anon.engine_end), "blob");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  const std::uint32_t n = 65;
  for (std::uint32_t i = 0; i < n; ++i) h.read(100 + i, 90, i * 4096, 4096);
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == n && h.idle(); }));
  h.settle();
  auto completes = h.replies.completes();
  REQUIRE(completes.size() == n);
  std::vector<std::uint32_t> ids;
  for (auto [fd, id] : completes) {
    CHECK(fd == anon.number);
    ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  for (std::uint32_t i = 0; i < n; ++i) CHECK(ids[i] == 100 + i);
  CHECK(pread_all(anon.ours.get(), 0, content.size()) == content);
  CHECK(h.done_callbacks == static_cast<int>(n + 1));
}

}  // namespace ondemand::worker

namespace ondemand::worker {

TEST_CASE("Cachefiles: prefetch writes the whole blob after OPEN without any READ", "[worker][cachefiles][prefetch]") {
  test::TempDir dir;
  const auto content = test::pattern_bytes(5 * 8192 + 300);  // several windows and a tail
  dir.write("blob", content);
  LocalBackend backend(dir.path());
  auto options = Harness::fast_options();  // fill_window 8192
  options.prefetch = true;
  Harness h(backend, options);
  AnonMemfd anon("prefetch");
  h.open(1, 30, std::move(anon.engine_end), "blob");
  const std::uint64_t whole = (content.size() + 4095) / 4096 * 4096;
  REQUIRE(h.run_until([&] { return h.counters.prefetched_bytes.load() == whole; }));
  CHECK(pread_all(anon.ours.get(), 0, content.size()) == content);
  CHECK(h.replies.completes().empty());  // no READ was needed, none answered
  CHECK(h.replies.copens().size() == 1);
}

TEST_CASE("Cachefiles: without prefetch nothing is written before a READ asks", "[worker][cachefiles][prefetch]") {
  test::TempDir dir;
  dir.write("blob", test::pattern_bytes(4 * 8192));
  LocalBackend backend(dir.path());
  Harness h(backend);
  AnonMemfd anon("no-prefetch");
  h.open(1, 31, std::move(anon.engine_end), "blob");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1; }));
  h.settle(100ms);
  CHECK(file_size(anon.ours.get()) == 0);
  CHECK(h.counters.prefetched_bytes.load() == 0);
}

TEST_CASE("Cachefiles: prefetch stops when the object is closed", "[worker][cachefiles][prefetch]") {
  FakeBackend backend;
  auto blob = std::make_shared<FakeBlob>(test::pattern_bytes(64 * 8192));
  blob->gate = std::make_shared<Gate>();  // holds the first chunk until we close
  backend.blobs["blob"] = blob;
  auto options = Harness::fast_options();  // one chunk = fill_window = 8192
  options.prefetch = true;
  Harness h(backend, options);
  h.gates.push_back(blob->gate);
  AnonMemfd anon("prefetch-close");
  h.open(1, 32, std::move(anon.engine_end), "blob");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 1 && blob->gate->waiting() == 1; }));
  h.close(2, 32);
  blob->gate->open();
  // The chunk in flight finishes, then nothing more: the fd is released.
  REQUIRE(h.run_until([&] { return !anon.engine_end_open(); }));
  h.settle(50ms);
  CHECK(h.counters.prefetched_bytes.load() == 8192);
  CHECK(blob->reads.load() == 1);
}

// ---------------------------------------------------------------- metrics

std::uint64_t latency_count(const proto::WorkerMetrics& m) {
  std::uint64_t n = 0;
  for (const auto& b : m.read_latency.buckets) n += b.load();
  return n;
}
std::uint64_t backend_errors(const proto::WorkerMetrics& m, proto::BackendErrorKind kind) {
  return m.backend_errors[static_cast<std::size_t>(kind)].load();
}

TEST_CASE("Cachefiles metrics: OPEN results, by kind", "[worker][cachefiles][metrics]") {
  FakeBackend backend;
  backend.blobs["b"] = std::make_shared<FakeBlob>("data");
  Harness h(backend);
  AnonMemfd anon("metrics-open");
  h.open(1, 40, std::move(anon.engine_end), "b");
  auto missing = test::make_pipe();
  h.open(2, 41, std::move(missing.write), "absent");
  auto hostile = test::make_pipe();
  h.open(3, 42, std::move(hostile.write), "../x");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 3 && h.idle(); }));
  CHECK(h.metrics.opens_ok.load() == 1);
  CHECK(h.counters.open_refused.load() == 2);
  CHECK(backend_errors(h.metrics, proto::BackendErrorKind::NOT_FOUND) == 1);
  CHECK(backend_errors(h.metrics, proto::BackendErrorKind::OPEN) == 0);
  CHECK(h.metrics.invalid_blob_ids.load() == 1);
}

TEST_CASE("Cachefiles metrics: every completed READ is one latency observation and one result",
          "[worker][cachefiles][metrics]") {
  FakeBackend backend;
  backend.blobs["good"] = std::make_shared<FakeBlob>(test::pattern_bytes(20000));
  auto bad = std::make_shared<FakeBlob>(test::pattern_bytes(20000));
  bad->err = EIO;
  backend.blobs["bad"] = bad;
  Harness h(backend);
  AnonMemfd good("metrics-good");
  AnonMemfd failing("metrics-bad");
  auto pipe = test::make_pipe();  // pwrite on a pipe fails: a cache write error
  h.open(1, 50, std::move(good.engine_end), "good");
  h.open(2, 51, std::move(failing.engine_end), "bad");
  h.open(3, 52, std::move(pipe.write), "good");
  REQUIRE(h.run_until([&] { return h.replies.copens().size() == 3 && h.idle(); }));
  h.read(4, 50, 0, 4096);
  h.read(5, 50, 8192, 4096);
  h.read(6, 51, 0, 4096);
  h.read(7, 52, 0, 4096);
  h.read(8, 99, 0, 4096);  // unknown object: no completion, so no observation
  REQUIRE(h.run_until([&] { return h.replies.completes().size() == 4 && h.idle(); }));
  h.settle();
  CHECK(h.metrics.reads_ok.load() == 2);
  CHECK(h.counters.read_failed.load() == 2);
  CHECK(latency_count(h.metrics) == 4);
  CHECK(h.metrics.read_latency.sum_ns.load() > 0);
  CHECK(backend_errors(h.metrics, proto::BackendErrorKind::READ) == 1);
  CHECK(h.metrics.cache_write_errors.load() == 1);
}

}  // namespace ondemand::worker
