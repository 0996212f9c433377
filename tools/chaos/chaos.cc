#include "tools/chaos/chaos.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdio>
#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include "config/config.h"
#include "common/shared_state.h"
#include "common/sys.h"
#include "proto/control.h"
#include "tools/ctl/ctl.h"

namespace ondemand::chaos {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {


double ns_to_ms(std::uint64_t ns) { return static_cast<double>(ns) / 1e6; }

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw std::runtime_error("cannot read " + p.string());
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Shared tallies of one run. Readers update them concurrently.
struct Tally {
  std::atomic<std::uint64_t> files{0}, bytes{0}, symlinks{0};
  std::atomic<std::uint64_t> read_errors{0}, mismatches{0}, mount_errors{0};
  std::atomic<std::uint64_t> missing_ok{0}, missing_unexpected{0};
  std::atomic<std::uint64_t> longest_stall_ns{0};
  std::mutex gaps_mutex;
  std::vector<std::uint32_t> gaps_us;  // every read gap, for the normal latency
  FILE* stall_log = nullptr;
  std::uint64_t stall_log_ns = 0;
  std::mutex first_error_mutex;
  std::string first_error;
  void error(std::atomic<std::uint64_t>& counter, std::string what) {
    counter.fetch_add(1);
    std::lock_guard lock(first_error_mutex);
    spdlog::error("{}", what);
    if (first_error.empty()) first_error = std::move(what);
  }
  void stall(std::uint64_t ns) {
    {
      std::lock_guard lock(gaps_mutex);
      gaps_us.push_back(static_cast<std::uint32_t>(std::min<std::uint64_t>(ns / 1000, UINT32_MAX)));
      if (stall_log && ns >= stall_log_ns) {
        timespec ts{};
        ::clock_gettime(CLOCK_BOOTTIME, &ts);
        std::fprintf(stall_log, "%ld.%03ld %.3f\n", static_cast<long>(ts.tv_sec), ts.tv_nsec / 1'000'000L,
                     static_cast<double>(ns) / 1e6);
        std::fflush(stall_log);
      }
    }
    auto cur = longest_stall_ns.load();
    while (ns > cur && !longest_stall_ns.compare_exchange_weak(cur, ns)) {
    }
  }
};

// Reads one file in 128 KiB pieces, hashing as it goes; records the longest
// gap between two completed read() calls as a reader stall.
void verify_file(const fs::path& path, const std::string& want, Tally& tally) {
  std::uint64_t last = sys::monotonic_ns();
  auto opened = sys::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (!opened.fd) return tally.error(tally.read_errors, fmt::format("open {}: {}", path.string(), sys::errno_name(opened.err)));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  static thread_local std::vector<char> buf(128 * 1024);
  std::uint64_t total = 0;
  for (;;) {
    auto r = sys::read(opened.fd.get(), buf.data(), buf.size());
    const auto t = sys::monotonic_ns();
    tally.stall(t - last);
    last = t;
    if (!r.ok())
      return tally.error(tally.read_errors, fmt::format("read {} at {}: {}", path.string(), total, sys::errno_name(r.err)));
    if (r.rc == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<std::size_t>(r.rc));
    total += static_cast<std::uint64_t>(r.rc);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  std::string hex;
  for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  if (hex != want) return tally.error(tally.mismatches, fmt::format("SHA-256 mismatch: {}", path.string()));
  tally.files.fetch_add(1);
  tally.bytes.fetch_add(total);
}

void verify_symlink(const fs::path& path, const std::string& want, Tally& tally) {
  std::error_code ec;
  auto target = fs::read_symlink(path, ec);
  if (ec) return tally.error(tally.read_errors, fmt::format("readlink {}: {}", path.string(), ec.message()));
  if (target.string() != want) return tally.error(tally.mismatches, fmt::format("symlink target mismatch: {}", path.string()));
  tally.symlinks.fetch_add(1);
}

struct Shared {
  SharedStateMapping shm;
  fs::path state_dir;
};

// The timings of the kills that found the spare in one state.
struct SplitStats {
  unsigned kills = 0, promoted = 0;
  std::vector<double> serving_ms;      // kill -> new worker serving
  std::vector<double> recovery_ms;     // kill -> first request completed
  std::vector<double> reading_ms;      // kill -> new worker starts reading (before its restore)
  std::vector<double> first_reply_ms;  // that -> first request completed
};

struct KillStats {
  unsigned kills = 0, proven = 0, recovery_unobserved = 0;
  std::array<SplitStats, 4> by_spare;  // indexed by SpareAtKill
  // Kills that came while the worker was writing fill-ahead no READ waited
  // for (the shared memory's gauge, read just before the kill): the windows
  // it leaves half written must cost readers nothing.
  unsigned during_fill_ahead = 0;
  std::vector<double> recovery_ms;  // kill -> first request completed by the new worker
  std::vector<double> serving_ms;   // kill -> new worker serving
  std::string first_unproven;
};

FailoverSnapshot failover_snapshot(const proto::SharedState& st) {
  return {st.failover.spare_ready.load(), st.failover.spare_starting.load(), st.failover.no_spare.load(),
          st.failover.promoted.load()};
}

bool wait_until(std::chrono::milliseconds limit, const std::function<bool()>& cond) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(200us);
  }
  return true;
}

void killer(const Options& o, Shared& shared, std::atomic<bool>& done, KillStats& stats) {
  auto& st = shared.shm.state();
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<unsigned> interval(o.kill_min_ms, o.kill_max_ms);
  // Generations count every worker started (spares too), so "the worker
  // serving now" is the one whose serving_generation is newer than the last
  // one killed.
  std::uint64_t last_killed = 0;
  while (!done) {
    // Only a serving worker is killed: that is the worker whose death must
    // be invisible, and it makes "one restore per kill" an exact proof.
    auto serving = [&] {
      return st.worker_state.load() == static_cast<std::uint64_t>(proto::WorkerState::RUNNING) &&
             st.serving_generation.load() > last_killed;
    };
    if (!wait_until(30s, serving)) {
      stats.first_unproven = "no serving worker for 30 s";
      ++stats.kills;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(interval(rng)));
    if (done) break;
    const auto gen = st.serving_generation.load();
    const auto pid = static_cast<pid_t>(st.worker_pid.load());
    const auto restores = st.counters.restores.load();
    if (!serving() || st.serving_generation.load() != gen) continue;
    const bool filling_ahead = st.fill.fill_ahead_running.load() > 0;
    const auto failovers_before = failover_snapshot(st);
    const auto t_kill = sys::monotonic_ns();
    if (::kill(pid, SIGKILL) < 0) continue;
    ++stats.kills;
    if (filling_ahead) ++stats.during_fill_ahead;
    last_killed = gen;
    const bool up = wait_until(30s, [&] { return st.serving_generation.load() > gen; });
    const auto t_serving = sys::monotonic_ns();
    const auto failovers_after = failover_snapshot(st);
    const auto spare = classify_failover(failovers_before, failovers_after);
    auto& split = stats.by_spare[static_cast<std::size_t>(spare)];
    ++split.kills;
    if (spare != SpareAtKill::UNKNOWN && failovers_after.promoted == failovers_before.promoted + 1) ++split.promoted;
    // The worker's own note of when it started reading; a worker that does
    // not write it (an older one, the fanotify front end) leaves it older
    // than the kill.
    const auto t_reading = st.failover.serving_ns.load();
    const bool reading_known = up && t_reading > t_kill && t_reading <= t_serving;
    const auto new_pid = static_cast<pid_t>(st.worker_pid.load());
    const auto restores_after = st.counters.restores.load();
    std::string file_pid;
    try {
      file_pid = read_file(shared.state_dir / "worker.pid");
    } catch (const std::exception&) {
    }
    const bool pid_changed = new_pid != pid && std::atoi(file_pid.c_str()) == new_pid;
    if (up && pid_changed && restores_after == restores + 1) {
      ++stats.proven;
      stats.serving_ms.push_back(ns_to_ms(t_serving - t_kill));
      split.serving_ms.push_back(ns_to_ms(t_serving - t_kill));
    } else if (stats.first_unproven.empty()) {
      stats.first_unproven = fmt::format(
          "kill #{} of pid {} (generation {}): serving again={} pid changed={} (now {}) restores {} -> {}",
          stats.kills, pid, gen, up, pid_changed, new_pid, restores, restores_after);
    }
    const bool replied = wait_until(5s, [&] { return st.counters.first_reply_ns.load() > t_kill; });
    if (reading_known) split.reading_ms.push_back(ns_to_ms(t_reading - t_kill));
    if (replied) {
      const auto t_reply = st.counters.first_reply_ns.load();
      stats.recovery_ms.push_back(ns_to_ms(t_reply - t_kill));
      split.recovery_ms.push_back(ns_to_ms(t_reply - t_kill));
      if (reading_known && t_reply >= t_reading) split.first_reply_ms.push_back(ns_to_ms(t_reply - t_reading));
    } else
      ++stats.recovery_unobserved;  // readers idle (between rounds): nothing to complete
  }
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto idx = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(idx, v.size() - 1)];
}

