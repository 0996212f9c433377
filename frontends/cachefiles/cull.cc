#include "frontends/cachefiles/cull.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <system_error>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/sys.h"

namespace ondemand::worker {
namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {
// Candidates tried per event-loop handler: each costs an unlink in the
// kernel, so a long pass yields to requests and the heartbeat in between.
constexpr std::size_t CULL_BATCH = 32;

double mib(std::uint64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

// x * percent / 100 without overflowing for any x below 2^64.
std::uint64_t percent_of(std::uint64_t x, std::uint64_t percent) {
  return x / 100 * percent + x % 100 * percent / 100;
}

std::int64_t ns_of(const timespec& t) { return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec; }

// A name the device command parser hands over intact: it splits the
// command at the first whitespace, skips whitespace before the argument
// and cuts at the first newline (cachefiles_daemon_write). cachefiles never
// makes such names (key.c), so anything else was not put there by it.
bool commandable_name(const std::string& name) {
  if (name.empty() || name.size() > 255) return false;
  return std::none_of(name.begin(), name.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u <= ' ' || u == 0x7f || c == '/';
  });
}

// Calls f(path, stat, depth) for `dir` and everything below it, without
// following symlinks; entries that vanish or cannot be read are skipped.
template <typename F>
void walk(const fs::path& dir, int depth, F&& f) {
  struct stat st{};
  if (!sys::fstatat(AT_FDCWD, dir.c_str(), &st, AT_SYMLINK_NOFOLLOW).ok()) return;
  f(dir, st, depth);
  if (!S_ISDIR(st.st_mode)) return;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) walk(it->path(), depth + 1, f);
}
}  // namespace

CullGoal cull_goal(const CullPolicy& policy, std::uint64_t used_bytes, const FsSpace& space) {
  CullGoal goal;
  if (policy.max_bytes != 0 && used_bytes > policy.max_bytes) {
    const auto low = percent_of(policy.max_bytes, policy.low_watermark);
    goal.bytes = used_bytes - low;
    goal.why = fmt::format("cache uses {:.1f} MiB, over cache_max_bytes ({:.1f} MiB): culling to {:.1f} MiB",
                           mib(used_bytes), mib(policy.max_bytes), mib(low));
  }
  // cachefiles_has_space: the kernel starts culling below bcull and stops
  // at brun; below bstop it refuses writes (ENOBUFS).
  if (space.blocks != 0 && space.blocks_avail < percent_of(space.blocks, KERNEL_CULL_PERCENT)) {
    const auto need = (percent_of(space.blocks, KERNEL_RUN_PERCENT) - space.blocks_avail) * space.block_size;
    if (need > goal.bytes) {
      goal.bytes = need;
      goal.why = fmt::format("cache_dir's file system has {:.1f} MiB free, below the kernel's cull threshold "
                             "({}% of {:.1f} MiB): culling to {}% free",
                             mib(space.blocks_avail * space.block_size), KERNEL_CULL_PERCENT,
                             mib(space.blocks * space.block_size), KERNEL_RUN_PERCENT);
    }
  }
  if (space.files != 0 && space.files_free < percent_of(space.files, KERNEL_CULL_PERCENT)) {
    goal.objects = percent_of(space.files, KERNEL_RUN_PERCENT) - space.files_free;
    if (goal.why.empty())
      goal.why = fmt::format("cache_dir's file system has {} free inodes, below the kernel's cull threshold ({}% of {})",
                             space.files_free, KERNEL_CULL_PERCENT, space.files);
  }
  return goal;
}

