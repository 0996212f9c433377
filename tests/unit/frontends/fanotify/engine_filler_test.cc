// EngineFiller: the fanotify front end's fills through the request engine,
// on a sparse cache file in a temp dir (no fanotify group needed).
#include "frontends/fanotify/engine_filler.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>

#include "backends/local.h"
#include "tests/unit/test_util.h"

namespace ondemand::fanotify {
namespace {

constexpr std::uint64_t WINDOW = 64 * 1024;

struct Rig {
  test::TempDir dir;
  boost::asio::io_context loop;
  proto::WorkerCounters counters{};
  proto::WorkerMetrics metrics{};
  std::string content;
  CacheFileSet files;
  std::optional<worker::LocalBackend> backend;
  std::optional<worker::Engine> engine;

  // A blob "data" of `size` bytes in blob_dir (or none), and its cache file.
  explicit Rig(std::uint64_t size, std::optional<std::uint64_t> blob_size = std::nullopt) {
    content = test::pattern_bytes(size, 5);
    std::filesystem::create_directories(dir.path() / "blobs");
    if (!blob_size || *blob_size > 0)
      dir.write("blobs/data", std::string_view(content).substr(0, blob_size.value_or(size)));
    files.add(open_cache_file(0, (dir.path() / "cache").string(), size));
    backend.emplace(dir.path() / "blobs");
    engine.emplace(loop, *backend, worker::EngineOptions{.io_threads = 2}, counters, metrics);
  }
  ~Rig() {
    loop.poll();  // the engine's end-of-operation posts
  }
  CacheFile& file() { return *files.at(0); }
  std::string cached(std::uint64_t off, std::uint64_t len) {
    std::string out(len, '\0');
    REQUIRE(::pread(file().writer.get(), out.data(), len, static_cast<off_t>(off)) ==
            static_cast<ssize_t>(len));
    return out;
  }
};

}  // namespace

TEST_CASE("EngineFiller: fills the window around the asked range; a filled window copies nothing",
          "[fanotify][engine]") {
  Rig rig(1 << 20);
  EngineFiller filler(*rig.engine, rig.files, {{"", "data"}}, {.window = WINDOW});
  REQUIRE(fill_now(filler, rig.file(), 70000, 10) == 0);
  CHECK(rig.cached(WINDOW, WINDOW) == rig.content.substr(WINDOW, WINDOW));
  CHECK(!range_has_hole(rig.file(), WINDOW, WINDOW));
  CHECK(range_has_hole(rig.file(), 0, WINDOW));
  CHECK(range_has_hole(rig.file(), 2 * WINDOW, WINDOW));
  CHECK(rig.counters.bytes_written.load() == WINDOW);
  // Another event on the same window: the fill resumes over data, writes 0.
  REQUIRE(fill_now(filler, rig.file(), 65536, 4096) == 0);
  CHECK(rig.counters.bytes_written.load() == WINDOW);
}

TEST_CASE("EngineFiller: the tail of a blob that is not page-sized keeps the file's size",
          "[fanotify][engine]") {
  Rig rig(70000);
  EngineFiller filler(*rig.engine, rig.files, {{"", "data"}}, {.window = WINDOW});
  REQUIRE(fill_now(filler, rig.file(), 69000, 5000) == 0);
  CHECK(rig.cached(WINDOW, 70000 - WINDOW) == rig.content.substr(WINDOW));
  struct stat st {};
  REQUIRE(::fstat(rig.file().writer.get(), &st) == 0);
  CHECK(st.st_size == 70000);
  // Past the end: nothing asked of the file, nothing to do.
  CHECK(fill_now(filler, rig.file(), 80000, 10) == 0);
}

TEST_CASE("EngineFiller: a missing blob, or one whose size is not its cache file's, fails every fill with EIO",
          "[fanotify][engine]") {
  const auto [blob_size, name] = GENERATE(table<std::uint64_t, const char*>({
      {0, "no such blob"},
      {4096, "the blob is shorter"},
  }));
  INFO(name);
  Rig rig(1 << 20, blob_size);
  EngineFiller filler(*rig.engine, rig.files, {{"", "data"}}, {.window = WINDOW});
  CHECK(fill_now(filler, rig.file(), 0, 10) == EIO);
  CHECK(fill_now(filler, rig.file(), 500000, 10) == EIO);
  CHECK(range_has_hole(rig.file(), 0, 1 << 20));
  CHECK(rig.counters.bytes_written.load() == 0);
}

TEST_CASE("EngineFiller: a cache file with no blob reference fails with EIO", "[fanotify][engine]") {
  Rig rig(1 << 20);
  EngineFiller filler(*rig.engine, rig.files, {}, {.window = WINDOW});
  CHECK(fill_now(filler, rig.file(), 0, 10) == EIO);
}

}  // namespace ondemand::fanotify