// p50/p99/max and the sample count; null figures without samples (a 0
// would read as a measurement).
nlohmann::json summary(const std::vector<double>& v) {
  if (v.empty()) return {{"p50", nullptr}, {"p99", nullptr}, {"max", nullptr}, {"samples", 0}};
  return {{"p50", percentile(v, 0.50)}, {"p99", percentile(v, 0.99)}, {"max", percentile(v, 1.0)},
          {"samples", v.size()}};
}

nlohmann::json split_report(const KillStats& kills) {
  nlohmann::json out = nlohmann::json::object();
  std::vector<double> reading, first_reply;
  for (auto s : {SpareAtKill::READY, SpareAtKill::STARTING, SpareAtKill::NONE, SpareAtKill::UNKNOWN}) {
    const auto& split = kills.by_spare[static_cast<std::size_t>(s)];
    out[to_string(s)] = {{"kills", split.kills},
                         {"promoted", split.promoted},
                         {"kill_to_serving_ms", summary(split.serving_ms)},
                         {"recovery_ms", summary(split.recovery_ms)},
                         {"kill_to_reading_ms", summary(split.reading_ms)},
                         {"reading_to_first_reply_ms", summary(split.first_reply_ms)}};
  }
  return out;
}

nlohmann::json phase_report(const KillStats& kills, std::vector<double> SplitStats::*field) {
  std::vector<double> all;
  for (const auto& split : kills.by_spare) all.insert(all.end(), (split.*field).begin(), (split.*field).end());
  return summary(all);
}