CacheScan scan_cache(const std::string& cache_dir, bool with_objects) {
  CacheScan scan;
  struct statfs sf{};
  if (auto r = sys::statfs(cache_dir.c_str(), &sf); !r.ok()) {
    scan.err = r.err;
    return scan;
  }
  const auto block = static_cast<std::uint64_t>(sf.f_frsize ? sf.f_frsize : sf.f_bsize);
  scan.space = {block, sf.f_blocks, sf.f_bavail, sf.f_files, sf.f_ffree};

  // The kernel buries directories there (namei.c cachefiles_bury_object)
  // and leaves deleting them to the daemon.
  std::error_code ec;
  for (fs::directory_iterator it(fs::path(cache_dir) / "graveyard", ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code rm;
    if (fs::remove_all(it->path(), rm) > 0 && !rm) ++scan.graveyard_removed;
  }
  if (!with_objects) return scan;

  // <cache_dir>/cache/I<volume>/@<fan-out>/<object>: depths 1, 2, 3, 4.
  const fs::path store = fs::path(cache_dir) / "cache";
  struct Volume {
    CacheObject entry;
    std::size_t objects = 0;
  };
  std::vector<Volume> volumes;
  bool in_volume = false;  // the walk is depth-first: below the last volume seen
  walk(cache_dir, 0, [&](const fs::path& path, const struct stat& st, int depth) {
    const auto bytes = static_cast<std::uint64_t>(st.st_blocks) * 512;
    const auto last_use = std::max(ns_of(st.st_atim), ns_of(st.st_mtim));
    scan.used_bytes += bytes;
    if (depth <= 2) in_volume = false;
    if (depth == 2 && S_ISDIR(st.st_mode) && path.parent_path() == store) {
      volumes.push_back({{store.string(), path.filename().string(), 0, last_use}, 0});
      in_volume = true;
    }
    if (!in_volume || depth < 2) return;
    auto& volume = volumes.back();
    volume.entry.bytes += bytes;
    if (depth != 4 || !S_ISREG(st.st_mode)) return;
    ++volume.objects;
    scan.objects.push_back({path.parent_path().string(), path.filename().string(), bytes, last_use});
  });
  auto lru = [](const CacheObject& a, const CacheObject& b) {
    return a.last_use_ns != b.last_use_ns ? a.last_use_ns < b.last_use_ns : a.name < b.name;
  };
  std::sort(scan.objects.begin(), scan.objects.end(), lru);
  for (auto& v : volumes)
    if (v.objects == 0) scan.empty_volumes.push_back(std::move(v.entry));
  std::sort(scan.empty_volumes.begin(), scan.empty_volumes.end(), lru);
  return scan;
}

std::vector<CacheObject> cull_candidates(CacheScan& scan) {
  std::vector<CacheObject> out = std::move(scan.empty_volumes);
  out.insert(out.end(), std::make_move_iterator(scan.objects.begin()), std::make_move_iterator(scan.objects.end()));
  scan.objects.clear();
  return out;
}

// ---- the device commands ----

DeviceCullCommands::DeviceCullCommands(int device_fd, std::string tag)
    : device_fd_(device_fd), tag_(std::move(tag)) {
  auto home = sys::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (!home.fd)
    throw std::runtime_error(fmt::format("culler: cannot open the working directory: {}", sys::errno_name(home.err)));
  home_ = std::move(home.fd);
}

int DeviceCullCommands::in_dir(const std::string& dir, const std::string& command) {
  auto d = sys::open(dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (!d.fd) return d.err;
  if (auto r = sys::fchdir(d.fd.get()); !r.ok()) return r.err;
  const auto written = sys::write_command(device_fd_, command);
  if (auto back = sys::fchdir(home_.get()); !back.ok()) {
    // Nothing in the worker uses relative paths, but a worker left in a
    // cache directory is not one to keep running: restart is cheap.
    spdlog::critical("culler: cannot return to the working directory: {}", sys::errno_name(back.err));
    std::abort();
  }
  return written.ok() ? 0 : written.err;
}

int DeviceCullCommands::inuse(const std::string& dir, const std::string& name) {
  return in_dir(dir, "inuse " + name);
}

int DeviceCullCommands::cull(const std::string& dir, const std::string& name) {
  return in_dir(dir, "cull " + name);
}

int DeviceCullCommands::probe() {
  const auto r = sys::write_command(device_fd_, "tag " + tag_);
  if (r.ok() || r.err == EEXIST) return 0;  // EEXIST: bound, tag set, alive
  return r.err;
}

// ---- one pass ----

void cull_some(CullCommands& commands, std::span<const CacheObject> victims, std::size_t& next,
               const CullGoal& goal, std::size_t limit, PassResult& result) {
  auto met = [&] { return result.culled_bytes >= goal.bytes && result.culled >= goal.objects; };
  // An EIO can also be an internal error of one lookup (namei.c
  // cachefiles_lookup_for_cull); the cache is dead only if the probe agrees.
  auto unknown = [&](int err) {
    ++result.unknown;
    if (err == EIO && commands.probe() == EIO) result.dead = true;
  };
  result.reached = met();
  for (; next < victims.size() && limit > 0 && !result.reached && !result.dead; ++next, --limit) {
    const auto& v = victims[next];
    if (!commandable_name(v.name)) {
      ++result.unknown;
      continue;
    }
    const int use = commands.inuse(v.dir, v.name);
    if (use == EBUSY) {
      ++result.busy;
      continue;
    }
    if (use != 0) {
      spdlog::debug("cull: inuse {}/{}: {}: skipped", v.dir, v.name, sys::errno_name(use));
      unknown(use);
      continue;
    }
    const int rc = commands.cull(v.dir, v.name);
    if (rc == 0) {
      ++result.culled;
      result.culled_bytes += v.bytes;
      spdlog::debug("cull: removed {}/{} ({} bytes)", v.dir, v.name, v.bytes);
    } else if (rc == EBUSY) {
      ++result.busy;  // opened since inuse answered
    } else {
      spdlog::debug("cull: cull {}/{}: {}", v.dir, v.name, sys::errno_name(rc));
      unknown(rc);
    }
    result.reached = met();
  }
}

// ---- the periodic culler ----

Culler::Culler(asio::io_context& loop, CullCommands& commands, CullerOptions options,
               proto::WorkerCounters& counters)
    : loop_(loop), commands_(commands), options_(std::move(options)), counters_(counters), timer_(loop) {}

Culler::~Culler() {
  alive_.reset();
  scan_pool_.join();
}

void Culler::start() {
  if (dead_ || running_) return;
  running_ = true;
  if (!busy_) arm(std::chrono::milliseconds{0});
}

void Culler::stop() {
  running_ = false;
  timer_.cancel();
}

void Culler::arm(std::chrono::milliseconds after) {
  timer_.expires_after(after);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec && running_ && !busy_) tick();
  });
}

