#include "frontends/cachefiles/cull.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include "common/sys.h"
#include "tests/unit/test_util.h"

namespace ondemand::worker {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr std::uint64_t MiB = 1 << 20;

// A cache_dir laid out the way cachefiles lays it out in on-demand mode.
struct FakeCache {
  test::TempDir tmp;
  fs::path fan(const std::string& volume, const std::string& fanout) const {
    auto p = tmp.path() / "cache" / ("I" + volume) / ("@" + fanout);
    fs::create_directories(p);
    return p;
  }
  // A data object of `size` bytes last used `age_s` seconds ago.
  fs::path object(const std::string& volume, const std::string& fanout, const std::string& name,
                  std::size_t size, int age_s) const {
    auto p = fan(volume, fanout) / name;
    std::ofstream(p, std::ios::binary) << std::string(size, 'x');
    const timespec when{::time(nullptr) - age_s, 0};
    const timespec times[2] = {when, when};
    REQUIRE(::utimensat(AT_FDCWD, p.c_str(), times, 0) == 0);
    return p;
  }
  std::string dir() const { return tmp.path().string(); }
};

// Commands without a kernel: answers from tables, records every call, and
// `cull` really removes the file so that the next scan sees the space back.
struct FakeCommands : CullCommands {
  std::map<std::string, int> inuse_answer;  // by name; default 0
  std::map<std::string, int> cull_answer;   // by name; default 0 (and the file is removed)
  int probe_answer = 0;
  std::vector<std::string> calls;
  std::set<std::string> culled;

