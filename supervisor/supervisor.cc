#include "supervisor/supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "common/sandbox.h"
#include "supervisor/seccomp_report.h"
#include "common/fd_passing.h"
#include "common/sys.h"
#include "common/systemd.h"
#include "common/watch_fd.h"
#include "metrics/exposition.h"
#include "proto/exit_codes.h"
#include "common/log.h"
#include "proto/channel.h"
#include "proto/log_events.h"
#include "proto/blob_id.h"
#include <sys/stat.h>

namespace ondemand::supervisor {
namespace asio = boost::asio;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {
constexpr auto HANDSHAKE_TIMEOUT = 10s;
constexpr auto HEALTH_PERIOD = 100ms;
constexpr unsigned STATE_DIR_CHECK_TICKS = 10;  // state_dir checked every second
constexpr auto UNREAPED_WARN_AFTER = 5s;
constexpr auto UNREAPED_WARN_EVERY = 10s;
constexpr auto STOP_GRACE = 15s;
constexpr auto UPGRADE_DRAIN = 5s;         // outgoing worker must finish in-flight requests
constexpr auto UPGRADE_SERVE_LIMIT = 15s;  // incoming worker must serve after that
constexpr auto SECCOMP_RECORD_DELAY = 250ms;  // then kauditd has printed the record

// What workers start from: the config as the supervisor last validated it
// (at start or by `ondemandctl reload`), never the operator's file as it is
// now. Its name in state_dir:
constexpr const char* CONFIG_SNAPSHOT_NAME = "worker-config.json";

std::string read_config_text(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw ConfigError(fmt::format("cannot read {}", file.string()));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The keys a running supervisor cannot apply: reload refuses changes to them.
std::vector<std::string> restart_only_changes(const Config& a, const Config& b) {
  std::vector<std::string> changed;
  auto check = [&](const char* key, bool same) {
    if (!same) changed.emplace_back(key);
  };
  check("cache_dir", a.cache_dir == b.cache_dir);
  check("tag", a.tag == b.tag);
  check("state_dir", a.state_dir == b.state_dir);
  check("data_dir", a.data_dir == b.data_dir);
  check("control_uids", a.control_uids == b.control_uids);
  const auto listen = [](const Config& c) {
    return c.metrics_listen ? fmt::format("{}|{}|{}", c.metrics_listen->unix_path.string(), c.metrics_listen->host,
                                          c.metrics_listen->port)
                            : std::string();
  };
  check("metrics_listen", listen(a) == listen(b));
  check("restart_backoff_ms", a.restart_backoff_ms == b.restart_backoff_ms);
  check("restart_backoff_max_ms", a.restart_backoff_max_ms == b.restart_backoff_max_ms);
  check("crash_loop_limit", a.crash_loop_limit == b.crash_loop_limit);
  check("crash_loop_window_ms", a.crash_loop_window_ms == b.crash_loop_window_ms);
  return changed;
}

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

const char* state_name(std::uint64_t state) {
  switch (static_cast<proto::WorkerState>(state)) {
    case proto::WorkerState::STARTING: return "starting";
    case proto::WorkerState::RUNNING: return "running";
    case proto::WorkerState::UPGRADING: return "upgrading";
    case proto::WorkerState::PARKED: return "parked";
    case proto::WorkerState::STOPPED: return "stopped";
  }
  return "unknown";
}
}  // namespace

struct Supervisor::Running {
  pid_t pid = -1;
  UniqueFd pidfd;
  UniqueFd channel;
  std::uint64_t generation = 0;
  std::string version = "?";
  std::filesystem::path binary;
  Clock::time_point started = Clock::now();
  bool handshake_ok = false;
  bool standby = false;
  bool spare = false;
  bool serving = false;
  // Called once the handshake completed (the device fd was handed over).
  std::function<void()> on_ready;
  std::unique_ptr<asio::steady_timer> handshake_timer;
  bool killed_by_us = false;
  Clock::time_point killed_at{};       // when killed_by_us was set
  Clock::time_point unreaped_logged{};  // last "not reaped" warning
  bool adopted = false;
  bool handed_over = false;   // outgoing worker said "handed-over"
  bool handover_sent = false; // we asked it to hand over
  std::unique_ptr<asio::posix::stream_descriptor> exit_watch;
  std::unique_ptr<asio::posix::stream_descriptor> channel_watch;
};

// ---- construction ----

Supervisor::Supervisor(Config config, std::filesystem::path config_path, BoundCache cache,
                       RestartPolicyOptions policy)
    : config_(std::move(config)),
      config_path_(std::move(config_path)),
      cache_(std::move(cache)),
      policy_(policy),
      signals_(loop_, SIGTERM, SIGINT),
      restart_timer_(loop_),
      health_timer_(loop_),
      shutdown_timer_(loop_),
      upgrade_timer_(loop_),
      spare_timer_(loop_) {
  init_shared_state();
}

Supervisor::Supervisor(Config config, std::filesystem::path config_path, AdoptedWorker adopted,
                       RestartPolicyOptions policy)
    : Supervisor(std::move(config), std::move(config_path),
                 BoundCache{std::move(adopted.device), adopted.rdev}, policy) {
  auto w = std::make_unique<Running>();
  w->pid = adopted.pid;
  w->pidfd = std::move(adopted.pidfd);
  w->channel = std::move(adopted.channel);
  w->generation = adopted.generation;
  w->version = adopted.version;
  w->binary = "(adopted)";
  w->handshake_ok = true;
  w->serving = adopted.serving;
  w->adopted = true;
  (void)sys::set_nonblocking(w->channel.get());
  spdlog::info("adopted running worker pid={} generation={} version {} ({})", w->pid, w->generation, w->version,
               w->serving ? "serving" : "not serving");
  auto& st = shm_->state();
  st.worker_pid.store(static_cast<std::uint64_t>(w->pid));
  if (st.generation.load() < w->generation) st.generation.store(w->generation);
  set_state(w->serving ? proto::WorkerState::RUNNING : proto::WorkerState::STARTING);
  write_pid_file(w->pid);
  worker_ = std::move(w);
}

Supervisor::~Supervisor() = default;

void Supervisor::init_shared_state() {
  if (config_.worker_binary.empty())  // default: ondemand-worker beside us
    config_.worker_binary = std::filesystem::read_symlink("/proc/self/exe").parent_path() / "ondemand-worker";
  std::filesystem::create_directories(config_.state_dir);
  // The file was validated a moment ago (main); snapshot what it says now,
  // validated again, so an edit in between cannot slip through unchecked.
  snapshot_path_ = config_.state_dir / CONFIG_SNAPSHOT_NAME;
  const auto text = read_config_text(config_path_);
  (void)parse_config(text);
  // Keep counters across supervisor restarts: attach when the segment exists.
  shm_.emplace(SharedStateMapping::open_or_create(shm_name_for_tag(config_.tag)));
  // Workers read the snapshot, not config_path_ (which may be 0600 root):
  // no check of that file here; the snapshot is made readable to the
  // worker's group below.
  worker_launch_ = prepare_worker_launch(config_, {}, shm_->name());
  if (auto error = write_config_snapshot(text); !error.empty()) throw ConfigError(error);
  snapshot_text_ = text;
  load_bindings();
}

void Supervisor::load_bindings() {
  if (config_.data_dir.empty()) return;
  std::filesystem::create_directories(config_.data_dir);
  const auto file = config_.data_dir / bindings::BINDINGS_FILE_NAME;
  auto loaded = bindings::load_bindings_file(file);
  // A torn or corrupt file is never silently replaced by an empty one: the
  // operator decides (restore it, or remove it to start without bindings).
  if (auto* error = std::get_if<std::string>(&loaded))
    throw ConfigError(fmt::format("blob bindings unusable: {} (fix or remove the file)", *error));
  bindings_ = std::move(std::get<bindings::Bindings>(loaded));
  for (const auto& [id, b] : bindings_)
    if (!config_.registries.contains(b.registry))
      spdlog::warn("binding \"{}\" in {} names registry \"{}\", which is not in the config key registries: its "
                   "reads fail until it is added", id, file.string(), b.registry);
  if (auto error = publish_bindings(); !error.empty()) throw ConfigError(error);
  if (auto error = publish_credentials(config_); !error.empty()) throw ConfigError(error);
  spdlog::info("{} blob binding(s) from {}", bindings_.size(), file.string());
}

std::string Supervisor::publish_bindings() {
  if (config_.data_dir.empty()) return {};
  std::optional<unsigned> gid;
  if (worker_launch_.identity) gid = worker_launch_.identity->gid;
  return bindings::write_file_atomic(bindings::worker_bindings_path(config_.state_dir),
                                     bindings::serialize_bindings(bindings_), 0640, gid);
}

// The operator's credentials files stay root 0600; the worker gets a copy
// it owns (0600) in state_dir. Their contents are never logged.
std::string Supervisor::publish_credentials(const Config& config) {
  for (const auto& [host, r] : config.registries) {
    if (r.credentials_file.empty()) continue;
    const auto key = fmt::format("config key \"registries.{}.credentials_file\"", host);
    UniqueFd fd{::open(r.credentials_file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)};
    struct stat st {};
    if (!fd || ::fstat(fd.get(), &st) < 0)
      return fmt::format("{}: cannot read {}: {}", key, r.credentials_file.string(), sys::errno_name(errno));
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0 || st.st_size > 64 * 1024)
      return fmt::format("{}: {} must be a regular file of at most 64 KiB, mode 0600 (it has {:04o})", key,
                         r.credentials_file.string(), st.st_mode & 07777);
    std::string text(static_cast<std::size_t>(st.st_size), '\0');
    if (::pread(fd.get(), text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()))
      return fmt::format("{}: cannot read {}", key, r.credentials_file.string());
    std::optional<unsigned> uid, gid;
    if (worker_launch_.identity) {
      uid = worker_launch_.identity->uid;
      gid = worker_launch_.identity->gid;
    }
    if (auto error = bindings::write_file_atomic(bindings::worker_credentials_path(config.state_dir, host), text,
                                                 0600, gid, uid);
        !error.empty())
      return fmt::format("{}: {}", key, error);
  }
  return {};
}

proto::ControlReply Supervisor::bind(const proto::control::Bind& request) {
  using proto::control::Error;
  if (config_.data_dir.empty()) return Error{"bindings need the config key data_dir (not set)"};
  bindings::Binding b{request.registry, request.repository, request.digest, request.size};
  if (auto error = bindings::validate_binding(request.id, b); !error.empty()) return Error{error};
  if (!config_.registries.contains(b.registry))
    return Error{fmt::format("binding \"{}\": registry \"{}\" is not in the config key registries", request.id,
                             b.registry)};
  if (auto it = bindings_.find(request.id); it != bindings_.end()) {
    if (it->second == b) return proto::control::Done{fmt::format("blob id {} is already bound so", request.id)};
    // The cache may already hold the old blob's bytes under this id.
    return Error{fmt::format("binding \"{}\": already bound to {}/{}@{}; unbind it first", request.id,
                             it->second.registry, it->second.repository, it->second.digest)};
  }
  auto next = bindings_;
  next.emplace(request.id, b);
  const auto file = config_.data_dir / bindings::BINDINGS_FILE_NAME;
  if (auto error = bindings::write_file_atomic(file, bindings::serialize_bindings(next), 0600); !error.empty()) {
    spdlog::error("bind {} refused: {}", request.id, error);
    return Error{fmt::format("binding \"{}\" not stored: {}", request.id, error)};
  }
  bindings_ = std::move(next);
  spdlog::info("blob id {} bound to registry={} repository={} digest={}", request.id, b.registry, b.repository,
               b.digest);
  if (auto error = publish_bindings(); !error.empty())
    return Error{fmt::format("binding \"{}\" stored in {}, but the worker's copy failed: {}", request.id,
                             file.string(), error)};
  return proto::control::Done{fmt::format("blob id {} bound to {}/{}@{}", request.id, b.registry, b.repository,
                                          b.digest)};
}

proto::ControlReply Supervisor::unbind(const proto::control::Unbind& request) {
  using proto::control::Error;
  if (config_.data_dir.empty()) return Error{"bindings need the config key data_dir (not set)"};
  if (!bindings_.contains(request.id))
    return Error{fmt::format("binding \"{}\": no such binding", worker::escape_id(request.id))};
  auto next = bindings_;
  next.erase(request.id);
  const auto file = config_.data_dir / bindings::BINDINGS_FILE_NAME;
  if (auto error = bindings::write_file_atomic(file, bindings::serialize_bindings(next), 0600); !error.empty())
    return Error{fmt::format("binding \"{}\" not removed: {}", request.id, error)};
  bindings_ = std::move(next);
  spdlog::info("blob id {} unbound", request.id);
  if (auto error = publish_bindings(); !error.empty())
    return Error{fmt::format("binding \"{}\" removed from {}, but the worker's copy failed: {}", request.id,
                             file.string(), error)};
  return proto::control::Done{fmt::format("blob id {} unbound", request.id)};
}

proto::control::BindingsReply Supervisor::list_bindings() const {
  proto::control::BindingsReply r;
  for (const auto& [id, b] : bindings_) r.bindings.push_back({id, b.registry, b.repository, b.digest, b.size});
  return r;
}

int Supervisor::run() {
  signals_.async_wait([this](boost::system::error_code ec, int signo) {
    if (ec) return;
    if (signo == SIGTERM && leave_worker_for_restart()) return;
    spdlog::info("received SIG{}: stopping", sigabbrev_np(signo));
    shutdown();
  });
  bind_control();
  const metrics::RenderInfo info{proto::VERSION, std::chrono::duration<double>(
                                                     std::chrono::system_clock::now().time_since_epoch()).count()};
  metrics_ = std::make_unique<MetricsServer>(loop_, metrics_options_from(config_),
                                             [this, info] { return metrics::render(shm_->state(), info); });
  // Under systemd the bound device also goes to the fd store, so a restart
  // with no live worker still finds the cache.
  const int device[] = {cache_.fd.get()};
  systemd::notify("FDSTORE=1\nFDNAME=cachefiles", device);
  if (worker_) {
    watch_exit(worker_.get());
    watch_channel(worker_.get());
    if (worker_->serving) on_serving(worker_.get());
  } else {
    start_worker();
  }
  check_health();
  loop_.run();
  control_.reset();
  metrics_.reset();
  spdlog::info("supervisor exiting; the cache stays bound only if another reference to /dev/cachefiles "
               "exists (systemd's fd store)");
  return 0;
}

void Supervisor::bind_control() {
  control_ = std::make_unique<ControlServer>(
      loop_, config_.state_dir, std::vector<uid_t>(config_.control_uids.begin(), config_.control_uids.end()),
      [this](const proto::ControlRequest& request, ControlServer::Reply reply) {
        handle_control(request, std::move(reply));
      });
}

// state_dir removed under us (rm -rf, a tmpfiles cleanup): make it again and
// rebind control.sock, and say so. Never throws: it runs on the event loop.
// Recreates state_dir if it is gone, open to an unprivileged worker's group
// as at start (its worker.sock and serving.lock live there).
std::error_code Supervisor::reopen_state_dir() {
  std::error_code ec;
  std::filesystem::create_directories(config_.state_dir, ec);
  if (ec || !worker_launch_.identity) return ec;
  try {
    const auto& id = *worker_launch_.identity;
    log_given_back(config_.state_dir, open_state_dir_to_worker(config_.state_dir, id.uid, id.gid), id);
  } catch (const std::exception& e) {
    spdlog::error("state_dir {}: {}", config_.state_dir.string(), e.what());
    return std::make_error_code(std::errc::permission_denied);
  }
  return ec;
}

void Supervisor::keep_state_dir() {
  std::error_code ec;
  if (std::filesystem::is_socket(config_.state_dir / std::string(proto::CONTROL_SOCKET_NAME), ec)) {
    state_dir_error_.clear();
    return;
  }
  std::string error;
  ec = reopen_state_dir();
  if (ec) {
    error = fmt::format("cannot recreate state_dir {}: {}", config_.state_dir.string(), ec.message());
  } else {
    try {
      control_.reset();
      bind_control();
      spdlog::error("state_dir {} lost its control.sock (removed?): recreated it and rebound the control socket. "
                    "The running worker's worker.sock and serving.lock went with it: a restarted supervisor cannot "
                    "adopt that worker; the next worker recreates them",
                    config_.state_dir.string());
      state_dir_error_.clear();
      return;
    } catch (const std::exception& e) {
      error = fmt::format("cannot rebind the control socket in {}: {}", config_.state_dir.string(), e.what());
    }
  }
  if (error != state_dir_error_) spdlog::error("{}; ondemandctl cannot reach us until it works (retrying)", error);
  state_dir_error_ = error;
}

void Supervisor::set_state(proto::WorkerState state) {
  shm_->state().worker_state.store(static_cast<std::uint64_t>(state));
}

std::string Supervisor::write_config_snapshot(const std::string& text) {
  const auto tmp = snapshot_path_.string() + ".tmp";
  // 0600: the config may carry credentials.
  UniqueFd fd{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
  if (!fd) return fmt::format("cannot write {}: {}", tmp, sys::errno_name(errno));
  // An unprivileged worker reads it through its group: root:<group> 0640.
  if (worker_launch_.identity &&
      (::fchown(fd.get(), static_cast<uid_t>(-1), worker_launch_.identity->gid) < 0 || ::fchmod(fd.get(), 0640) < 0))
    return fmt::format("cannot give {} to the worker's group {}: {}", tmp, worker_launch_.identity->gid,
                       sys::errno_name(errno));
  std::size_t done = 0;
  while (done < text.size()) {
    auto w = sys::write(fd.get(), text.data() + done, text.size() - done);
    if (!w.ok()) return fmt::format("cannot write {}: {}", tmp, sys::errno_name(w.err));
    done += static_cast<std::size_t>(w.rc);
  }
  if (::fsync(fd.get()) < 0) return fmt::format("cannot write {}: {}", tmp, sys::errno_name(errno));
  if (::rename(tmp.c_str(), snapshot_path_.c_str()) < 0)
    return fmt::format("cannot rename {} to {}: {}", tmp, snapshot_path_.string(), sys::errno_name(errno));
  return {};
}

proto::ControlReply Supervisor::reload() {
  Config next;
  std::string text;
  try {
    text = read_config_text(config_path_);
    next = parse_config(text);
  } catch (const ConfigError& e) {
    spdlog::warn("reload refused: {}: {}", config_path_.string(), e.what());
    return proto::control::Error{
        fmt::format("{}: {}; nothing reloaded, the running config stays", config_path_.string(), e.what())};
  }
  if (auto changed = restart_only_changes(config_, next); !changed.empty()) {
    const auto keys = fmt::format("{}", fmt::join(changed, ", "));
    spdlog::warn("reload refused: {} changed, which needs a supervisor restart", keys);
    return proto::control::Error{fmt::format(
        "{} changed in {}: only a supervisor restart applies {}; nothing reloaded", keys, config_path_.string(),
        changed.size() == 1 ? "it" : "them")};
  }
  if (auto error = publish_credentials(next); !error.empty()) {
    spdlog::warn("reload refused: {}", error);
    return proto::control::Error{error + "; nothing reloaded"};
  }
  if (auto error = write_config_snapshot(text); !error.empty()) {
    spdlog::error("reload failed: {}", error);
    return proto::control::Error{error + "; nothing reloaded"};
  }
  snapshot_text_ = text;
  if (next.worker_binary.empty()) next.worker_binary = std::filesystem::read_symlink("/proc/self/exe").parent_path() / "ondemand-worker";
  config_ = std::move(next);
  spdlog::info("config reloaded from {}: the next worker starts from it", config_path_.string());
  // A spare started from the old config would be the next worker: replace it.
  if (spare_) {
    spare_timer_.cancel();
    retire(std::move(spare_), "config reloaded");
    asio::post(loop_, [this] { maybe_spawn_spare(); });
  }
  return proto::control::Done{fmt::format(
      "reloaded {}: takes effect for the next worker (the running one keeps the config it started with)",
      config_path_.string())};
}

void Supervisor::write_pid_file(pid_t pid) {
  const auto path = config_.state_dir / "worker.pid";
  const auto tmp = config_.state_dir / "worker.pid.tmp";
  // Informational only: a missing state_dir must not throw out of the loop.
  std::error_code ec;
  std::filesystem::create_directories(config_.state_dir, ec);
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << pid << '\n';
    if (!out) ec = std::make_error_code(std::errc::io_error);
  }
  if (!ec) std::filesystem::rename(tmp, path, ec);
  if (ec) spdlog::warn("cannot write {}: {}", path.string(), ec.message());
}

// ---- spawning ----

std::unique_ptr<Supervisor::Running> Supervisor::spawn(const std::filesystem::path& binary, bool standby,
                                                        std::string* why, bool spare) {
  auto& state = shm_->state();
  auto w = std::make_unique<Running>();
  w->generation = state.generation.fetch_add(1) + 1;
  w->binary = binary;
  w->standby = standby;
  w->spare = spare;
  // The snapshot lives in state_dir, which an operator (or a tmp cleaner)
  // may have removed: every worker must find it, or it exits 78 and parks.
  if (std::error_code ec; !std::filesystem::exists(snapshot_path_, ec)) {
    reopen_state_dir();
    if (auto error = write_config_snapshot(snapshot_text_); !error.empty())
      spdlog::error("config snapshot {} is gone and cannot be rewritten: {}", snapshot_path_.string(), error);
    else
      spdlog::warn("config snapshot {} was gone (state_dir removed?): rewritten", snapshot_path_.string());
  }
  try {
    auto p = spawn_worker(binary, {"--config", snapshot_path_.string()}, worker_launch_);
    w->pid = p.pid;
    w->pidfd = std::move(p.pidfd);
    w->channel = std::move(p.channel);
  } catch (const std::exception& e) {
    *why = fmt::format("cannot spawn {}: {}", binary.string(), e.what());
    return nullptr;
  }
  (void)sys::set_nonblocking(w->channel.get());
  spdlog::info("spawned worker pid={} generation={} binary={}{}", w->pid, w->generation, binary.string(),
               spare ? " (spare)" : standby ? " (standby for an upgrade)" : "");
  // The handshake runs on the event loop (on_message): a starting worker,
  // however slow, never stops us noticing another one's death. Bounded here.
  auto* raw = w.get();
  w->handshake_timer = std::make_unique<asio::steady_timer>(loop_, HANDSHAKE_TIMEOUT);
  w->handshake_timer->async_wait([this, raw](boost::system::error_code ec) {
    if (!ec && ours(raw) && !raw->handshake_ok) kill(raw, "no handshake within the bound");
  });
  return w;
}

// The worker's hello arrived: agree on a version, hand over the device.
void Supervisor::complete_handshake(Running* w, const proto::msg::Hello& h) {
  w->version = h.version;
  auto version = proto::negotiate(proto::HANDOFF_PROTO_MIN, proto::HANDOFF_PROTO_MAX, h.proto_min, h.proto_max);
  try {
    send(w->channel.get(), proto::make_hello("supervisor", ::getpid()));
    if (!version)
      throw ChannelError(fmt::format("no common handoff protocol version (worker {}..{}, us {}..{})", h.proto_min,
                                     h.proto_max, proto::HANDOFF_PROTO_MIN, proto::HANDOFF_PROTO_MAX));
    const int fds[] = {cache_.fd.get()};
    send(w->channel.get(),
         proto::msg::Device{.generation = w->generation,
                            .rdev = static_cast<std::uint64_t>(cache_.rdev),
                            .shm = shm_->name(),
                            .restore = !w->standby,
                            .standby = w->standby,
                            .spare = w->spare},
         fds);
  } catch (const ChannelError& e) {
    spdlog::error("handshake with worker pid={} failed: {}", w->pid, e.what());
    return kill(w, "handshake failed");  // its death is handled like any other
  }
  w->handshake_ok = true;
  w->handshake_timer.reset();
  spdlog::info("handed /dev/cachefiles to worker pid={} (version {}, handoff protocol {})", w->pid, w->version,
               *version);
  if (w->on_ready) std::exchange(w->on_ready, nullptr)();
}

void Supervisor::start_worker() {
  if (shutting_down_) return;
  auto& state = shm_->state();
  set_state(proto::WorkerState::STARTING);
  std::string why;
  auto w = spawn(config_.worker_binary, /*standby=*/false, &why);
  if (!w) {
    spdlog::error("{}", why);
    worker_.reset();
    on_current_exit(ExitStatus{true, static_cast<int>(proto::ExitCode::TEMPORARY)});
    return;
  }
  state.worker_pid.store(static_cast<std::uint64_t>(w->pid));
  write_pid_file(w->pid);
  worker_ = std::move(w);
  watch_exit(worker_.get());
  watch_channel(worker_.get());
}

// ---- watching ----

void Supervisor::watch_exit(Running* w) {
  w->exit_watch = std::make_unique<asio::posix::stream_descriptor>(watch_fd(loop_, w->pidfd.get()));
  w->exit_watch->async_wait(asio::posix::stream_descriptor::wait_read, [this, w](boost::system::error_code ec) {
    if (ec || !ours(w)) return;
    if (auto status = try_reap(w->pidfd.get()))
      on_exit(w, *status);
    else
      watch_exit(w);
  });
}

void Supervisor::watch_channel(Running* w) {
  if (!w->channel_watch)
    w->channel_watch = std::make_unique<asio::posix::stream_descriptor>(watch_fd(loop_, w->channel.get()));
  w->channel_watch->async_wait(asio::posix::stream_descriptor::wait_read, [this, w](boost::system::error_code ec) {
    if (ec || !ours(w)) return;
    for (;;) {
      auto received = recv_message(w->channel.get(), proto::MAX_MESSAGE_BYTES, proto::MAX_FDS_PER_MESSAGE);
      if (received.err == EAGAIN) break;
      if (received.peer_closed() || received.err) return;  // its death follows through the pidfd
      auto decoded = proto::decode(received.bytes, received.fds.size());
      if (auto* msg = std::get_if<proto::Message>(&decoded)) {
        on_message(w, *msg);
      } else {
        const auto& error = std::get<proto::DecodeError>(decoded);
        spdlog::warn("unrecognized message from worker pid={}: {}", w->pid, error.what);
        if (!w->handshake_ok) {
          // Its hello could not be read: nothing later can be trusted.
          kill(w, "malformed message during the handshake");
        } else {
          send_quietly(w->channel.get(), proto::msg::Unrecognized{error.what});
        }
      }
      if (!ours(w)) return;
    }
    watch_channel(w);
  });
}

void Supervisor::on_message(Running* w, const proto::Message& m) {
  if (!w->handshake_ok) {
    if (const auto* hello = std::get_if<proto::msg::Hello>(&m)) return complete_handshake(w, *hello);
    spdlog::error("worker pid={} sent \"{}\" before its hello", w->pid, proto::type_of(m));
    return kill(w, "protocol violation during the handshake");
  }
  if (const auto* serving = std::get_if<proto::msg::Serving>(&m)) {
    (void)serving;
    w->serving = true;
    return on_serving(w);
  }
  if (const auto* handed = std::get_if<proto::msg::HandedOver>(&m)) {
    w->handed_over = true;
    spdlog::info("worker pid={} handed over {} objects", w->pid, handed->objects);
    return;
  }
  if (const auto* unrecognized = std::get_if<proto::msg::Unrecognized>(&m)) {
    spdlog::warn("worker pid={} did not recognize our message: {}", w->pid, unrecognized->what);
    return;
  }
  spdlog::warn("unexpected message \"{}\" from worker pid={}", proto::type_of(m), w->pid);
  send_quietly(w->channel.get(), proto::msg::Unrecognized{std::string(proto::type_of(m))});
}

void Supervisor::on_serving(Running* w) {
  auto& st = shm_->state();
  if (w == worker_.get()) recorder_.worker_serving(st, Clock::now());
  if (w == incoming_.get()) recorder_.upgrade_serving(st, Clock::now());
  if (last_death_ != Clock::time_point{} && w == worker_.get()) {
    LogFields fields({{"MESSAGE_ID", std::string(proto::log_event::FAILOVER_SERVING)},
                      {"WORKER_PID", std::to_string(w->pid)},
                      {"WORKER_GENERATION", std::to_string(w->generation)},
                      {"RECOVERY_MS", fmt::format("{:.1f}", ms_since(last_death_))}});
    spdlog::info("worker pid={} generation={} serving, {:.1f} ms after the previous worker died", w->pid,
                 w->generation, ms_since(last_death_));
  } else
    spdlog::info("worker pid={} generation={} serving", w->pid, w->generation);
  if (!ready_notified_) {
    // READY only once a worker serves: until then mounts would hang.
    ready_notified_ = systemd::notify("READY=1\nSTATUS=serving");
  }
  if (w == incoming_.get()) {
    if (!worker_) {  // the outgoing worker is already gone: upgrade done
      worker_ = std::move(incoming_);
      st.worker_pid.store(static_cast<std::uint64_t>(worker_->pid));
      write_pid_file(worker_->pid);
      finish_upgrade(true, "");
    }
    return;  // otherwise finished when the outgoing worker is reaped
  }
  if (!incoming_) set_state(proto::WorkerState::RUNNING);
  if (w == worker_.get()) {
    spare_failures_ = 0;
    asio::post(loop_, [this] { maybe_spawn_spare(); });
  }
}

void Supervisor::on_exit(Running* w, const ExitStatus& status) {
  std::string desc = status.known ? proto::describe_exit(status.exited, status.code)
                                  : std::string("ended (adopted, exit status unknown)");
  if (status.known && !status.exited && status.code == SIGSYS) {
    // Its seccomp filter killed it; the call it made is in the kernel log.
    const auto syscall = find_seccomp_syscall(w->pid);
    desc = describe_seccomp_kill(syscall);
    if (!syscall) report_seccomp_call_later(w->pid);
  }
  if (w == spare_.get() || !(w == worker_.get() || w == incoming_.get())) {
    const bool was_spare = w == spare_.get();
    spdlog::log(was_spare && !shutting_down_ ? spdlog::level::warn : spdlog::level::info,
                "{} worker pid={} generation={} {}", was_spare ? "spare" : "retired", w->pid, w->generation, desc);
    if (was_spare) {
      spare_.reset();
      if (!shutting_down_) {
        // A spare that cannot start must not spin: retry slowly, and at the
        // park cadence once it keeps failing.
        const auto delay = ++spare_failures_ >= 3 ? std::chrono::milliseconds(config_.park_retry_ms)
                                                   : std::chrono::milliseconds(5000);
        spare_timer_.expires_after(delay);
        spare_timer_.async_wait([this](boost::system::error_code ec) {
          if (!ec) maybe_spawn_spare();
        });
      }
    } else {
      std::erase_if(retired_, [w](const auto& r) { return r.get() == w; });
    }
    finish_shutdown_if_done();
    return;
  }
  const bool outgoing = w == worker_.get();
  {
    // The fields tag this one line, not what the handling below logs.
    LogFields fields({{"MESSAGE_ID", std::string(proto::log_event::WORKER_DIED)},
                      {"WORKER_PID", std::to_string(w->pid)},
                      {"WORKER_GENERATION", std::to_string(w->generation)},
                      {"EXIT", desc}});
    spdlog::log(shutting_down_ || w->handed_over ? spdlog::level::info : spdlog::level::warn,
                "worker pid={} generation={} {} after {:.0f} ms ({}{})", w->pid, w->generation, desc,
                ms_since(w->started), w->serving ? "had been serving" : "never served",
                incoming_ ? (outgoing ? ", outgoing in an upgrade" : ", incoming in an upgrade") : "");
  }
  if (outgoing) return on_current_exit(status);

  // The incoming worker of an upgrade died.
  incoming_.reset();
  if (shutting_down_) return finish_shutdown_if_done();
  if (upgrade_reply_) finish_upgrade(false, fmt::format("the new worker {} before serving", desc));
  if (worker_ && worker_->handover_sent && !worker_->handed_over) {
    spdlog::info("asking worker pid={} to resume reading", worker_->pid);
    send_quietly(worker_->channel.get(), proto::msg::Resume{});
    set_state(proto::WorkerState::RUNNING);
  } else if (!worker_ || worker_->handed_over) {
    // Nobody is left to serve: a regular restart (with restore).
    if (worker_) kill(worker_.get(), "its successor died after the handover");
    else start_worker();
  }
}

// kauditd prints the audit record asynchronously: it can come after the
// death. One more look, off the event loop's critical path.
void Supervisor::report_seccomp_call_later(pid_t pid) {
  auto timer = std::make_shared<asio::steady_timer>(loop_, SECCOMP_RECORD_DELAY);
  timer->async_wait([timer, pid](boost::system::error_code ec) {
    if (ec) return;
    if (const auto syscall = find_seccomp_syscall(pid))
      spdlog::warn("worker pid={} was {} (from the kernel log)", pid, describe_seccomp_kill(syscall));
    else
      spdlog::warn("worker pid={} killed by seccomp: which system call is not known (no audit record for it in "
                   "/dev/kmsg: the kernel needs CONFIG_AUDITSYSCALL, or an audit daemon has the records)",
                   pid);
  });
}

void Supervisor::on_current_exit(const ExitStatus& status) {
  auto& state = shm_->state();
  const bool served = worker_ && (worker_->serving || worker_->adopted);
  const bool handed_over = worker_ && worker_->handed_over;
  // SIGKILL is never self-inflicted: one we did not send came from an
  // operator, a chaos test or the OOM killer, not from a worker that cannot
  // start, so it must not earn the next worker a backoff.
  const bool killed_from_outside = status.known && !status.exited && status.code == SIGKILL &&
                                   !(worker_ && worker_->killed_by_us);
  const auto how = status.known ? proto::classify_exit(status.exited, status.code) : proto::ExitClass::CRASHED;
  const auto cause = metrics::restart_cause(how, worker_ && worker_->killed_by_us, killed_from_outside);
  last_death_ = Clock::now();
  worker_.reset();  // closes pidfd and channel; the process is reaped (or was not ours)
  if (shutting_down_) {
    if (incoming_) return kill(incoming_.get(), "supervisor stopping");
    set_state(proto::WorkerState::STOPPED);
    return finish_shutdown_if_done();
  }
  if (incoming_) {
    // Upgrade: the outgoing worker is gone for good, so the incoming one may
    // read now. If it received the object table it starts by itself;
    // otherwise it must restore what the outgoing worker left pending.
    if (incoming_->serving) {
      worker_ = std::move(incoming_);
      state.worker_pid.store(static_cast<std::uint64_t>(worker_->pid));
      write_pid_file(worker_->pid);
      return finish_upgrade(true, "");
    }
    if (!handed_over) {
      spdlog::info("outgoing worker gone without a handover: incoming worker pid={} takes over with restore",
                   incoming_->pid);
      try {
        send(incoming_->channel.get(), proto::msg::Takeover{});
      } catch (const ChannelError& e) {
        spdlog::error("takeover message failed: {}", e.what());
      }
    }
    return;  // on_serving completes the upgrade; upgrade_timer_ bounds it
  }
  const auto decision = policy_.on_exit(
      how, killed_from_outside ? Served::KILLED : served ? Served::YES : Served::NO, Clock::now());
  state.restarts.fetch_add(1);
  recorder_.worker_died(state, cause, last_death_);
  if (decision.parked) {
    set_state(proto::WorkerState::PARKED);
    const char* reason = how == proto::ExitClass::FATAL_CONFIG ? "configuration error"
                         : how == proto::ExitClass::CACHE_DEAD ? "cache dead"
                                                               : "crash loop";
    {
      LogFields fields({{"MESSAGE_ID", std::string(proto::log_event::PARKED)},
                        {"REASON", reason},
                        {"RETRY_MS", std::to_string(decision.delay.count())}});
      spdlog::error("worker parked ({}): keeping /dev/cachefiles bound, retrying in {} ms", reason,
                    decision.delay.count());
    }
    if (how == proto::ExitClass::CACHE_DEAD)
      spdlog::critical("the cache in {} is dead after an I/O error: every mount on it fails; to recover, unmount "
                       "them, stop this service (it unbinds the cache), fix the disk of cache_dir (fsck), start it again",
                       config_.cache_dir.string());
  } else if (decision.delay.count() > 0 && decision.serving_crashes > 0) {
    spdlog::error("restarting worker in {} ms: {} workers crashed after serving within crash_loop_window_ms ({} ms), "
                  "more than crash_loop_limit ({}); a request that kills every worker, or a sandbox refusing a "
                  "call (see the kill reasons above)",
                  decision.delay.count(), decision.serving_crashes, config_.crash_loop_window_ms,
                  config_.crash_loop_limit);
  } else if (decision.delay.count() > 0) {
    spdlog::warn("restarting worker in {} ms (start failures back off)", decision.delay.count());
  } else {
    spdlog::info("restarting worker now");
  }
  if (!decision.parked && decision.delay.count() == 0 && promote_spare()) return;
  restart_timer_.expires_after(decision.delay);
  restart_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) start_worker();
  });
}

