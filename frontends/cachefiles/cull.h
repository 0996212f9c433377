// The cache culler. cachefiles never culls in on-demand mode: cache_dir
// fills up and, below the kernel's free-space threshold, every uncached read
// fails for good. Culling is the daemon's job; this is ours.
//
// The kernel's side (Linux 6.12, fs/cachefiles):
// - Layout (volume.c, namei.c, key.c cachefiles_cook_key):
//   <cache_dir>/cache/I<volume key>/@<2 hex digits: fan-out>/<object>, an
//   object being a regular file named D<cookie key> when the key is
//   printable (S..., T... or E... encodings otherwise). For EROFS the volume
//   key is "erofs,<fsid or domain_id>" and the cookie key the blob id.
//   <cache_dir>/graveyard holds directories the kernel buried for the daemon
//   to delete.
// - `inuse <name>` and `cull <name>` act on <name> in the daemon process's
//   CURRENT WORKING DIRECTORY (daemon.c: get_fs_pwd). inuse answers 0 or
//   EBUSY (S_KERNEL_FILE: the kernel has the object open, namei.c
//   cachefiles_check_in_use); cull unlinks the file unless it is in use
//   (EBUSY), under the inode lock, so it cannot race with a new open; ESTALE
//   means the file went away meanwhile.
// - cachefiles_has_space (cache.c): below bstop (1% of the blocks or files)
//   writes fail with ENOBUFS; below bcull (5%) the CULLING flag is set
//   (EPOLLOUT on the device) and stays until brun (7%). The kernel's
//   defaults; the supervisor does not change them. The culler checks the
//   same statfs figures itself, every CULL_INTERVAL.
// - A dead cache (cachefiles_io_error sets CACHEFILES_DEAD) fails every
//   write on the device with EIO before the command is parsed
//   (cachefiles_daemon_write), and nothing is ever queued for reading
//   again, so a serving worker only notices by writing: the culler probes
//   with `tag <tag>`, which a live bound cache refuses with EEXIST
//   (cachefiles_daemon_tag) and a dead one with EIO.
//
// What it does: when the cache uses more than cache_max_bytes (allocated
// blocks of everything under cache_dir, as du counts them) it culls the
// least-recently-used objects (by the later of atime and mtime) that the
// kernel does not have open, until use is at cache_low_watermark percent of
// cache_max_bytes; when the file system is below the kernel's cull
// threshold it culls until it is back at the kernel's run threshold. An
// object whose use cannot be told (inuse fails with anything but EBUSY) is
// never culled: it is skipped and counted.
//
// Threads: the working directory is process-wide, so every command (fchdir
// to the object's directory, the command, fchdir back) runs on the event
// loop thread within one handler; nothing else in the worker uses relative
// paths. The scan (readdir, fstatat, statfs, emptying the graveyard) runs on
// a thread of its own with absolute paths only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "common/unique_fd.h"
#include "proto/shm_layout.h"

