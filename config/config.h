// The one configuration file shared by supervisor and worker
// (`--config FILE`, JSON). Unknown keys and wrong types are errors naming the
// key: a typo must never silently fall back to a default.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ondemand {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The worker's heartbeat period (worker/worker.cc) and the smallest
// watchdog timeout that tolerates a few late beats.
inline constexpr std::uint32_t HEARTBEAT_PERIOD_MS = 100;
inline constexpr std::uint32_t MIN_WATCHDOG_TIMEOUT_MS = 500;

// Where the supervisor also serves its metrics (config key metrics_listen):
// a loopback TCP address or a Unix socket path. Nothing else: the metrics
// must not leave the machine unless an operator puts a proxy in front.
struct ListenAddress {
  std::filesystem::path unix_path;  // set for a Unix socket
  std::string host;                 // numeric loopback address otherwise
  std::uint16_t port = 0;
  bool is_unix() const { return !unix_path.empty(); }
};

// "127.0.0.1:9464" (any 127.0.0.0/8 address), "[::1]:9464",
// "localhost:9464" (127.0.0.1), or an absolute path. Returns the address,
// or sets `why` and returns nullopt. Pure, unit-tested.
std::optional<ListenAddress> parse_listen_address(std::string_view text, std::string* why);

inline constexpr std::string_view METRICS_SOCKET_NAME = "metrics.sock";

// One entry of the config key "registries" (host[:port] -> options): how
// the worker reaches a registry that blob bindings name.
struct RegistryConfig {
  bool insecure_http = false;             // plain http (loopback test registries)
  std::string ca_file;                    // https: verify against this CA bundle
  std::filesystem::path credentials_file; // JSON {"username", "password"}, root 0600; empty: anonymous
};

// Which kernel interface serves the images (frontends/): cachefiles
// on-demand mode (EROFS over fscache, Linux 5.19 to 7.1), or fanotify
// pre-content events on sparse cache files (Linux 6.14+; file-backed EROFS
// mounts made by `ondemandctl mount`).
enum class Frontend { CACHEFILES, FANOTIFY };

struct Config {
  // Required.
  std::filesystem::path cache_dir;   // ext4/xfs/btrfs: cachefiles refuses tmpfs
  std::string tag;                   // cachefiles cache tag
  std::filesystem::path blob_dir;    // local backend: blob id -> blob_dir/<id>
  std::filesystem::path state_dir;   // control socket, worker.pid, shm name
  // Optional.
  Frontend frontend = Frontend::CACHEFILES;
  std::filesystem::path worker_binary;  // default: ondemand-worker beside the supervisor
  std::uint32_t max_inflight = 64;      // kernel requests being served at once
  std::uint32_t io_threads = 4;         // blocking backend/pwrite work runs here
  // A READ fills the aligned window around the request. 4 MiB measured
  // best of 256 KiB..4 MiB in tests/bench (fewer kernel round trips).
  std::uint64_t fill_window = 4 << 20;
  // Read-ahead that adapts: a READ that does not continue a sequential
  // stream of its object fills from this window (doubling while the
  // stream goes on, up to fill_window). 0 (the default) or fill_window:
  // fixed windows; see the README for what the bench measured.
  std::uint64_t fill_window_min = 0;
  // Fill-ahead for sequential readers (cachefiles): a READ that continues
  // a stream of its object also starts fills, nobody waiting on them, of
  // up to this many fill_window-long windows after its own, so they run
  // beside the fill the reader waits on. 0: only the READ's own window.
  // 2 measured best of 0, 1, 2 in tests/bench (README, Benchmark).
  std::uint32_t fill_ahead_windows = 2;
  bool prefetch = false;                // fetch whole blob in the background after OPEN
  // The fd budget (cachefiles): at most this many objects (anonymous fd +
  // blob fd each) held open; the least recently used idle ones beyond it
  // are closed and the kernel reopens them at their next READ. 0: no limit.
  std::uint32_t max_open_objects = 0;
  std::uint32_t watchdog_timeout_ms = 5000;  // stale heartbeat => hang; 0 disables
  std::uint32_t request_timeout_ms = 60000;  // oldest request older => hang; 0 disables
  // A worker started (or a spare promoted) that has not said "serving" this
  // long after is killed, a start failure; 0 disables.
  std::uint32_t serve_timeout_ms = 20000;
  std::vector<std::uint32_t> control_uids;   // besides root, who may use the control socket
  // Restart policy (supervisor/restart_policy.h) for workers that fail to start.
  std::uint32_t restart_backoff_ms = 100;      // second consecutive start failure waits this
  std::uint32_t restart_backoff_max_ms = 5000; // doubling stops here
  std::uint32_t crash_loop_limit = 10;         // more start failures than this in the window park; more own
                                              // crashes after serving back off (supervisor/restart_policy.h)
  std::uint32_t crash_loop_window_ms = 30000;
  std::uint32_t park_retry_ms = 30000;         // a parked supervisor tries again this often
  bool spare_worker = true;  // keep a warm standby worker: failover without a process start
  // Besides <state_dir>/metrics.sock, serve GET /metrics here too.
  std::optional<ListenAddress> metrics_listen;
  // The cache culler (frontends/cachefiles/cull.h): cachefiles never culls
  // in on-demand mode, so without it a full cache_dir fails every uncached
  // read for good.
  bool cache_cull = true;
  std::uint64_t cache_max_bytes = 0;       // 0: no limit of ours, cull only at the kernel's threshold
  std::uint32_t cache_low_watermark = 80;  // percent of cache_max_bytes a cull pass gets down to
  // The worker's sandbox (common/sandbox.h). Who it runs as: a user name or
  // a numeric uid; empty means DEFAULT_WORKER_USERS (the first that exists).
  // worker_group empty means that user's primary group.
  std::string worker_user;
  std::string worker_group;
  bool sandbox_drop_privileges = true;  // setresuid/gid to worker_user, no capabilities, no_new_privs
  bool sandbox_seccomp = true;          // system call allow-list, anything else kills the worker (worker/seccomp_filter.h)
  bool sandbox_landlock = true;         // files: blob_dir, cache_dir read, state_dir read/write (worker/landlock.h)
  // Blob bindings (issue 10): <data_dir>/bindings.json, owned by the
  // supervisor. Empty: no bindings, every id is served from blob_dir.
  std::filesystem::path data_dir;
  std::map<std::string, RegistryConfig, std::less<>> registries;
  // Each registry open/read gives up after this (EIO for that read); below
  // request_timeout_ms so the hang watchdog never fires for a slow registry.
  std::uint32_t registry_request_timeout_ms = 20000;
  // TCP ports the worker may connect to besides each registry's own (its
  // sandbox refuses every other port, worker/sandbox.h): a token realm or a
  // blob redirect (storage, CDN) served on another port. Needs registries.
  std::vector<std::uint16_t> registry_connect_ports;
};

// Tried in order when worker_user is not set: a dedicated system user made
// by deploy/install-deps.sh, else the traditional unprivileged one.
inline constexpr std::string_view DEFAULT_WORKER_USERS[] = {"ondemand", "nobody"};

// Who the worker runs as, resolved from worker_user / worker_group against
// the user database (NSS). Throws ConfigError naming the key when a name
// does not exist, or naming both defaults when neither exists.
struct WorkerIdentity {
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::string user;  // for messages: the name, or the number as given
};
WorkerIdentity resolve_worker_identity(const Config& config);

// Parses and validates; throws ConfigError naming the key or the problem.
Config parse_config(std::string_view json_text);
Config load_config(const std::filesystem::path& file);

}  // namespace ondemand