// The loop ends once every worker we started is reaped.
void Supervisor::finish_shutdown_if_done() {
  if (shutting_down_ && !worker_ && !incoming_ && !spare_ && retired_.empty()) loop_.stop();
}

bool Supervisor::ours(const Running* w) const {
  if (w == worker_.get() || w == incoming_.get() || w == spare_.get()) return true;
  for (const auto& r : retired_)
    if (r.get() == w) return true;
  return false;
}

void Supervisor::maybe_spawn_spare() {
  if (!config_.spare_worker || spare_ || !worker_ || !worker_->serving || incoming_ || shutting_down_ ||
      policy_.parked())
    return;
  // The spare runs what the serving worker runs (after an upgrade, the new
  // binary); an adopted worker's binary is unknown, so the configured one.
  const auto binary = worker_->adopted ? config_.worker_binary : worker_->binary;
  std::string why;
  auto spare = spawn(binary, /*standby=*/true, &why, /*spare=*/true);
  if (!spare) {
    spdlog::warn("no spare worker: {}", why);
    return;
  }
  spare_ = std::move(spare);
  watch_exit(spare_.get());
  watch_channel(spare_.get());
}

// Failover without a process start: the spare already holds the device and
// only waits for "takeover" to restore and read. Called once the previous
// worker is reaped.
bool Supervisor::promote_spare() {
  if (!spare_ || !spare_->handshake_ok || spare_->killed_by_us) return false;
  // Liveness before promotion: a spare that cannot run (stopped by a signal
  // or a debugger, a zombie) would only cost serve_timeout_ms.
  if (const char state = sys::process_state(spare_->pid); state == 'T' || state == 't' || state == 'Z' || state == 0) {
    spdlog::warn("spare worker pid={} is not runnable (state {}); starting a fresh worker", spare_->pid,
                 state ? std::string(1, state) : std::string("unknown"));
    kill(spare_.get(), "spare not runnable at failover");
    retired_.push_back(std::move(spare_));
    return false;
  }
  // Record who serves before it can serve: observers (pid file, status,
  // ondemand-chaos) must never see the new generation with the old pid.
  auto& state = shm_->state();
  set_state(proto::WorkerState::STARTING);
  state.worker_pid.store(static_cast<std::uint64_t>(spare_->pid));
  write_pid_file(spare_->pid);
  // Generations number workers in the order they start serving: the spare
  // may have been spawned before the worker that just died.
  spare_->generation = state.generation.fetch_add(1) + 1;
  try {
    send(spare_->channel.get(), proto::msg::Takeover{spare_->generation});
  } catch (const ChannelError& e) {
    spdlog::warn("spare worker pid={} unreachable ({}); starting a fresh worker", spare_->pid, e.what());
    kill(spare_.get(), "unreachable spare");
    retired_.push_back(std::move(spare_));
    return false;
  }
  worker_ = std::move(spare_);
  worker_->started = Clock::now();
  spdlog::info("promoted spare worker pid={} generation={}: restoring and serving", worker_->pid,
               worker_->generation);
  return true;
}