// A registry image's fresh id: bound through the control socket, as an
// operator would with `ondemandctl bind`. "" or why not.
std::string control_call(const Config& config, const proto::ControlRequest& request) {
  auto result = ctl::call(config.state_dir / std::string(proto::CONTROL_SOCKET_NAME), request, 10s);
  if (!result.reply) return result.error.empty() ? "no reply" : result.error;
  if (const auto* error = std::get_if<proto::control::Error>(&*result.reply)) return error->error;
  return "";
}

void run_round(const Options& o, const Config& config, unsigned round, Tally& tally,
               const std::vector<std::vector<ManifestEntry>>& manifests) {
  struct Mounted {
    fs::path mnt;
    fs::path link;     // the hard link in blob_dir, or empty
    std::string bound;  // the id bound for this round, or empty
    std::string volume_id;
    const std::vector<ManifestEntry>* entries;
  };
  std::vector<Mounted> mounted;
  for (std::size_t i = 0; i < o.images.size(); ++i) {
    const auto fsid = fmt::format("{}.c{}", o.images[i].name, round);
    std::error_code ec;
    fs::path link;
    std::string bound;
    if (const auto& source = o.images[i].registry) {
      const auto error =
          control_call(config, proto::control::Bind{fsid, source->registry, source->repository, source->digest, {}});
      if (!error.empty()) throw std::runtime_error(fmt::format("bind {}: {}", fsid, error));
      bound = fsid;
    } else {
      link = config.blob_dir / fsid;
      fs::remove(link, ec);
      fs::create_hard_link(config.blob_dir / o.images[i].name, link, ec);
      if (ec) throw std::runtime_error(fmt::format("hard link {}: {}", link.string(), ec.message()));
    }
    auto forget = [&] {
      if (!link.empty()) fs::remove(link, ec);
      if (!bound.empty()) {
        const auto error = control_call(config, proto::control::Unbind{bound});
        if (!error.empty()) spdlog::warn("unbind {}: {}", bound, error);
      }
    };
    const auto mnt = o.mount_root / fsid;
    fs::create_directories(mnt);
    const auto opts = fmt::format("fsid={}", fsid);
    if (::mount("none", mnt.c_str(), "erofs", MS_RDONLY, opts.c_str()) < 0) {
      tally.error(tally.mount_errors, fmt::format("mount fsid={}: {}", fsid, sys::errno_name(errno)));
      forget();
      continue;
    }
    mounted.push_back({mnt, link, bound, fsid, &manifests[i]});
  }
  if (o.missing_blob) {
    const auto fsid = fmt::format("missing.c{}", round);
    const auto mnt = o.mount_root / fsid;
    fs::create_directories(mnt);
    const auto opts = fmt::format("fsid={}", fsid);
    if (::mount("none", mnt.c_str(), "erofs", MS_RDONLY, opts.c_str()) == 0) {
      tally.error(tally.missing_unexpected, fmt::format("mount of missing blob {} succeeded", fsid));
      ::umount2(mnt.c_str(), 0);
    } else {
      tally.missing_ok.fetch_add(1);
    }
  }
  // One queue of work items over all mounted images; readers pull from it.
  std::vector<std::pair<const Mounted*, const ManifestEntry*>> work;
  for (const auto& m : mounted)
    for (const auto& e : *m.entries)
      if (e.kind != ManifestEntry::DIR) work.emplace_back(&m, &e);
  std::shuffle(work.begin(), work.end(), std::mt19937_64(o.seed + round));
  std::atomic<std::size_t> next{0};
  std::vector<std::thread> threads;
  for (unsigned r = 0; r < o.readers; ++r)
    threads.emplace_back([&] {
      for (std::size_t i; (i = next.fetch_add(1)) < work.size();) {
        const auto& [m, e] = work[i];
        const auto path = m->mnt / e->path;
        if (e->kind == ManifestEntry::FILE)
          verify_file(path, e->sha256_or_target, tally);
        else
          verify_symlink(path, e->sha256_or_target, tally);
      }
    });
  for (auto& t : threads) t.join();
  for (const auto& m : mounted) {
    if (::umount2(m.mnt.c_str(), 0) < 0) {
      tally.error(tally.mount_errors, fmt::format("umount {}: {}", m.mnt.string(), sys::errno_name(errno)));
      continue;
    }
    std::error_code ec;
    if (!m.link.empty()) fs::remove(m.link, ec);
    if (!m.bound.empty()) {
      const auto error = control_call(config, proto::control::Unbind{m.bound});
      if (!error.empty()) spdlog::warn("unbind {}: {}", m.bound, error);
    }
    // Every round adds a whole image to the cache and nothing culls in
    // on-demand mode: drop the unmounted volume ("I" + volume key
    // "erofs,<fsid>") or a long run fills cache_dir and cachefiles refuses
    // writes with ENOBUFS.
    const auto volume = config.cache_dir / "cache" / ("Ierofs," + m.volume_id);
    fs::remove_all(volume, ec);
    if (ec) spdlog::warn("cannot remove cache volume {}: {}", volume.string(), ec.message());
  }
}