namespace ondemand::worker {

// cachefiles' default thresholds, in percent of the file system's blocks
// and files (daemon.c cachefiles_daemon_open).
inline constexpr std::uint64_t KERNEL_CULL_PERCENT = 5;
inline constexpr std::uint64_t KERNEL_RUN_PERCENT = 7;

struct CullPolicy {
  std::uint64_t max_bytes = 0;        // 0: the kernel's threshold only
  std::uint32_t low_watermark = 80;   // percent of max_bytes a pass gets down to
};

// statfs figures of cache_dir's file system.
struct FsSpace {
  std::uint64_t block_size = 0;
  std::uint64_t blocks = 0;
  std::uint64_t blocks_avail = 0;     // f_bavail, as cachefiles_has_space reads it
  std::uint64_t files = 0;
  std::uint64_t files_free = 0;
};

// What a pass must free; nothing to do when both are 0.
struct CullGoal {
  std::uint64_t bytes = 0;
  std::uint64_t objects = 0;
  std::string why;  // for the log
  bool needed() const { return bytes != 0 || objects != 0; }
};
// Pure: the goal for a cache using `used_bytes` on a file system `space`.
CullGoal cull_goal(const CullPolicy& policy, std::uint64_t used_bytes, const FsSpace& space);

struct CacheObject {
  std::string dir;               // absolute path of its fan-out directory (a volume: <cache_dir>/cache)
  std::string name;              // its file name there, e.g. "Dmyimage" (a volume: "Ierofs,myimage")
  std::uint64_t bytes = 0;       // allocated (st_blocks * 512; a volume: its whole tree)
  std::int64_t last_use_ns = 0;  // the later of atime and mtime (CLOCK_REALTIME)
};

struct CacheScan {
  int err = 0;                      // statfs failed (errno); nothing else is valid then
  FsSpace space;
  std::uint64_t used_bytes = 0;     // everything under cache_dir, directories included
  std::vector<CacheObject> objects; // least recently used first
  // Volume directories without a single object left: 256 fan-out
  // directories each (1 MiB on a 4 KiB-block ext4) that nothing would ever
  // reclaim. `cull I<volume>` from <cache_dir>/cache buries one in the
  // graveyard unless the kernel has the volume acquired (EBUSY).
  std::vector<CacheObject> empty_volumes;
  std::uint64_t graveyard_removed = 0;  // entries deleted from <cache_dir>/graveyard
};
// Walks cache_dir (absolute paths only: any thread). Entries that vanish
// while it walks are skipped. Also empties <cache_dir>/graveyard.
CacheScan scan_cache(const std::string& cache_dir, bool with_objects);
// What a pass tries, in order: empty volumes (pure overhead), then objects,
// least recently used first.
std::vector<CacheObject> cull_candidates(CacheScan& scan);

// The device commands, behind an interface so the pass logic can be tested
// without a kernel. Event-loop thread only. Each returns 0 or an errno.
class CullCommands {
 public:
  virtual ~CullCommands() = default;
  virtual int inuse(const std::string& dir, const std::string& name) = 0;
  virtual int cull(const std::string& dir, const std::string& name) = 0;
  // 0 while the cache lives; EIO once cachefiles has declared it dead.
  virtual int probe() = 0;
};

// The real commands on /dev/cachefiles: fchdir to the object's directory,
// write the command, fchdir back to where the process was.
class DeviceCullCommands final : public CullCommands {
 public:
  // Throws std::runtime_error if the current directory cannot be opened.
  DeviceCullCommands(int device_fd, std::string tag);
  int inuse(const std::string& dir, const std::string& name) override;
  int cull(const std::string& dir, const std::string& name) override;
  int probe() override;

 private:
  int in_dir(const std::string& dir, const std::string& command);
  int device_fd_;
  std::string tag_;
  UniqueFd home_;  // the working directory to return to
};

struct PassResult {
  std::uint64_t culled = 0;
  std::uint64_t culled_bytes = 0;
  std::uint64_t busy = 0;
  std::uint64_t unknown = 0;
  bool dead = false;     // a command answered EIO: the cache is dead
  bool reached = false;  // the goal is met
};
// Culls from `victims` (least recently used first), starting at `next`,
// until `goal` is met, at most `limit` candidates; advances `next`. Counts
// in `result` (accumulated across calls). Never culls an object unless
// `inuse` answered 0 for it first.
void cull_some(CullCommands& commands, std::span<const CacheObject> victims, std::size_t& next,
               const CullGoal& goal, std::size_t limit, PassResult& result);

struct CullerOptions {
  std::string cache_dir;
  bool cull = true;  // false: only watch for a dead cache (config cache_cull)
  CullPolicy policy;
  std::chrono::milliseconds interval{1000};
};

class Culler {
 public:
  Culler(boost::asio::io_context& loop, CullCommands& commands, CullerOptions options,
         proto::WorkerCounters& counters);
  ~Culler();
  Culler(const Culler&) = delete;
  Culler& operator=(const Culler&) = delete;

  // Called once, on the loop, when the cache is found dead; checks stop then.
  void on_dead(std::function<void()> callback) { on_dead_ = std::move(callback); }
  // Starts (or resumes) the periodic checks; the first one runs at once.
  void start();
  // No new pass; one under way stops before its next object.
  void stop();

 private:
  void arm(std::chrono::milliseconds after);
  void tick();
  void on_scan(CacheScan scan);
  void continue_pass();
  void finish_pass();

  boost::asio::io_context& loop_;
  CullCommands& commands_;
  CullerOptions options_;
  proto::WorkerCounters& counters_;
  std::function<void()> on_dead_;
  boost::asio::steady_timer timer_;
  boost::asio::thread_pool scan_pool_{1};
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);  // guards handlers posted from the scan thread
  bool running_ = false;
  bool busy_ = false;  // a scan or a pass is under way
  bool dead_ = false;
  bool warned_stuck_ = false;
  // The pass under way.
  std::vector<CacheObject> victims_;
  std::size_t next_ = 0;
  CullGoal goal_;
  PassResult result_;
  std::uint64_t used_before_ = 0;
};

}  // namespace ondemand::worker
