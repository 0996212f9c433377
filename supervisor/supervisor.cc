// The worker's start (spawn, handshake, serving), the health check, and the
// supervisor's own stop. See supervisor.h for which file holds what.
#include "supervisor/supervisor.h"

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "common/log.h"
#include "common/sandbox.h"
#include "common/sys.h"
#include "common/systemd.h"
#include "metrics/exposition.h"
#include "proto/channel.h"
#include "proto/exit_codes.h"
#include "proto/log_events.h"
#include "supervisor/seccomp_report.h"
#include "supervisor/supervisor_internal.h"

namespace ondemand::supervisor {
namespace asio = boost::asio;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {
constexpr auto HANDSHAKE_TIMEOUT = 10s;
constexpr auto HEALTH_PERIOD = 100ms;
constexpr unsigned STATE_DIR_CHECK_TICKS = 10;  // state_dir checked every second
constexpr auto STOP_GRACE = 15s;
}  // namespace

std::string read_config_text(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw ConfigError(fmt::format("cannot read {}", file.string()));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

std::filesystem::path default_worker_binary() {
  return std::filesystem::read_symlink("/proc/self/exe").parent_path() / "ondemand-worker";
}

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
      spare_timer_(loop_),
      spare_wait_timer_(loop_) {
  init_shared_state();
}

Supervisor::Supervisor(Config config, std::filesystem::path config_path, FanotifyCache group,
                       RestartPolicyOptions policy)
    : Supervisor(std::move(config), std::move(config_path), BoundCache{}, policy) {
  fanotify_.emplace(std::move(group));
}

Supervisor::Supervisor(Config config, std::filesystem::path config_path, AdoptedWorker adopted,
                       RestartPolicyOptions policy)
    : Supervisor(std::move(config), std::move(config_path),
                 BoundCache{std::move(adopted.device), adopted.rdev}, policy) {
  if (adopted.fanotify) {
    std::optional<gid_t> worker_gid;
    if (worker_launch_.identity) worker_gid = worker_launch_.identity->gid;
    auto& f = *adopted.fanotify;
    fanotify_.emplace(FanotifyCache::adopt(config_, worker_gid, std::move(f.group), std::move(f.record),
                                           std::move(f.entries), std::move(f.writers)));
  }
  auto w = std::make_unique<WorkerHandle>(loop_, adopted.pid, std::move(adopted.pidfd), std::move(adopted.channel));
  w->generation = adopted.generation;
  w->version = adopted.version;
  w->binary = "(adopted)";
  w->handshake_ok = true;
  w->serving = adopted.serving;
  w->adopted = true;
  if (fanotify_) w->cache_files = fanotify_->files().size();
  spdlog::info("adopted running worker pid={} generation={} version {} ({})", w->pid, w->generation, w->version,
               w->serving ? "serving" : "not serving");
  auto& st = shm_->state();
  st.worker_pid.store(static_cast<std::uint64_t>(w->pid));
  if (st.generation.load() < w->generation) st.generation.store(w->generation);
  set_state(w->serving ? proto::WorkerState::RUNNING : proto::WorkerState::STARTING);
  state_dir_->write_pid_file(w->pid);
  worker_ = std::move(w);
}

Supervisor::~Supervisor() = default;

void Supervisor::init_shared_state() {
  if (config_.worker_binary.empty()) config_.worker_binary = default_worker_binary();  // beside us
  std::filesystem::create_directories(config_.state_dir);
  // The file was validated a moment ago (main); snapshot what it says now,
  // validated again, so an edit in between cannot slip through unchecked.
  const auto text = read_config_text(config_path_);
  (void)parse_config(text);
  // Keep counters across supervisor restarts: attach when the segment exists.
  shm_.emplace(SharedStateMapping::open_or_create(shm_name_for_tag(config_.tag)));
  // Workers read the snapshot, not config_path_ (which may be 0600 root):
  // no check of that file here; the snapshot is made readable to the
  // worker's group.
  worker_launch_ = prepare_worker_launch(config_, {}, shm_->name());
  state_dir_.emplace(config_.state_dir, worker_launch_.identity);
  if (auto error = state_dir_->write_snapshot(text); !error.empty()) throw ConfigError(error);
  bindings_.emplace(config_.data_dir, config_.state_dir, worker_launch_.identity);
  bindings_->load(config_);
}

int Supervisor::run() {
  signals_.async_wait([this](boost::system::error_code ec, int signo) {
    if (ec) return;
    if (signo == SIGTERM && leave_worker_for_restart()) return;
    spdlog::info("received SIG{}: stopping", sigabbrev_np(signo));
    // A signal cannot be refused as `ondemandctl stop` is; say what it costs.
    if (fanotify_)
      for (const auto& mount : fanotify_mounts())
        spdlog::error("{} is mounted from the fanotify cache: once the group closes its readers read zeros over "
                      "what is not fetched yet; unmount it", mount);
    shutdown();
  });
  bind_control();
  const metrics::RenderInfo info{proto::VERSION, std::chrono::duration<double>(
                                                     std::chrono::system_clock::now().time_since_epoch()).count()};
  metrics_ = std::make_unique<MetricsServer>(loop_, metrics_options_from(config_),
                                             [this, info] { return metrics::render(shm_->state(), info); });
  // Under systemd the bound device also goes to the fd store, so a restart
  // with no live worker still finds the cache.
  // Not the fanotify group: a group nobody reads would block every reader
  // of its marked files for good (fanotify.cc).
  if (!fanotify_) {
    const int device[] = {cache_.fd.get()};
    systemd::notify("FDSTORE=1\nFDNAME=cachefiles", device);
  }
  if (worker_) {
    watch(*worker_);
    if (worker_->serving) on_serving(*worker_);
  } else {
    start_worker();
  }
  check_health();
  loop_.run();
  control_.reset();
  metrics_.reset();
  if (fanotify_)
    spdlog::info("supervisor exiting; the fanotify group closes with the last worker: reads of an image still "
                 "mounted then go on over its unfilled ranges (zeros)");
  else
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

void Supervisor::set_state(proto::WorkerState state) {
  shm_->state().worker_state.store(static_cast<std::uint64_t>(state));
}

// ---- spawning ----

Supervisor::Handle Supervisor::spawn(const std::filesystem::path& binary, bool standby, std::string* why,
                                     bool spare) {
  auto& state = shm_->state();
  state_dir_->ensure_snapshot();
  const auto generation = state.generation.fetch_add(1) + 1;
  Handle w;
  try {
    auto p = spawn_worker(binary, {"--config", state_dir_->snapshot_path().string()}, worker_launch_);
    w = std::make_unique<WorkerHandle>(loop_, p.pid, std::move(p.pidfd), std::move(p.channel));
  } catch (const std::exception& e) {
    *why = fmt::format("cannot spawn {}: {}", binary.string(), e.what());
    return nullptr;
  }
  w->generation = generation;
  w->binary = binary;
  w->standby = standby;
  w->spare = spare;
  spdlog::info("spawned worker pid={} generation={} binary={}{}", w->pid, w->generation, binary.string(),
               spare ? " (spare)" : standby ? " (standby for an upgrade)" : "");
  // The handshake runs on the event loop (on_message): a starting worker,
  // however slow, never stops us noticing another one's death. Bounded here.
  w->bound_handshake(HANDSHAKE_TIMEOUT);
  return w;
}

void Supervisor::watch(WorkerHandle& w) {
  w.watch({.message = [this](WorkerHandle& h, const proto::Message& m) { on_message(h, m); },
           .exit = [this](WorkerHandle& h, const ExitStatus& s) { on_exit(h, s); }});
}

// The worker's hello arrived: agree on a version, hand over the device.
void Supervisor::complete_handshake(WorkerHandle& w, const proto::msg::Hello& h) {
  w.version = h.version;
  auto version = proto::negotiate(proto::HANDOFF_PROTO_MIN, proto::HANDOFF_PROTO_MAX, h.proto_min, h.proto_max);
  try {
    w.send(proto::make_hello("supervisor", ::getpid()));
    if (!version)
      throw ChannelError(fmt::format("no common handoff protocol version (worker {}..{}, us {}..{})", h.proto_min,
                                     h.proto_max, proto::HANDOFF_PROTO_MIN, proto::HANDOFF_PROTO_MAX));
    if (fanotify_) {
      hand_group(w);
    } else {
      const int fds[] = {cache_.fd.get()};
      w.send(proto::msg::Device{.generation = w.generation,
                                .rdev = static_cast<std::uint64_t>(cache_.rdev),
                                .shm = shm_->name(),
                                .restore = !w.standby,
                                .standby = w.standby,
                                .spare = w.spare},
             fds);
    }
  } catch (const ChannelError& e) {
    spdlog::error("handshake with worker pid={} failed: {}", w.pid, e.what());
    return w.kill("handshake failed");  // its death is handled like any other
  }
  w.handshake_done();
  // "ms after its spawn" is the process start (exec, sandbox setup, hello)
  // a failover without a ready spare waits for: tests/vm's chaos scenario
  // reports it.
  spdlog::info("handed {} to worker pid={} (version {}, handoff protocol {}) {:.1f} ms after its spawn",
               fanotify_ ? fmt::format("the fanotify group and {} cache files", fanotify_->files().size())
                         : std::string("/dev/cachefiles"),
               w.pid, w.version, *version, ms_since(w.started));
  if (w.on_ready) std::exchange(w.on_ready, nullptr)();
}

void Supervisor::start_worker() {
  if (shutting_down_) return;
  if (awaiting_spare_) {  // ondemandctl restart-worker during a failover's wait: this start replaces it
    awaiting_spare_ = false;
    spare_wait_timer_.cancel();
    if (spare_) spare_->on_ready = nullptr;
  }
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
  state_dir_->write_pid_file(w->pid);
  worker_ = std::move(w);
  watch(*worker_);
}

// ---- what a worker says ----

void Supervisor::on_message(WorkerHandle& w, const proto::Message& m) {
  if (!w.handshake_ok) {
    if (const auto* hello = std::get_if<proto::msg::Hello>(&m)) return complete_handshake(w, *hello);
    spdlog::error("worker pid={} sent \"{}\" before its hello", w.pid, proto::type_of(m));
    return w.kill("protocol violation during the handshake");
  }
  if (std::holds_alternative<proto::msg::Serving>(m)) {
    w.serving = true;
    return on_serving(w);
  }
  if (const auto* handed = std::get_if<proto::msg::HandedOver>(&m)) {
    w.handed_over = true;
    spdlog::info("worker pid={} handed over {} objects", w.pid, handed->objects);
    return;
  }
  if (const auto* added = std::get_if<proto::msg::CacheFilesAdded>(&m)) return on_cache_files_added(w, added->count);
  if (const auto* unrecognized = std::get_if<proto::msg::Unrecognized>(&m)) {
    spdlog::warn("worker pid={} did not recognize our message: {}", w.pid, unrecognized->what);
    return;
  }
  spdlog::warn("unexpected message \"{}\" from worker pid={}", proto::type_of(m), w.pid);
  w.send_quietly(proto::msg::Unrecognized{std::string(proto::type_of(m))});
}

void Supervisor::on_serving(WorkerHandle& w) {
  auto& st = shm_->state();
  const bool current = &w == worker_.get();
  const bool incoming = &w == incoming_.get();
  if (current) recorder_.worker_serving(st, Clock::now());
  if (incoming) recorder_.upgrade_serving(st, Clock::now());
  if (last_death_ != Clock::time_point{} && current) {
    LogFields fields({{"MESSAGE_ID", std::string(proto::log_event::FAILOVER_SERVING)},
                      {"WORKER_PID", std::to_string(w.pid)},
                      {"WORKER_GENERATION", std::to_string(w.generation)},
                      {"RECOVERY_MS", fmt::format("{:.1f}", ms_since(last_death_))}});
    spdlog::info("worker pid={} generation={} serving, {:.1f} ms after the previous worker died", w.pid,
                 w.generation, ms_since(last_death_));
  } else
    spdlog::info("worker pid={} generation={} serving", w.pid, w.generation);
  if (!ready_notified_) {
    // READY only once a worker serves: until then mounts would hang.
    ready_notified_ = systemd::notify("READY=1\nSTATUS=serving");
  }
  if (incoming) {
    if (!worker_) {  // the outgoing worker is already gone: upgrade done
      worker_ = std::move(incoming_);
      st.worker_pid.store(static_cast<std::uint64_t>(worker_->pid));
      state_dir_->write_pid_file(worker_->pid);
      finish_upgrade(true, "");
    }
    return;  // otherwise finished when the outgoing worker is reaped
  }
  if (!incoming_) set_state(proto::WorkerState::RUNNING);
  if (current && fanotify_) answer_mounts(w.cache_files, "a new worker serves with the cache files");
  if (current) {
    spare_failures_ = 0;
    asio::post(loop_, [this] { maybe_spawn_spare(); });
  }
}

// A worker was reaped: say so, and hand it to the life cycle it was in.
void Supervisor::on_exit(WorkerHandle& w, const ExitStatus& status) {
  std::string desc = status.known ? proto::describe_exit(status.exited, status.code)
                                  : std::string("ended (adopted, exit status unknown)");
  if (status.known && !status.exited && status.code == SIGSYS) {
    // Its seccomp filter killed it; the call it made is in the kernel log.
    const auto syscall = find_seccomp_syscall(w.pid);
    desc = describe_seccomp_kill(syscall);
    if (!syscall) report_seccomp_call_later(w.pid);
  }
  const bool outgoing = &w == worker_.get();
  const bool incoming = &w == incoming_.get();
  if (!outgoing && !incoming) {
    const bool was_spare = &w == spare_.get();
    spdlog::log(was_spare && !shutting_down_ ? spdlog::level::warn : spdlog::level::info,
                "{} worker pid={} generation={} {}", was_spare ? "spare" : "retired", w.pid, w.generation, desc);
    if (was_spare)
      on_spare_exit();
    else
      std::erase_if(retired_, [&w](const auto& r) { return r.get() == &w; });
    return finish_shutdown_if_done();
  }
  {
    // The fields tag this one line, not what the handling below logs.
    LogFields fields({{"MESSAGE_ID", std::string(proto::log_event::WORKER_DIED)},
                      {"WORKER_PID", std::to_string(w.pid)},
                      {"WORKER_GENERATION", std::to_string(w.generation)},
                      {"EXIT", desc}});
    spdlog::log(shutting_down_ || w.handed_over ? spdlog::level::info : spdlog::level::warn,
                "worker pid={} generation={} {} after {:.0f} ms ({}{})", w.pid, w.generation, desc,
                ms_since(w.started), w.serving ? "had been serving" : "never served",
                incoming_ ? (outgoing ? ", outgoing in an upgrade" : ", incoming in an upgrade") : "");
  }
  if (outgoing) return on_current_exit(status);
  on_incoming_exit(desc);
}

void Supervisor::retire(Handle w, const char* why) {
  if (!w) return;
  spdlog::info("retiring worker pid={} generation={}: {}", w->pid, w->generation, why);
  w->stop(why);
  retired_.push_back(std::move(w));
}

// ---- health ----

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
        worker_->kill(why.c_str());
      }
    }
    // Serve deadline: every phase of a start is bounded (the handshake by
    // HANDSHAKE_TIMEOUT). A worker that got the device but never serves (a
    // stopped spare promoted at failover, a worker stuck before its first
    // read) would otherwise leave nothing reading the device, for ever.
    if (worker_ && !worker_->serving && !worker_->killed_by_us && !shutting_down_ && !incoming_ &&
        config_.serve_timeout_ms && Clock::now() - worker_->started > std::chrono::milliseconds(config_.serve_timeout_ms))
      worker_->kill(fmt::format("not serving {} ms after it was {} (serve_timeout_ms)", config_.serve_timeout_ms,
                                worker_->spare ? "promoted" : "started")
                        .c_str());
    if (++health_ticks_ % STATE_DIR_CHECK_TICKS == 0)
      state_dir_->keep([this] {
        control_.reset();
        bind_control();
      });
    if (worker_) worker_->warn_unreaped();
    check_health();
  });
}

// ---- our own stop ----

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
  spare_wait_timer_.cancel();
  awaiting_spare_ = false;
  if (upgrade_reply_) finish_upgrade(false, "supervisor stopping");
  if (incoming_) incoming_->kill("supervisor stopping");
  if (spare_) retire(std::move(spare_), "supervisor stopping");
  if (!worker_) return finish_shutdown_if_done();
  spdlog::info("asking worker pid={} to stop", worker_->pid);
  try {
    worker_->send(proto::msg::Stop{});
  } catch (const ChannelError&) {
    ::syscall(SYS_pidfd_send_signal, worker_->pidfd.get(), SIGTERM, nullptr, 0);
  }
  shutdown_timer_.expires_after(STOP_GRACE);
  shutdown_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec && worker_) worker_->kill("did not stop in time");
  });
}

// The loop ends once every worker we started is reaped.
void Supervisor::finish_shutdown_if_done() {
  if (shutting_down_ && !worker_ && !incoming_ && !spare_ && retired_.empty()) loop_.stop();
}

}  // namespace ondemand::supervisor