nlohmann::json read_gap_summary(Tally& tally) {
  std::lock_guard lock(tally.gaps_mutex);
  std::vector<double> ms;
  ms.reserve(tally.gaps_us.size());
  for (auto us : tally.gaps_us) ms.push_back(us / 1000.0);
  return {{"p50", percentile(ms, 0.50)}, {"p99", percentile(ms, 0.99)}, {"count", ms.size()}};
}

}  // namespace

SpareAtKill classify_failover(const FailoverSnapshot& before, const FailoverSnapshot& after) {
  const auto grew = [](std::uint64_t a, std::uint64_t b) { return b == a + 1 ? 1 : b == a ? 0 : 2; };
  const int ready = grew(before.spare_ready, after.spare_ready);
  const int starting = grew(before.spare_starting, after.spare_starting);
  const int none = grew(before.no_spare, after.no_spare);
  if (ready + starting + none != 1) return SpareAtKill::UNKNOWN;
  return ready ? SpareAtKill::READY : starting ? SpareAtKill::STARTING : SpareAtKill::NONE;
}

const char* to_string(SpareAtKill s) {
  switch (s) {
    case SpareAtKill::READY: return "ready";
    case SpareAtKill::STARTING: return "starting";
    case SpareAtKill::NONE: return "none";
    case SpareAtKill::UNKNOWN: break;
  }
  return "unknown";
}

