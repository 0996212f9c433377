// What the native fanotify tests share: a real multi-device EROFS image
// (mkfs.erofs --blobdev: a metadata blob plus a data blob) whose metadata
// blob is whole in the cache (before Linux 7.1 metadata reads raise no
// event) and whose data blob is a sparse file marked FAN_PRE_ACCESS, mounted
// file-backed. The test process plays the supervisor: it creates and holds
// the group fd and the cache files' writer fds; workers are forked children
// serving through fanotify::Server, and the crash tests really SIGKILL them.
//
// Header-only: one copy per test file, all in the namespace `fanotify_test`.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <algorithm>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "common/sys.h"
#include "backends/local.h"
#include "engine/engine.h"
#include "frontends/fanotify/cache_file.h"
#include "frontends/fanotify/engine_filler.h"
#include "frontends/fanotify/erofs_mount.h"
#include "frontends/fanotify/fanotify_sys.h"
#include "frontends/fanotify/filler.h"
#include "frontends/fanotify/group.h"
#include "frontends/fanotify/pending_record.h"
#include "frontends/fanotify/server.h"

namespace ondemand::fanotify::fanotify_test {

namespace fs = std::filesystem;
namespace pf = proto::fanotify;

inline constexpr std::uint64_t WINDOW = 64 * 1024;
inline constexpr std::int64_t EXT4_MAGIC = 0xEF53, XFS_MAGIC = 0x58465342, BTRFS_MAGIC = 0x9123683E;

inline void require_environment(const std::string& dir) {
  INFO("the fanotify native tests need root (CAP_SYS_ADMIN for FAN_CLASS_PRE_CONTENT and mount)");
  REQUIRE(::geteuid() == 0);
  std::int64_t type = 0;
  REQUIRE(sys::statfs_type(dir.c_str(), type).ok());
  INFO(fmt::format("{} is on file system {:#x}: pre-content marks need ext4, xfs or btrfs "
                   "(tmpfs refuses them)", dir, type));
  REQUIRE((type == EXT4_MAGIC || type == XFS_MAGIC || type == BTRFS_MAGIC));
}

inline void write_file(const fs::path& path, std::uint64_t size, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string data(size, '\0');
  for (std::uint64_t i = 0; i < size; i += 8) {
    const auto v = rng();
    std::memcpy(data.data() + i, &v, std::min<std::uint64_t>(8, size - i));
  }
  std::ofstream(path, std::ios::binary).write(data.data(), static_cast<std::streamsize>(size));
}

struct Child {
  pid_t pid = -1;
  UniqueFd out;  // stdout of the child, when captured
};

// fork + exec argv with stdout to a pipe; stderr passes through.
inline Child spawn(const std::vector<std::string>& argv) {
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(p[1], 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(p[1]);
  return {pid, UniqueFd(p[0])};
}

struct Finished {
  int status = -1;
  std::string out;
};

inline Finished finish(Child& child) {
  Finished f;
  char buf[4096];
  for (;;) {
    auto r = ondemand::sys::read(child.out.get(), buf, sizeof buf);
    if (!r.ok() || r.rc == 0) break;
    f.out.append(buf, static_cast<std::size_t>(r.rc));
  }
  int status = 0;
  while (::waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
  }
  f.status = status;
  return f;
}

inline Finished run(const std::vector<std::string>& argv) {
  auto child = spawn(argv);
  return finish(child);
}

inline std::string sha256_of(const fs::path& path) {
  auto f = run({"sha256sum", path.string()});
  REQUIRE(WIFEXITED(f.status));
  REQUIRE(WEXITSTATUS(f.status) == 0);
  return f.out.substr(0, 64);
}

// Which RangeFiller the workers use.
enum class FillerKind { ENGINE, LOCAL };
// The blob ids of the image's two blobs, as files in the backend's blob_dir.
inline const std::vector<std::string> BLOB_IDS = {"meta", "data"};

struct FileCase {
  std::string rel;
  std::uint64_t size;
};
inline const std::vector<FileCase> FILES = {
    {"big", 2 << 20},            {"small", 6},       {"empty", 0},
    {"dir/mid", 70000},          {"dir/sub/odd", 130 * 1024 + 17},
    {"dir/sub/page", 4096},
};

// About 5 MiB of data chunks per image: a few hundred events per reading
// of it, for the chaos and upgrade runs.
inline const std::vector<FileCase> MANY_FILES = {
    {"a", 3 << 20},          {"b", (1 << 20) + 5}, {"dir/c", 512 * 1024},
    {"dir/d", 200000},       {"dir/sub/e", 4096},  {"dir/sub/f", 10},
    {"g", 0},                {"h", 65537},
};

// One image and its cache, mounted file-backed; the test process holds the
// group, the writer fds and the pending record, like a supervisor.
class Fixture {
 public:
  // `seed` makes the file contents (a new seed: a freshly created image).
  explicit Fixture(const std::vector<FileCase>& files = FILES, std::uint64_t seed = 1,
                   FillerKind filler = FillerKind::ENGINE)
      : filler_kind_(filler) {
    char tmpl[] = "/tmp/ondemand-fanotify-XXXXXX";
    REQUIRE(::mkdtemp(tmpl));
    root_ = tmpl;
    require_environment(root_);
    fs::create_directories(root_ / "cache");
    fs::create_directories(root_ / "mnt");
    for (const auto& f : files) {
      fs::create_directories((root_ / "src" / f.rel).parent_path());
      write_file(root_ / "src" / f.rel, f.size, seed++);
      expected_[f.rel] = sha256_of(root_ / "src" / f.rel);
    }
    // Chunk-based multi-device image: inodes, directories and inline tails
    // in meta.img, every data chunk in blob.img.
    const auto mk = run({"mkfs.erofs", "--quiet", "--blobdev=" + (root_ / "blob.img").string(),
                         "--chunksize=4096", (root_ / "meta.img").string(),
                         (root_ / "src").string()});
    INFO("mkfs.erofs (erofs-utils) must be installed");
    REQUIRE(WIFEXITED(mk.status));
    REQUIRE(WEXITSTATUS(mk.status) == 0);
    // The backend's blob_dir: one file per blob id.
    fs::create_directories(root_ / "blobs");
    for (std::size_t i = 0; i < BLOB_IDS.size(); ++i)
      fs::copy_file(root_ / (i == 0 ? "meta.img" : "blob.img"), root_ / "blobs" / BLOB_IDS[i]);

    group_ = create_group();
    // The metadata blob whole (it is all the mount needs before 7.1), the
    // data blob as a hole of its full size. Writer fds first, mark after.
    fs::copy_file(root_ / "meta.img", meta_path());
    files_.add(open_cache_file(0, meta_path(), fs::file_size(root_ / "meta.img")));
    files_.add(open_cache_file(1, blob_path(), fs::file_size(root_ / "blob.img")));
    REQUIRE(range_has_hole(*files_.at(1), 0, files_.at(1)->size));
    REQUIRE(mark(group_.get(), blob_path()) == 0);

    record_path_ = fmt::format("/dev/shm/ondemand-fanotify-test-{}", ::getpid());
    record_.emplace(PendingRecord::create(record_path_));
  }

  ~Fixture() {
    if (mounted_) (void)unmount(mnt().string());
    for (auto pid : workers_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    record_.reset();
    ::unlink(record_path_.c_str());
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }

  std::string meta_path() const { return (root_ / "cache/meta").string(); }
  std::string blob_path() const { return (root_ / "cache/blob").string(); }
  fs::path mnt() const { return root_ / "mnt"; }
  CacheFileSet& files() { return files_; }
  pf::PendingRecordLayout& record() { return record_->layout(); }
  const std::map<std::string, std::string>& expected() const { return expected_; }
  // The backend's copy of blob `index` ends early (its cache file does not).
  void truncate_source(std::size_t index, std::uint64_t size) {
    fs::resize_file(root_ / "blobs" / BLOB_IDS.at(index), size);
  }
  // The backend has no blob `index` at all.
  void remove_source(std::size_t index) { fs::remove(root_ / "blobs" / BLOB_IDS.at(index)); }

  // A worker: a forked child that attaches to the record, recovers, serves.
  // With `go`: a standby, which attaches and opens its blobs at once but
  // serves (recovers, then reads) only once a byte is written to *go.
  // SIGUSR2 makes a worker hand over (Server::hand_over) and exit 0.
  pid_t start_worker(KillHook hook = {}, UniqueFd* go = nullptr) {
    int p[2] = {-1, -1};
    if (go) REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      if (go) ::close(p[1]);
      worker_main(hook, p[0]);
    }
    if (go) {
      ::close(p[0]);
      go->reset(p[1]);
    }
    workers_.push_back(pid);
    return pid;
  }

  // Waits for a worker to die; returns its wait status.
  int reap(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    std::erase(workers_, pid);
    return status;
  }

  void mount_image() {
    REQUIRE(mount_erofs_file(meta_path(), mnt().string(), {blob_path()}) == 0);
    mounted_ = true;
  }

  // The marks this group holds, from /proc/self/fdinfo of the group fd.
  bool blob_marked() {
    std::ifstream in(fmt::format("/proc/self/fdinfo/{}", group_.get()));
    const auto ino = fmt::format("ino:{:x} ", files_.at(1)->ino);
    for (std::string line; std::getline(in, line);)
      if (line.rfind("fanotify ", 0) == 0 && line.find(ino) != std::string::npos) return true;
    return false;
  }

 private:
  [[noreturn]] void worker_main(KillHook hook, int go) {
    int code = 0;
    try {
      auto record = PendingRecord::attach(record_path_);
      boost::asio::io_context loop;
      // The engine path, as the worker will run it: a local backend on
      // blob_dir, the engine's pool, EngineFiller. LOCAL: the minimal
      // inline filler, so both RangeFillers pass the same tests.
      worker::LocalBackend backend(root_ / "blobs");
      proto::WorkerCounters counters{};
      proto::WorkerMetrics metrics{};
      worker::Engine engine(loop, backend, {.io_threads = 2}, counters, metrics);
      std::unique_ptr<RangeFiller> filler;
      if (filler_kind_ == FillerKind::ENGINE) {
        std::vector<proto::BlobRef> refs;
        for (const auto& id : BLOB_IDS) refs.push_back({"", id});
        filler = std::make_unique<EngineFiller>(engine, files_, refs, FillOptions{.window = WINDOW});
      } else {
        std::vector<UniqueFd> fds;
        for (const auto& id : BLOB_IDS) {
          auto o = ondemand::sys::open((root_ / "blobs" / id).c_str(), O_RDONLY | O_CLOEXEC);
          if (!o.fd) ::_exit(2);
          fds.push_back(std::move(o.fd));
        }
        filler = std::make_unique<LocalBlobFiller>(std::move(fds), WINDOW);
      }
      if (go >= 0) {
        char byte = 0;
        if (ondemand::sys::read(go, &byte, 1).rc != 1) ::_exit(4);  // the test gave up
      }
      Server server(loop, group_.get(), files_, *filler, record, hook);
      boost::asio::signal_set upgrade(loop, SIGUSR2);
      upgrade.async_wait([&](const boost::system::error_code& ec, int) {
        if (!ec) server.hand_over([&] { loop.stop(); });
      });
      server.recover();
      server.start();
      loop.run();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "fanotify test worker: %s\n", e.what());
      code = 3;
    }
    ::_exit(code);
  }

  fs::path root_;
  std::map<std::string, std::string> expected_;
  FillerKind filler_kind_;
  UniqueFd group_;
  CacheFileSet files_;
  std::string record_path_;
  std::optional<PendingRecord> record_;
  std::vector<pid_t> workers_;
  bool mounted_ = false;
};

struct Unanswered {
  std::size_t count = 0;
  std::size_t unknown_file = 0;
  bool first_unknown_file = false;
  std::uint64_t offset = 0, length = 0;
};

// What a dead worker left in the record: events read and not answered.
inline Unanswered unanswered_in(pf::PendingRecordLayout& record) {
  Unanswered u;
  for (auto& inbox : record.inbox) {
    if (inbox.state.load() == pf::INBOX_EMPTY) continue;
    const auto parsed = pf::parse_fanotify_events({inbox.bytes, pf::INBOX_BYTES});
    for (std::size_t k = 0; k < parsed.events.size(); ++k) {
      if (inbox.answered[k].load()) continue;
      const auto* ev = std::get_if<pf::PreAccessEvent>(&parsed.events[k]);
      if (!ev) continue;
      const bool unknown = inbox.file[k].load() == pf::FILE_UNKNOWN;
      if (u.count++ == 0) {
        u.offset = ev->offset;
        u.length = ev->count;
        u.first_unknown_file = unknown;
      }
      if (unknown) ++u.unknown_file;
    }
  }
  return u;
}

// One reader: sha256sum of every file of the mount, in its own order.
inline Child start_reader(const Fixture& fx, std::mt19937_64& rng) {
  std::vector<std::string> argv{"sha256sum"};
  for (const auto& [rel, sum] : fx.expected()) argv.push_back((fx.mnt() / rel).string());
  std::shuffle(argv.begin() + 1, argv.end(), rng);
  return spawn(argv);
}

// What a finished reader printed, checked against the image: files seen,
// and the files whose SHA-256 is wrong (named in the test's output).
struct ReaderResult {
  std::uint64_t files = 0;
  std::uint64_t mismatches = 0;
};
inline ReaderResult check_reader_output(const Fixture& fx, Child& reader) {
  ReaderResult r;
  std::string out;
  char buf[4096];
  for (;;) {
    auto n = ondemand::sys::read(reader.out.get(), buf, sizeof buf);
    if (!n.ok() || n.rc == 0) break;
    out.append(buf, static_cast<std::size_t>(n.rc));
  }
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.size() < 67) continue;
    const auto sum = line.substr(0, 64);
    const auto rel = fs::relative(fs::path(line.substr(66)), fx.mnt()).string();
    ++r.files;
    const auto it = fx.expected().find(rel);
    if (it == fx.expected().end() || it->second != sum) {
      ++r.mismatches;
      UNSCOPED_INFO(fmt::format("{}: sha256 {} expected {}", rel, sum,
                                it == fx.expected().end() ? "no such file" : it->second));
    }
  }
  return r;
}