void Culler::tick() {
  if (int err = commands_.probe(); err == EIO) {
    result_ = {};
    result_.dead = true;
    return finish_pass();
  }
  if (!options_.cull) return arm(options_.interval);
  busy_ = true;
  asio::post(scan_pool_, [this, alive = std::weak_ptr<int>(alive_), dir = options_.cache_dir,
                          policy = options_.policy] {
    // Without a limit of ours, the walk is needed only below the kernel's
    // threshold.
    auto scan = scan_cache(dir, policy.max_bytes != 0);
    if (!scan.err && policy.max_bytes == 0 && cull_goal(policy, 0, scan.space).needed())
      scan = scan_cache(dir, true);
    asio::post(loop_, [this, alive, scan = std::move(scan)]() mutable {
      if (!alive.expired()) on_scan(std::move(scan));
    });
  });
}

void Culler::on_scan(CacheScan scan) {
  if (scan.graveyard_removed)
    spdlog::info("cull: removed {} entries from {}/graveyard", scan.graveyard_removed, options_.cache_dir);
  if (!running_) {
    busy_ = false;
    return;
  }
  if (scan.err) {
    if (!warned_stuck_) spdlog::warn("cull: statfs on {}: {}", options_.cache_dir, sys::errno_name(scan.err));
    warned_stuck_ = true;
    busy_ = false;
    return arm(options_.interval);
  }
  goal_ = cull_goal(options_.policy, scan.used_bytes, scan.space);
  if (!goal_.needed()) {
    busy_ = false;
    warned_stuck_ = false;
    return arm(options_.interval);
  }
  counters_.cull_passes.fetch_add(1, std::memory_order_relaxed);
  if (!warned_stuck_)
    spdlog::info("cull: {} ({} objects, {} empty volumes)", goal_.why, scan.objects.size(), scan.empty_volumes.size());
  victims_ = cull_candidates(scan);
  next_ = 0;
  result_ = {};
  used_before_ = scan.used_bytes;
  continue_pass();
}

void Culler::continue_pass() {
  if (running_) cull_some(commands_, victims_, next_, goal_, CULL_BATCH, result_);
  if (running_ && !result_.reached && !result_.dead && next_ < victims_.size()) {
    asio::post(loop_, [this, alive = std::weak_ptr<int>(alive_)] {
      if (!alive.expired()) continue_pass();
    });
    return;
  }
  finish_pass();
}

void Culler::finish_pass() {
  counters_.culled_objects.fetch_add(result_.culled, std::memory_order_relaxed);
  counters_.culled_bytes.fetch_add(result_.culled_bytes, std::memory_order_relaxed);
  counters_.cull_skipped_busy.fetch_add(result_.busy, std::memory_order_relaxed);
  counters_.cull_skipped_unknown.fetch_add(result_.unknown, std::memory_order_relaxed);
  busy_ = false;
  victims_.clear();
  if (result_.dead) {
    dead_ = true;
    running_ = false;
    counters_.cache_dead.store(1, std::memory_order_relaxed);
    spdlog::critical(
        "the cache in {} is DEAD: cachefiles stopped it after an I/O error on its file system (the kernel log "
        "says \"CacheFiles: I/O Error\"), and every read that needs the cache now fails. To recover: unmount "
        "the EROFS mounts on it, stop the service (that unbinds the cache), repair cache_dir's file system "
        "(fsck), start the service again",
        options_.cache_dir);
    if (on_dead_) on_dead_();
    return;
  }
  if (result_.culled != 0 || result_.reached) {
    spdlog::info("cull: removed {} objects ({:.1f} MiB); skipped {} in use, {} of unknown use; cache ~{:.1f} MiB",
                 result_.culled, mib(result_.culled_bytes), result_.busy, result_.unknown,
                 mib(used_before_ - std::min(used_before_, result_.culled_bytes)));
  }
  if (result_.reached) {
    warned_stuck_ = false;
  } else if (!warned_stuck_) {
    spdlog::warn("cull: cannot get below the limit: {} objects in use, {} of unknown use (never culled); "
                 "trying again every {} ms",
                 result_.busy, result_.unknown, options_.interval.count());
    warned_stuck_ = true;
  }
  // A pass that culled goes on at once: buried volumes hold their space and
  // inodes until the next scan empties the graveyard.
  if (running_) arm(result_.culled != 0 ? std::chrono::milliseconds{0} : options_.interval);
}

}  // namespace ondemand::worker