void Supervisor::retire(std::unique_ptr<Running> w, const char* why) {
  if (!w) return;
  spdlog::info("retiring worker pid={} generation={}: {}", w->pid, w->generation, why);
  try {
    send(w->channel.get(), proto::msg::Stop{});
  } catch (const ChannelError&) {
    kill(w.get(), why);
  }
  retired_.push_back(std::move(w));
}

void Supervisor::kill(Running* w, const char* why) {
  if (!w || w->killed_by_us) return;
  w->killed_by_us = true;
  w->killed_at = Clock::now();
  {
    LogFields fields({{"MESSAGE_ID", std::string(proto::log_event::WORKER_KILLED)},
                      {"WORKER_PID", std::to_string(w->pid)},
                      {"WORKER_GENERATION", std::to_string(w->generation)},
                      {"REASON", why}});
    spdlog::warn("killing worker pid={} generation={}: {}", w->pid, w->generation, why);
  }
  // pidfd_send_signal: cannot hit a recycled pid.
  if (::syscall(SYS_pidfd_send_signal, w->pidfd.get(), SIGKILL, nullptr, 0) < 0)
    spdlog::error("pidfd_send_signal: {}", sys::errno_name(errno));
}

void Supervisor::check_health() {
  health_timer_.expires_after(HEALTH_PERIOD);
  health_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    // During an upgrade the upgrade's own deadlines bound everything.
    if (worker_ && worker_->serving && !worker_->killed_by_us && !shutting_down_ && !incoming_) {
      auto& state = shm_->state();
      const auto now = sys::monotonic_ns();
      const auto beat = state.heartbeat_ns.load();
      const auto oldest = state.oldest_request_ns.load();
      const auto ms = [](std::uint64_t ns) { return ns / 1'000'000; };
      std::string why;
      if (config_.watchdog_timeout_ms && beat && now > beat && ms(now - beat) > config_.watchdog_timeout_ms)
        why = fmt::format("heartbeat stale for {} ms (limit {} ms)", ms(now - beat), config_.watchdog_timeout_ms);
      else if (config_.request_timeout_ms && oldest && now > oldest && ms(now - oldest) > config_.request_timeout_ms)
        why = fmt::format("a request has been in flight for {} ms (limit {} ms)", ms(now - oldest),
                          config_.request_timeout_ms);
      if (!why.empty()) {
        state.hangs_detected.fetch_add(1);
        kill(worker_.get(), why.c_str());
      }
    }
    // Serve deadline: every phase of a start is bounded (the handshake by
    // HANDSHAKE_TIMEOUT). A worker that got the device but never serves (a
    // stopped spare promoted at failover, a worker stuck before its first
    // read) would otherwise leave nothing reading the device, for ever.
    if (worker_ && !worker_->serving && !worker_->killed_by_us && !shutting_down_ && !incoming_ &&
        config_.serve_timeout_ms && Clock::now() - worker_->started > std::chrono::milliseconds(config_.serve_timeout_ms))
      kill(worker_.get(), fmt::format("not serving {} ms after it was {} (serve_timeout_ms)", config_.serve_timeout_ms,
                                      worker_->spare ? "promoted" : "started")
                              .c_str());
    if (++health_ticks_ % STATE_DIR_CHECK_TICKS == 0) keep_state_dir();
    warn_unreaped(worker_.get());
    check_health();
  });
}