// `count` readers started at once, each over every file of the mount.
class Readers {
 public:
  Readers(const Fixture& fx, int count, std::mt19937_64& rng)
      : fx_(fx), done_(count, false), status_(count, 0) {
    for (int r = 0; r < count; ++r) readers_.push_back(start_reader(fx, rng));
  }
  // Reaps whoever has finished; true once all have.
  bool all_done() {
    bool all = true;
    for (std::size_t r = 0; r < readers_.size(); ++r) {
      if (!done_[r] && ::waitpid(readers_[r].pid, &status_[r], WNOHANG) == readers_[r].pid) done_[r] = true;
      all = all && done_[r];
    }
    return all;
  }
  // After all_done(): what they saw. A reader that failed is named in the
  // test's output with its wait status; so is every wrong file.
  struct Seen {
    std::uint64_t files = 0, read_errors = 0, mismatches = 0;
    Seen& operator+=(const Seen& o) {
      files += o.files;
      read_errors += o.read_errors;
      mismatches += o.mismatches;
      return *this;
    }
  };
  Seen collect() {
    Seen seen;
    for (std::size_t r = 0; r < readers_.size(); ++r) {
      if (!WIFEXITED(status_[r]) || WEXITSTATUS(status_[r]) != 0) {
        ++seen.read_errors;
        UNSCOPED_INFO(fmt::format("reader {} wait status {:#x}", r, status_[r]));
      }
      const auto out = check_reader_output(fx_, readers_[r]);
      seen.files += out.files;
      seen.mismatches += out.mismatches;
    }
    return seen;
  }

 private:
  const Fixture& fx_;
  std::vector<Child> readers_;
  std::vector<bool> done_;
  std::vector<int> status_;
};

// Polls until the serving worker has answered once since first_answer_ns
// was zeroed, the readers are done, or the deadline; returns
// first_answer_ns (0: no answer).
inline std::uint64_t wait_first_answer(pf::PendingRecordLayout& record, Readers& readers,
                                       std::chrono::steady_clock::time_point deadline) {
  while (record.first_answer_ns.load() == 0 && !readers.all_done() &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  return record.first_answer_ns.load();
}

inline void check_all_files(Fixture& fx) {
  for (const auto& [rel, sum] : fx.expected()) {
    INFO(rel);
    CHECK(sha256_of(fx.mnt() / rel) == sum);
  }
}

}  // namespace ondemand::fanotify::fanotify_test