Image parse_registry_image(const std::string& spec) {
  const auto why = [&] { return "--registry-image wants NAME=MANIFEST,REGISTRY,REPOSITORY,DIGEST, got " + spec; };
  const auto eq = spec.find('=');
  if (eq == std::string::npos || eq == 0) throw std::runtime_error(why());
  std::vector<std::string> parts;
  std::stringstream rest(spec.substr(eq + 1));
  for (std::string part; std::getline(rest, part, ',');) parts.push_back(part);
  if (parts.size() != 4 || std::any_of(parts.begin(), parts.end(), [](const auto& p) { return p.empty(); }))
    throw std::runtime_error(why());
  return {spec.substr(0, eq), parts[0], RegistrySource{parts[1], parts[2], parts[3]}};
}

std::vector<ManifestEntry> parse_manifest(const std::string& text) {
  std::vector<ManifestEntry> out;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    std::istringstream words(line);
    std::string a, b, c;
    words >> a >> b >> c;
    if (a == "symlink" && !b.empty() && !c.empty())
      out.push_back({ManifestEntry::SYMLINK, b, c});
    else if (a == "dir" && !b.empty())
      out.push_back({ManifestEntry::DIR, b, ""});
    else if (a.size() == 64 && !b.empty() && c.empty())
      out.push_back({ManifestEntry::FILE, b, a});
    else
      throw std::runtime_error(fmt::format("manifest line {}: cannot parse \"{}\"", n, line));
  }
  return out;
}