// A worker we SIGKILLed whose exit the pidfd has not reported: it is stuck
// in the kernel (D state: a hung cache file system, a blocked device write).
// Nothing replaces it before it is gone, since it may still hold a request
// of the device, so the device is not read meanwhile: say so, every 10 s.
void Supervisor::warn_unreaped(Running* w) {
  if (!w || !w->killed_by_us) return;
  const auto now = Clock::now();
  if (now - w->killed_at < UNREAPED_WARN_AFTER || now - w->unreaped_logged < UNREAPED_WARN_EVERY) return;
  w->unreaped_logged = now;
  spdlog::error("worker pid={} generation={} killed {:.0f} s ago, not reaped (stuck in the kernel, D state?): no "
                "new worker until it exits, so nothing reads the device",
                w->pid, w->generation, std::chrono::duration<double>(now - w->killed_at).count());
}

// `systemctl restart` sends SIGTERM exactly as `systemctl stop` does; only
// the job systemd runs on our unit tells them apart ("restart" during its
// stop phase). On a restart the serving worker is left running (the unit's
// KillMode=process spares it) and the next supervisor adopts it through
// worker.sock: readers see no pause. A stop, or any doubt, is a full stop.
bool Supervisor::leave_worker_for_restart() {
  if (shutting_down_ || !worker_ || !worker_->serving || incoming_ || worker_->killed_by_us) return false;
  const auto job = systemd::own_job_type(std::chrono::milliseconds(2000));
  if (!job) return false;  // not under systemd, or it could not say: stop
  if (*job != "restart") {
    spdlog::info("SIGTERM with systemd job \"{}\" on our unit: a full stop", *job);
    return false;
  }
  spdlog::info("SIGTERM for systemctl restart: leaving worker pid={} generation={} serving; the next supervisor "
               "adopts it through {}",
               worker_->pid, worker_->generation, (config_.state_dir / std::string(proto::WORKER_SOCKET_NAME)).string());
  shutting_down_ = true;
  restart_timer_.cancel();
  health_timer_.cancel();
  upgrade_timer_.cancel();
  spare_timer_.cancel();
  if (spare_) retire(std::move(spare_), "supervisor restarting");
  // Our end of its channel closes with this: it serves on, waiting for a
  // supervisor to adopt it.
  worker_.reset();
  finish_shutdown_if_done();
  return true;
}