  int inuse(const std::string& dir, const std::string& name) override {
    calls.push_back("inuse " + name);
    auto it = inuse_answer.find(name);
    (void)dir;
    return it == inuse_answer.end() ? 0 : it->second;
  }
  int cull(const std::string& dir, const std::string& name) override {
    calls.push_back("cull " + name);
    auto it = cull_answer.find(name);
    if (it != cull_answer.end()) return it->second;
    fs::remove_all(fs::path(dir) / name);  // a volume: what bury + emptying the graveyard do
    culled.insert(name);
    return 0;
  }
  int probe() override {
    calls.push_back("probe");
    return probe_answer;
  }
};

FsSpace roomy() { return {4096, 100'000, 50'000, 10'000, 9'000}; }

TEST_CASE("cull_goal: nothing to do under the limit and above the kernel's threshold", "[cull]") {
  CHECK_FALSE(cull_goal({0, 80}, 500 * MiB, roomy()).needed());
  CHECK_FALSE(cull_goal({100 * MiB, 80}, 100 * MiB, roomy()).needed());
}

TEST_CASE("cull_goal: over cache_max_bytes, free down to the low watermark", "[cull]") {
  const auto goal = cull_goal({100 * MiB, 80}, 120 * MiB, roomy());
  CHECK(goal.bytes == 40 * MiB);
  CHECK(goal.objects == 0);
  CHECK_THAT(goal.why, Catch::Contains("cache_max_bytes"));
  // No overflow for an absurd limit.
  const std::uint64_t huge = std::uint64_t{1} << 62;
  CHECK(cull_goal({huge, 99}, huge + 1, roomy()).bytes == huge + 1 - (huge / 100 * 99 + huge % 100 * 99 / 100));
}

TEST_CASE("cull_goal: without a limit, below the kernel's cull threshold, free up to its run threshold", "[cull]") {
  // 100000 blocks: cull below 5000 free, run again at 7000.
  FsSpace space = roomy();
  space.blocks_avail = 5000;
  CHECK_FALSE(cull_goal({0, 80}, 0, space).needed());
  space.blocks_avail = 4999;
  const auto goal = cull_goal({0, 80}, 0, space);
  CHECK(goal.bytes == (7000 - 4999) * 4096);
  CHECK_THAT(goal.why, Catch::Contains("kernel"));
  // The larger of the two goals wins.
  CHECK(cull_goal({1 * MiB, 50}, 100 * MiB, space).bytes == 100 * MiB - MiB / 2);
  // Inodes: files_free below 5% of files.
  space = roomy();
  space.files_free = 100;
  CHECK(cull_goal({0, 80}, 0, space).objects == 700 - 100);
}

TEST_CASE("scan_cache: finds the objects of the on-demand layout, oldest first, and counts all space", "[cull]") {
  FakeCache cache;
  cache.object("erofs,img1", "12", "Dimg1", 3 * 4096, 100);
  cache.object("erofs,img2", "a0", "Dimg2", 2 * 4096, 300);
  cache.object("erofs,img2", "a0", "Ddata", 4096, 200);
  // Not objects: wrong depth, not regular, outside cache/.
  std::ofstream(cache.tmp.path() / "cache" / "Ierofs,img1" / "stray") << "x";
  fs::create_directories(cache.fan("erofs,img1", "12") / "Dsubdir");
  std::ofstream(cache.tmp.path() / "elsewhere") << std::string(4096, 'y');
  ::symlink("Dimg1", (cache.fan("erofs,img1", "12") / "Dlink").c_str());
  // A volume without objects: a candidate of its own.
  cache.fan("erofs,gone", "00");
  cache.fan("erofs,gone", "01");
  // Buried by the kernel, for us to delete.
  fs::create_directories(cache.tmp.path() / "graveyard" / "0000000100000001" / "@00");

  const auto scan = scan_cache(cache.dir(), true);
  REQUIRE(scan.err == 0);
  REQUIRE(scan.objects.size() == 3);
  CHECK(scan.objects[0].name == "Dimg2");  // 300 s ago
  CHECK(scan.objects[1].name == "Ddata");
  CHECK(scan.objects[2].name == "Dimg1");
  CHECK(scan.objects[0].dir == (cache.tmp.path() / "cache" / "Ierofs,img2" / "@a0").string());
  std::uint64_t objects_bytes = 0;
  for (const auto& o : scan.objects) objects_bytes += o.bytes;
  // du-style: the objects, the stray files and every directory.
  CHECK(scan.used_bytes > objects_bytes + 4096);
  CHECK(scan.space.blocks > 0);
  CHECK(scan.graveyard_removed == 1);
  CHECK(fs::is_empty(cache.tmp.path() / "graveyard"));
  REQUIRE(scan.empty_volumes.size() == 1);
  CHECK(scan.empty_volumes[0].name == "Ierofs,gone");
  CHECK(scan.empty_volumes[0].dir == (cache.tmp.path() / "cache").string());
  CHECK(scan.empty_volumes[0].bytes >= 3 * 512);  // the volume and its two fan-out directories

  auto copy = scan;
  const auto candidates = cull_candidates(copy);
  REQUIRE(candidates.size() == 4);
  CHECK(candidates[0].name == "Ierofs,gone");  // pure overhead goes first
  CHECK(candidates[1].name == "Dimg2");

  const auto statfs_only = scan_cache(cache.dir(), false);
  CHECK(statfs_only.objects.empty());
  CHECK(statfs_only.used_bytes == 0);
  CHECK(scan_cache((cache.tmp.path() / "missing").string(), true).err == ENOENT);
}

std::vector<CacheObject> victims(std::initializer_list<std::pair<const char*, std::uint64_t>> list) {
  std::vector<CacheObject> out;
  for (auto [name, bytes] : list) out.push_back({"/cache/Ivol/@00", name, bytes, 0});
  return out;
}

TEST_CASE("cull_some: culls least recently used first until the goal, skipping what is in use", "[cull]") {
  FakeCommands commands;
  commands.inuse_answer["Dold"] = EBUSY;
  const auto v = victims({{"Dold", 10}, {"Dmid", 10}, {"Dnew", 10}, {"Dnewest", 10}});
  std::size_t next = 0;
  PassResult result;
  CullGoal goal;
  goal.bytes = 15;
  cull_some(commands, v, next, goal, 100, result);
  CHECK(result.reached);
  CHECK(result.culled == 2);
  CHECK(result.culled_bytes == 20);
  CHECK(result.busy == 1);
  CHECK(result.unknown == 0);
  CHECK(commands.calls == std::vector<std::string>{"inuse Dold", "inuse Dmid", "cull Dmid", "inuse Dnew", "cull Dnew"});
  CHECK(next == 3);
}

TEST_CASE("cull_some: an object whose use is unknown is never culled, only counted", "[cull]") {
  FakeCommands commands;
  commands.inuse_answer["Dgone"] = ESTALE;
  commands.inuse_answer["Dodd"] = EINVAL;
  commands.inuse_answer["Dioerr"] = EIO;  // a lookup's internal error: the probe says the cache lives
  commands.cull_answer["Draced"] = EBUSY;  // opened between inuse and cull
  const auto v = victims({{"Dgone", 1}, {"Dodd", 1}, {"Dioerr", 1}, {"bad\nname", 1}, {" Dspace", 1},
                          {"Draced", 1}, {"Dok", 1}});
  std::size_t next = 0;
  PassResult result;
  CullGoal goal;
  goal.bytes = 100;
  cull_some(commands, v, next, goal, 100, result);
  CHECK_FALSE(result.reached);
  CHECK_FALSE(result.dead);
  CHECK(result.culled == 1);
  CHECK(result.unknown == 5);
  CHECK(result.busy == 1);
  CHECK(commands.culled == std::set<std::string>{"Dok"});
  for (const auto& call : commands.calls) {
    INFO(call);
    CHECK(call.find('\n') == std::string::npos);
    CHECK(call != "cull Dgone");
    CHECK(call != "cull Dodd");
    CHECK(call != "cull Dioerr");
  }
  CHECK(next == v.size());
}

TEST_CASE("cull_some: EIO that the probe confirms is a dead cache, and the pass stops there", "[cull]") {
  FakeCommands commands;
  commands.inuse_answer["Da"] = EIO;
  commands.probe_answer = EIO;
  const auto v = victims({{"Da", 1}, {"Db", 1}});
  std::size_t next = 0;
  PassResult result;
  CullGoal goal;
  goal.bytes = 2;
  cull_some(commands, v, next, goal, 100, result);
  CHECK(result.dead);
  CHECK(result.culled == 0);
  CHECK(commands.calls == std::vector<std::string>{"inuse Da", "probe"});
}

TEST_CASE("cull_some: stops after `limit` candidates and goes on from there", "[cull]") {
  FakeCommands commands;
  const auto v = victims({{"D1", 1}, {"D2", 1}, {"D3", 1}});
  std::size_t next = 0;
  PassResult result;
  CullGoal goal;
  goal.objects = 3;
  cull_some(commands, v, next, goal, 2, result);
  CHECK(next == 2);
  CHECK_FALSE(result.reached);
  cull_some(commands, v, next, goal, 2, result);
  CHECK(next == 3);
  CHECK(result.reached);
  CHECK(result.culled == 3);
}

// Records the working directory at every write the device commands make:
// the command must be written from inside the object's directory.
std::vector<std::string>* cwd_at_write = nullptr;
int record_cwd(const char* syscall) {
  if (cwd_at_write && std::string_view(syscall) == "write") cwd_at_write->push_back(fs::current_path().string());
  return 0;
}
int fail_eio(const char* syscall) { return std::string_view(syscall) == "write" ? EIO : 0; }
int fail_eexist(const char* syscall) { return std::string_view(syscall) == "write" ? EEXIST : 0; }

std::string read_available(int fd) {
  char buf[512];
  const auto n = ::read(fd, buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

TEST_CASE("DeviceCullCommands: writes the command from the object's directory and comes back", "[cull]") {
  FakeCache cache;
  const auto dir = cache.fan("erofs,img", "3f");
  auto device = test::make_pipe();
  const auto home = fs::current_path();
  DeviceCullCommands commands(device.write.get(), "vmtest");

  std::vector<std::string> seen;
  cwd_at_write = &seen;
  sys::set_fault_hook(record_cwd);
  const int inuse = commands.inuse(dir.string(), "Dimg");
  const auto after_inuse = fs::current_path();
  const int cull = commands.cull(dir.string(), "Dimg");
  sys::set_fault_hook(nullptr);
  cwd_at_write = nullptr;

  CHECK(inuse == 0);
  CHECK(cull == 0);
  CHECK(after_inuse == home);
  CHECK(fs::current_path() == home);
  CHECK(seen == std::vector<std::string>{fs::canonical(dir).string(), fs::canonical(dir).string()});
  CHECK(read_available(device.read.get()) == "inuse Dimgcull Dimg");

  // A directory that is not there: no command, cwd unchanged.
  CHECK(commands.inuse((cache.tmp.path() / "nope").string(), "Dimg") == ENOENT);
  CHECK(fs::current_path() == home);
}

TEST_CASE("DeviceCullCommands: the probe tells a live cache (EEXIST) from a dead one (EIO)", "[cull]") {
  auto device = test::make_pipe();
  DeviceCullCommands commands(device.write.get(), "vmtest");
  CHECK(commands.probe() == 0);
  CHECK(read_available(device.read.get()) == "tag vmtest");
  sys::set_fault_hook(fail_eexist);
  CHECK(commands.probe() == 0);
  sys::set_fault_hook(fail_eio);
  CHECK(commands.probe() == EIO);
  sys::set_fault_hook(nullptr);
}

bool run_until(boost::asio::io_context& loop, const std::function<bool()>& pred) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!pred() && std::chrono::steady_clock::now() < deadline) {
    loop.restart();
    loop.run_for(5ms);
  }
  return pred();
}

TEST_CASE("Culler: over cache_max_bytes it culls the oldest idle objects down to the low watermark", "[cull]") {
  FakeCache cache;
  for (int i = 0; i < 8; ++i)
    cache.object("erofs,img" + std::to_string(i), "0" + std::to_string(i), "Dimg" + std::to_string(i), 256 << 10,
                 1000 - i * 100);  // img0 oldest
  const auto before = scan_cache(cache.dir(), true).used_bytes;
  FakeCommands commands;
  commands.inuse_answer["Dimg0"] = EBUSY;  // the oldest is in use: it must stay
  proto::WorkerCounters counters{};
  boost::asio::io_context loop;
  // Limit: one object less than there is; low watermark 80%: a few objects
  // must go, not all of them.
  const std::uint64_t limit = before - (256 << 10);
  const std::uint64_t low = limit / 100 * 80;
  Culler culler(loop, commands, CullerOptions{cache.dir(), true, {limit, 80}, 10ms}, counters);
  culler.start();
  REQUIRE(run_until(loop, [&] { return scan_cache(cache.dir(), true).used_bytes <= low; }));
  loop.run_for(50ms);  // further passes: nothing more to do

  CHECK(counters.cull_passes.load() >= 1);
  CHECK(counters.culled_objects.load() == commands.culled.size());
  CHECK(commands.culled.size() < 7);
  CHECK(counters.culled_bytes.load() >= before - low);
  CHECK(counters.cull_skipped_busy.load() >= 1);
  CHECK(counters.cache_dead.load() == 0);
  CHECK(fs::exists(cache.fan("erofs,img0", "00") / "Dimg0"));
  CHECK_FALSE(commands.culled.count("Dimg0"));
  // Oldest idle first: img1 went, and the newest survived.
  CHECK(commands.culled.count("Dimg1"));
  CHECK(fs::exists(cache.fan("erofs,img7", "07") / "Dimg7"));
}

TEST_CASE("Culler: culling off or no pressure means no cull command, only the probe", "[cull]") {
  FakeCache cache;
  cache.object("erofs,img", "00", "Dimg", 1 << 20, 10);
  FakeCommands commands;
  proto::WorkerCounters counters{};
  boost::asio::io_context loop;
  {
    Culler off(loop, commands, CullerOptions{cache.dir(), false, {4096, 50}, 5ms}, counters);
    off.start();
    REQUIRE(run_until(loop, [&] { return commands.calls.size() >= 3; }));
    off.stop();
  }
  {
    Culler roomy_cache(loop, commands, CullerOptions{cache.dir(), true, {0, 50}, 5ms}, counters);
    roomy_cache.start();
    REQUIRE(run_until(loop, [&] { return commands.calls.size() >= 6; }));
    roomy_cache.stop();
  }
  for (const auto& call : commands.calls) CHECK(call == "probe");
  CHECK(counters.cull_passes.load() == 0);
  CHECK(fs::exists(cache.fan("erofs,img", "00") / "Dimg"));
}

TEST_CASE("Culler: a dead cache is reported once and the checks stop", "[cull]") {
  FakeCache cache;
  FakeCommands commands;
  commands.probe_answer = EIO;
  proto::WorkerCounters counters{};
  boost::asio::io_context loop;
  int dead_calls = 0;
  Culler culler(loop, commands, CullerOptions{cache.dir(), true, {0, 80}, 5ms}, counters);
  culler.on_dead([&] { ++dead_calls; });
  culler.start();
  REQUIRE(run_until(loop, [&] { return dead_calls > 0; }));
  loop.run_for(50ms);
  CHECK(dead_calls == 1);
  CHECK(counters.cache_dead.load() == 1);
  CHECK(commands.calls == std::vector<std::string>{"probe"});
  culler.start();  // a dead cache stays dead
  loop.run_for(30ms);
  CHECK(commands.calls.size() == 1);
}

}  // namespace
}  // namespace ondemand::worker