namespace {
std::string sha256_hex_of(const fs::path& path) {
  auto opened = sys::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (!opened.fd) throw std::runtime_error(fmt::format("open {}: {}", path.string(), sys::errno_name(opened.err)));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  for (;;) {
    auto r = sys::read(opened.fd.get(), buf.data(), buf.size());
    if (!r.ok()) throw std::runtime_error(fmt::format("read {}: {}", path.string(), sys::errno_name(r.err)));
    if (r.rc == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<std::size_t>(r.rc));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  std::string hex;
  for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

// The manifest format splits lines on whitespace.
bool manifest_safe(std::string_view path) {
  return !path.empty() && std::none_of(path.begin(), path.end(), [](unsigned char c) {
    return c <= ' ' || c == 0x7f;
  });
}
}  // namespace

std::string make_manifest(const fs::path& root) {
  if (!fs::is_directory(root)) throw std::runtime_error(fmt::format("{} is not a directory", root.string()));
  std::vector<std::string> lines;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    // lexically: fs::relative() would resolve a symlink to its target.
    const auto rel = it->path().lexically_relative(root).string();
    if (!manifest_safe(rel))
      throw std::runtime_error(fmt::format(
          "\"{}\": the manifest format cannot hold a path with whitespace or control characters", rel));
    const auto status = it->symlink_status();
    if (fs::is_symlink(status)) {
      const auto target = fs::read_symlink(it->path()).string();
      if (!manifest_safe(target))
        throw std::runtime_error(fmt::format("symlink \"{}\": its target has whitespace or control characters", rel));
      lines.push_back(fmt::format("symlink {} {}", rel, target));
    } else if (fs::is_directory(status)) {
      lines.push_back("dir " + rel);
    } else if (fs::is_regular_file(status)) {
      lines.push_back(fmt::format("{}  {}", sha256_hex_of(it->path()), rel));
    } else {
      throw std::runtime_error(fmt::format("\"{}\" is neither a file, a directory nor a symlink", rel));
    }
  }
  // Sorted bytewise by path, like gen-tree.py (the path is the last word of
  // a file line, the second of the others).
  auto path_of = [](const std::string& line) {
    if (line.starts_with("dir ")) return std::string_view(line).substr(4);
    if (line.starts_with("symlink ")) {
      auto rest = std::string_view(line).substr(8);
      return rest.substr(0, rest.find(' '));
    }
    return std::string_view(line).substr(66);
  };
  std::sort(lines.begin(), lines.end(), [&](const auto& a, const auto& b) { return path_of(a) < path_of(b); });
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

nlohmann::json run(const Options& o) {
  const auto config = load_config(o.config);
  // A missing segment means no supervisor has run with this tag since boot.
  if (!fs::exists(fs::path("/dev/shm") / shm_name_for_tag(config.tag)))
    throw std::runtime_error(fmt::format(
        "no supervisor is running for {} (no shared memory /dev/shm/{}): start ondemand-supervisor --config {} first",
        o.config.string(), shm_name_for_tag(config.tag), o.config.string()));
  Shared shared{SharedStateMapping::attach(shm_name_for_tag(config.tag)), config.state_dir};
  auto& st = shared.shm.state();
  std::vector<std::vector<ManifestEntry>> manifests;
  for (const auto& image : o.images) manifests.push_back(parse_manifest(read_file(image.manifest)));

  const auto restarts0 = st.restarts.load();
  const auto restores0 = st.counters.restores.load();
  const auto hangs0 = st.hangs_detected.load();
  Tally tally;
  std::unique_ptr<FILE, decltype(&std::fclose)> stall_log(nullptr, &std::fclose);
  if (!o.stall_log.empty()) {
    stall_log.reset(std::fopen(o.stall_log.c_str(), "w"));
    if (!stall_log) throw std::runtime_error("cannot write " + o.stall_log.string());
    tally.stall_log = stall_log.get();
    tally.stall_log_ns = std::uint64_t{o.stall_log_ms} * 1'000'000;
  }
  KillStats kills;
  std::atomic<bool> done{false};
  std::atomic<bool> killer_gave_up{false};
  std::thread killer_thread;
  if (o.kill)
    killer_thread = std::thread([&] {
      killer(o, shared, done, kills);
      killer_gave_up = !done;  // it only returns early when no worker serves
    });

  const auto t0 = std::chrono::steady_clock::now();
  unsigned round = 0;
  auto more = [&] {
    if (round < o.rounds) return true;
    if (killer_gave_up) return false;
    if (o.kill && kills.kills < o.min_kills) return true;
    std::error_code ec;
    return !o.until_file.empty() && !fs::exists(o.until_file, ec);
  };
  while (more()) {
    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(o.max_seconds)) {
      spdlog::warn("time limit of {} s reached after {} rounds", o.max_seconds, round);
      break;
    }
    run_round(o, config, round, tally, manifests);
    ++round;
    spdlog::info("round {} done: {} files, {} bytes verified, {} kills so far", round,
                 tally.files.load(), tally.bytes.load(), kills.kills);
  }
  done = true;
  if (killer_thread.joinable()) killer_thread.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  nlohmann::json report = {
      {"rounds", round},
      {"seconds", seconds},
      {"kills", kills.kills},
      {"failover_proven", kills.proven},
      {"kills_during_fill_ahead", kills.during_fill_ahead},
      {"files_verified", tally.files.load()},
      {"symlinks_verified", tally.symlinks.load()},
      {"bytes_verified", tally.bytes.load()},
      {"read_errors", tally.read_errors.load()},
      {"mismatches", tally.mismatches.load()},
      {"mount_errors", tally.mount_errors.load()},
      {"longest_reader_stall_ms", ns_to_ms(tally.longest_stall_ns.load())},
      {"read_gap_ms", read_gap_summary(tally)},
      {"recovery_ms",
       {{"p50", percentile(kills.recovery_ms, 0.50)},
        {"p99", percentile(kills.recovery_ms, 0.99)},
        {"max", percentile(kills.recovery_ms, 1.0)},
        {"samples", kills.recovery_ms.size()},
        {"unobserved", kills.recovery_unobserved}}},
      {"kill_to_serving_ms",
       {{"p50", percentile(kills.serving_ms, 0.50)},
        {"p99", percentile(kills.serving_ms, 0.99)},
        {"max", percentile(kills.serving_ms, 1.0)}}},
      // Where recovery_ms goes: reaching a worker that reads the device,
      // then its first reply; and every timing by the spare's state.
      {"kill_to_reading_ms", phase_report(kills, &SplitStats::reading_ms)},
      {"reading_to_first_reply_ms", phase_report(kills, &SplitStats::first_reply_ms)},
      {"by_spare", split_report(kills)},
      {"restarts", st.restarts.load() - restarts0},
      {"restores", st.counters.restores.load() - restores0},
      {"hangs_detected", st.hangs_detected.load() - hangs0},
  };
  if (o.missing_blob) {
    report["missing_blob_refused"] = tally.missing_ok.load();
    report["missing_blob_mounted"] = tally.missing_unexpected.load();
  }
  if (!tally.first_error.empty()) report["first_error"] = tally.first_error;
  if (!kills.first_unproven.empty()) report["first_unproven"] = kills.first_unproven;
  return report;
}

bool report_ok(const nlohmann::json& r, const Options& o) {
  bool ok = r["read_errors"] == 0 && r["mismatches"] == 0 && r["mount_errors"] == 0 &&
            r["kills"] == r["failover_proven"] && r["kills"].get<unsigned>() >= o.min_kills &&
            r["rounds"].get<unsigned>() >= o.rounds && r["files_verified"].get<std::uint64_t>() > 0;
  if (o.missing_blob) ok = ok && r["missing_blob_mounted"] == 0;
  return ok;
}

namespace {

std::string field(const nlohmann::json& j, std::initializer_list<const char*> path, const char* fmt_spec) {
  const nlohmann::json* at = &j;
  for (const char* key : path) {
    if (!at->is_object() || !at->contains(key)) return "-";
    at = &(*at)[key];
  }
  if (!at->is_number()) return "-";
  return fmt::format(fmt::runtime(fmt_spec), at->get<double>());
}

}  // namespace

std::string format_report(const nlohmann::json& r) {
  std::string out;
  out += fmt::format("kills {}, every failover proven: {} (new pid, one more restore); {} rounds\n",
                     field(r, {"kills"}, "{:.0f}"), field(r, {"failover_proven"}, "{:.0f}"),
                     field(r, {"rounds"}, "{:.0f}"));
  out += fmt::format("{} of the kills came while the worker was filling ahead\n",
                     field(r, {"kills_during_fill_ahead"}, "{:.0f}"));
  out += fmt::format("verified {} files, {} MiB: {} read errors, {} mismatches\n", field(r, {"files_verified"}, "{:.0f}"),
                     r.contains("bytes_verified") && r["bytes_verified"].is_number()
                         ? fmt::format("{:.1f}", r["bytes_verified"].get<double>() / (1024.0 * 1024.0))
                         : std::string("-"),
                     field(r, {"read_errors"}, "{:.0f}"), field(r, {"mismatches"}, "{:.0f}"));
  out += "\n";
  out += fmt::format("  {:<40} {:>8} {:>8} {:>8} {:>8}\n", "after a kill -9", "samples", "p50 ms", "p99 ms", "max ms");
  out += fmt::format("  {:<40} {:>8} {:>8} {:>8} {:>8}\n", "  a new worker serves", field(r, {"failover_proven"}, "{:.0f}"),
                     field(r, {"kill_to_serving_ms", "p50"}, "{:.1f}"), field(r, {"kill_to_serving_ms", "p99"}, "{:.1f}"),
                     field(r, {"kill_to_serving_ms", "max"}, "{:.1f}"));
  out += fmt::format("  {:<40} {:>8} {:>8} {:>8} {:>8}\n", "  a reader's request is answered",
                     field(r, {"recovery_ms", "samples"}, "{:.0f}"), field(r, {"recovery_ms", "p50"}, "{:.1f}"),
                     field(r, {"recovery_ms", "p99"}, "{:.1f}"), field(r, {"recovery_ms", "max"}, "{:.1f}"));
  out += fmt::format("  {:<40} {:>8} {:>8} {:>8} {:>8}\n", "longest wait of one reader's read()", "", "", "",
                     field(r, {"longest_reader_stall_ms"}, "{:.1f}"));
  const auto row = [&](const char* what, const char* cls, const char* key) {
    return fmt::format("  {:<40} {:>8} {:>8} {:>8} {:>8}\n", what, field(r, {"by_spare", cls, key, "samples"}, "{:.0f}"),
                       field(r, {"by_spare", cls, key, "p50"}, "{:.1f}"), field(r, {"by_spare", cls, key, "p99"}, "{:.1f}"),
                       field(r, {"by_spare", cls, key, "max"}, "{:.1f}"));
  };
  for (const char* cls : {"ready", "starting", "none", "unknown"}) {
    const std::string kills = field(r, {"by_spare", cls, "kills"}, "{:.0f}");
    if (kills == "-" || kills == "0") continue;
    out += fmt::format("  spare {} at the kill: {} kills, {} promoted\n", cls, kills,
                       field(r, {"by_spare", cls, "promoted"}, "{:.0f}"));
    out += row("    a new worker serves", cls, "kill_to_serving_ms");
    out += row("    it starts reading (before restore)", cls, "kill_to_reading_ms");
    out += row("    from there to its first answer", cls, "reading_to_first_reply_ms");
    out += row("    a reader's request is answered", cls, "recovery_ms");
  }
  out += "\n";
  out += "\"serves\": the supervisor sees the next worker (usually the warm spare) reading the\n"
         "device. \"answered\": the first request completes after that, which includes the kernel\n"
         "re-sending what the dead worker held and filling its window (up to 4 MiB), so it is\n"
         "the slower figure and the one readers feel.";
  const std::string unobserved = field(r, {"recovery_ms", "unobserved"}, "{:.0f}");
  if (unobserved != "-" && unobserved != "0")
    out += fmt::format(" {} kill(s) came while no reader had a request\nto answer (between rounds) and have no \"answered\" sample.", unobserved);
  out += "\nEach failover also starts a new spare, so the worker generation grows by about two per kill.\n"
         "\"spare ready\": the spare had finished its handshake at the kill; \"starting\": it was still\n"
         "starting; \"none\": there was none yet (one is started once a worker serves).\n";
  return out;
}

}  // namespace ondemand::chaos