void Supervisor::shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  restart_timer_.cancel();
  health_timer_.cancel();
  upgrade_timer_.cancel();
  spare_timer_.cancel();
  if (upgrade_reply_) finish_upgrade(false, "supervisor stopping");
  if (incoming_) kill(incoming_.get(), "supervisor stopping");
  if (spare_) retire(std::move(spare_), "supervisor stopping");
  if (!worker_) return finish_shutdown_if_done();
  spdlog::info("asking worker pid={} to stop", worker_->pid);
  try {
    send(worker_->channel.get(), proto::msg::Stop{});
  } catch (const ChannelError&) {
    ::syscall(SYS_pidfd_send_signal, worker_->pidfd.get(), SIGTERM, nullptr, 0);
  }
  shutdown_timer_.expires_after(STOP_GRACE);
  shutdown_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) kill(worker_.get(), "did not stop in time");
  });
}

// ---- control ----

proto::control::StatusReply Supervisor::status() const {
  const auto& st = shm_->state();
  const auto& c = st.counters;
  auto describe = [](const Running* w) -> std::optional<proto::control::WorkerInfo> {
    if (!w) return std::nullopt;
    return proto::control::WorkerInfo{
        .pid = w->pid,
        .generation = w->generation,
        .version = w->version,
        .binary = w->binary.string(),
        .serving = w->serving,
        .adopted = w->adopted,
        .uptime_s = std::chrono::duration<double>(Clock::now() - w->started).count(),
        // Set once we SIGKILLed it: how long its exit has been awaited.
        .killed_s_ago = w->killed_by_us
                            ? std::optional<double>(std::chrono::duration<double>(Clock::now() - w->killed_at).count())
                            : std::nullopt};
  };
  proto::control::StatusReply s{
      .supervisor_pid = ::getpid(),
      .version = std::string(proto::VERSION),
      .uptime_s = std::chrono::duration<double>(Clock::now() - started_).count(),
      .state = state_name(st.worker_state.load()),
      .worker = describe(worker_.get()),
      .incoming_worker = describe(incoming_.get()),
      .spare_worker = describe(spare_.get()),
      .worker_binary = config_.worker_binary.string(),
      .generation = st.generation.load(),
      .restarts = st.restarts.load(),
      .hangs_detected = st.hangs_detected.load(),
      .inflight = c.inflight.load(),
  };
  const auto counters = counters_json(c);  // items() must not outlive it
  for (const auto& [counter, value] : counters.items()) s.counters[counter] = value.get<std::uint64_t>();
  return s;
}

void Supervisor::restart_worker() {
  policy_.reset();
  if (worker_) {
    spdlog::info("restart requested: asking worker pid={} to stop", worker_->pid);
    try {
      send(worker_->channel.get(), proto::msg::Stop{});
    } catch (const ChannelError&) {
      kill(worker_.get(), "restart requested and the channel is gone");
    }
    // Its clean exit restarts it at once (a stopped worker that had served).
  } else {
    spdlog::info("restart requested while no worker runs: starting one now");
    restart_timer_.cancel();
    start_worker();
  }
}

void Supervisor::handle_control(const proto::ControlRequest& request, ControlServer::Reply reply) {
  using namespace proto::control;
  if (std::holds_alternative<Status>(request)) return reply(status());
  if (std::holds_alternative<ListBindings>(request)) return reply(list_bindings());
  if (shutting_down_) return reply(Error{"supervisor is shutting down"});
  if (std::holds_alternative<RestartWorker>(request)) {
    if (incoming_) return reply(Error{"an upgrade is in progress"});
    restart_worker();
    return reply(Done{"worker restart started"});
  }
  if (const auto* upgrade = std::get_if<Upgrade>(&request))
    return start_upgrade(upgrade->binary ? std::filesystem::path(*upgrade->binary) : config_.worker_binary,
                         std::move(reply));
  if (std::holds_alternative<Reload>(request)) return reply(reload());
  if (const auto* b = std::get_if<Bind>(&request)) return reply(bind(*b));
  if (const auto* u = std::get_if<Unbind>(&request)) return reply(unbind(*u));
  if (std::holds_alternative<Stop>(request)) {
    reply(Done{"stopping"});
    return shutdown();
  }
  reply(Error{fmt::format("command \"{}\" not handled", proto::command_of(request))});
}

// ---- rolling upgrade ----

void Supervisor::start_upgrade(const std::filesystem::path& binary, ControlServer::Reply reply) {
  if (incoming_ || upgrade_reply_) return reply(proto::control::Error{"an upgrade is already in progress"});
  if (!worker_ || !worker_->serving) return reply(proto::control::Error{"no serving worker to upgrade from"});
  spdlog::info("upgrade: worker pid={} ({}) -> {}", worker_->pid, worker_->version, binary.string());
  spare_timer_.cancel();
  retire(std::move(spare_), "spare of the old binary, before an upgrade");
  std::string why;
  auto incoming = spawn(binary, /*standby=*/true, &why);
  if (!incoming) return reply(proto::control::Error{"upgrade failed, old worker still serves: " + why});
  incoming_ = std::move(incoming);
  upgrade_reply_ = std::move(reply);
  set_state(proto::WorkerState::UPGRADING);
  incoming_->on_ready = [this] { begin_handover(); };
  watch_exit(incoming_.get());
  watch_channel(incoming_.get());
  // If it dies or fails its handshake instead, on_exit reports the failure.
}

// The incoming worker holds the device in standby: give each side one end
// of a fresh socketpair; the objects travel worker to worker, never
// through us.
void Supervisor::begin_handover() {
  if (!incoming_ || !worker_) return;
  auto pair = make_seqpacket_pair();
  if (pair.err) {
    kill(incoming_.get(), "socketpair failed");
    return;  // its death reports the failure
  }
  try {
    const int b_end[] = {pair.b.get()};
    send(incoming_->channel.get(), proto::msg::HandoverPeer{}, b_end);
    const int a_end[] = {pair.a.get()};
    send(worker_->channel.get(),
         proto::msg::Handover{static_cast<std::uint64_t>(std::chrono::milliseconds(UPGRADE_DRAIN).count())}, a_end);
    worker_->handover_sent = true;
    recorder_.handover_started(Clock::now());
  } catch (const ChannelError& e) {
    spdlog::error("upgrade: handover messages failed: {}", e.what());
    kill(incoming_.get(), "handover could not start");
    return;
  }
  // Bound 1: the outgoing worker drains and exits, or is killed (the
  // incoming one then restores). Bound 2: the incoming one serves.
  upgrade_timer_.expires_after(UPGRADE_DRAIN + 1s);
  upgrade_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    if (worker_ && incoming_) kill(worker_.get(), "did not hand over within the drain bound");
    upgrade_timer_.expires_after(UPGRADE_SERVE_LIMIT);
    upgrade_timer_.async_wait([this](boost::system::error_code ec2) {
      if (!ec2 && incoming_ && !incoming_->serving) kill(incoming_.get(), "did not serve in time after the handover");
    });
  });
}

void Supervisor::finish_upgrade(bool ok, const std::string& message) {
  upgrade_timer_.cancel();
  // What the next crash restarts: the binary that now serves, not the one
  // the supervisor started with.
  if (ok && worker_ && worker_->binary != config_.worker_binary) {
    spdlog::info("upgrade: worker_binary is now {} (was {})", worker_->binary.string(),
                 config_.worker_binary.string());
    config_.worker_binary = worker_->binary;
  }
  asio::post(loop_, [this] { maybe_spawn_spare(); });
  if (ok || (worker_ && worker_->serving))
    set_state(proto::WorkerState::RUNNING);
  if (!upgrade_reply_) return;
  auto reply = std::move(upgrade_reply_);
  upgrade_reply_ = nullptr;
  {
    LogFields fields({{"MESSAGE_ID", std::string(proto::log_event::UPGRADE)},
                      {"RESULT", ok ? "done" : "failed"},
                      {"WORKER_PID", std::to_string(worker_ ? worker_->pid : 0)}});
    if (ok)
      spdlog::info("upgrade done: worker pid={} generation={} version {} serves", worker_->pid,
                   worker_->generation, worker_->version);
    else
      spdlog::error("upgrade failed: {}", message);
  }
  if (ok) {
    reply(proto::control::Upgraded{.message = "upgraded",
                                   .pid = worker_->pid,
                                   .generation = worker_->generation,
                                   .version = worker_->version});
  } else {
    reply(proto::control::Error{"upgrade failed, old worker still serves: " + message});
  }
}

}  // namespace ondemand::supervisor
