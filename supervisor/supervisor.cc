#include "supervisor/supervisor.h"

#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <fstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "common/fd_passing.h"
#include "common/sys.h"
#include "proto/exit_codes.h"
#include "proto/handoff.h"

namespace ondemand::supervisor {
namespace asio = boost::asio;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {
constexpr auto HANDSHAKE_TIMEOUT = 10s;
constexpr auto HEALTH_PERIOD = 100ms;
constexpr auto STOP_GRACE = 15s;

std::uint64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + ts.tv_nsec;
}

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}
}  // namespace

struct Supervisor::Running {
  SpawnedWorker process;
  std::uint64_t generation = 0;
  Clock::time_point started;
  bool serving = false;
  bool killed_by_us = false;
  std::unique_ptr<asio::posix::stream_descriptor> pidfd_watch;
  std::unique_ptr<asio::posix::stream_descriptor> channel_watch;
};

Supervisor::Supervisor(Config config, std::filesystem::path config_path, BoundCache cache,
                       RestartPolicyOptions policy)
    : config_(std::move(config)),
      config_path_(std::move(config_path)),
      cache_(std::move(cache)),
      policy_(policy),
      signals_(loop_, SIGTERM, SIGINT),
      restart_timer_(loop_),
      health_timer_(loop_),
      shutdown_timer_(loop_) {
  if (config_.worker_binary.empty()) {
    // Default: ondemand-worker installed beside ondemand-supervisor.
    config_.worker_binary = std::filesystem::read_symlink("/proc/self/exe").parent_path() / "ondemand-worker";
  }
  std::filesystem::create_directories(config_.state_dir);
  shm_.emplace(SharedStateMapping::create(shm_name_for_tag(config_.tag)));
}

Supervisor::~Supervisor() = default;

int Supervisor::run() {
  signals_.async_wait([this](boost::system::error_code ec, int signo) {
    if (ec) return;
    spdlog::info("received SIG{}: stopping", sigabbrev_np(signo));
    shutdown();
  });
  control_ = std::make_unique<ControlServer>(
      loop_, config_.state_dir, std::vector<uid_t>(config_.control_uids.begin(), config_.control_uids.end()),
      [this](const proto::ControlRequest& request, ControlServer::Reply reply) {
        handle_control(request, std::move(reply));
      });
  start_worker();
  check_health();
  loop_.run();
  control_.reset();
  spdlog::info("supervisor exiting; releasing /dev/cachefiles unbinds the cache");
  return 0;
}

void Supervisor::write_pid_file(pid_t pid) {
  const auto path = config_.state_dir / "worker.pid";
  const auto tmp = config_.state_dir / "worker.pid.tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << pid << '\n';
  }
  std::filesystem::rename(tmp, path);
}

void Supervisor::start_worker() {
  if (shutting_down_) return;
  auto& state = shm_->state();
  const auto generation = state.generation.fetch_add(1) + 1;
  state.worker_state.store(static_cast<std::uint64_t>(proto::WorkerState::STARTING));
  auto running = std::make_unique<Running>();
  running->generation = generation;
  running->started = Clock::now();
  try {
    running->process = spawn_worker(config_.worker_binary, {"--config", config_path_.string()});
  } catch (const std::exception& e) {
    spdlog::error("cannot spawn worker {}: {}", config_.worker_binary.string(), e.what());
    on_worker_exit(ExitStatus{true, static_cast<int>(proto::ExitCode::TEMPORARY)});
    return;
  }
  const pid_t pid = running->process.pid;
  state.worker_pid.store(static_cast<std::uint64_t>(pid));
  write_pid_file(pid);
  spdlog::info("spawned worker pid={} generation={} binary={}", pid, generation,
               config_.worker_binary.string());
  worker_ = std::move(running);
  watch_worker();

  // Handshake, bounded. A worker that dies meanwhile makes it throw; its
  // death is then handled by the pidfd watch like any other.
  const int channel = worker_->process.channel.get();
  try {
    auto hello = receive_message(channel, HANDSHAKE_TIMEOUT);
    if (hello.message.type != "hello") throw ChannelError("expected hello, got " + hello.message.type);
    const auto& h = hello.message.body;
    auto version = proto::negotiate(proto::HANDOFF_PROTO_MIN, proto::HANDOFF_PROTO_MAX,
                                    h.value("proto_min", 0u), h.value("proto_max", 0u));
    send_json(channel, proto::make_hello("supervisor", ::getpid()));
    if (!version) throw ChannelError("no common handoff protocol version");
    const int fds[] = {cache_.fd.get()};
    send_json(channel,
              {{"type", "device"},
               {"fds", 1},
               {"generation", generation},
               {"rdev", static_cast<std::uint64_t>(cache_.rdev)},
               {"shm", shm_->name()},
               {"restore", true}},
              fds);
    spdlog::info("handed /dev/cachefiles to worker pid={} (version {}, handoff protocol {})", pid,
                 h.value("version", std::string("?")), *version);
  } catch (const ChannelError& e) {
    spdlog::error("handshake with worker pid={} failed: {}", pid, e.what());
    kill_worker("handshake failed");
    return;
  }
  watch_channel();
}

void Supervisor::watch_worker() {
  auto* w = worker_.get();
  w->pidfd_watch = std::make_unique<asio::posix::stream_descriptor>(loop_, ::dup(w->process.pidfd.get()));
  w->pidfd_watch->async_wait(asio::posix::stream_descriptor::wait_read,
                             [this, w](boost::system::error_code ec) {
                               if (ec || worker_.get() != w) return;
                               if (auto status = try_reap(w->process.pidfd.get()))
                                 on_worker_exit(*status);
                               else
                                 watch_worker();
                             });
}

void Supervisor::watch_channel() {
  auto* w = worker_.get();
  if (!w->channel_watch)
    w->channel_watch = std::make_unique<asio::posix::stream_descriptor>(loop_, ::dup(w->process.channel.get()));
  w->channel_watch->async_wait(asio::posix::stream_descriptor::wait_read,
                               [this, w](boost::system::error_code ec) {
    if (ec || worker_.get() != w) return;
    auto received = recv_message(w->process.channel.get(), proto::MAX_MESSAGE_BYTES,
                                 proto::MAX_FDS_PER_MESSAGE);
    if (received.peer_closed() || (received.err && received.err != EAGAIN)) return;  // death follows
    if (received.err == EAGAIN) return watch_channel();
    auto decoded = proto::decode_message(received.bytes);
    auto* msg = std::get_if<proto::DecodedMessage>(&decoded);
    if (msg && msg->type == "serving") {
      w->serving = true;
      shm_->state().worker_state.store(static_cast<std::uint64_t>(proto::WorkerState::RUNNING));
      if (last_death_ != Clock::time_point{})
        spdlog::info("worker pid={} generation={} serving, {:.1f} ms after the previous worker died",
                     w->process.pid, w->generation, ms_since(last_death_));
      else
        spdlog::info("worker pid={} generation={} serving", w->process.pid, w->generation);
    } else if (msg && msg->type == "unrecognized") {
      spdlog::warn("worker pid={} did not recognize our message: {}", w->process.pid,
                   msg->body.value("what", std::string("?")));
    } else {
      const std::string what = msg ? msg->type : std::get<proto::DecodeError>(decoded).what;
      spdlog::warn("unrecognized message from worker pid={}: {}", w->process.pid, what);
      try {
        send_json(w->process.channel.get(), proto::make_unrecognized(what));
      } catch (const ChannelError&) {
      }
    }
    watch_channel();
  });
}

void Supervisor::on_worker_exit(const ExitStatus& status) {
  auto& state = shm_->state();
  const bool served = worker_ && worker_->serving;
  // SIGKILL is never self-inflicted: one we did not send came from an
  // operator, a chaos test or the OOM killer, not from a worker that cannot
  // start, so it must not earn the next worker a backoff.
  const bool killed_from_outside =
      !status.exited && status.code == SIGKILL && !(worker_ && worker_->killed_by_us);
  const auto how = proto::classify_exit(status.exited, status.code);
  const std::string desc = proto::describe_exit(status.exited, status.code);
  if (worker_) {
    spdlog::log(shutting_down_ ? spdlog::level::info : spdlog::level::warn,
                "worker pid={} generation={} {} after {:.0f} ms ({})", worker_->process.pid,
                worker_->generation, desc, ms_since(worker_->started),
                served ? "had been serving" : "never served");
  }
  last_death_ = Clock::now();
  worker_.reset();  // closes pidfd and channel; the process is reaped
  if (shutting_down_) {
    state.worker_state.store(static_cast<std::uint64_t>(proto::WorkerState::STOPPED));
    loop_.stop();
    return;
  }
  const auto decision = policy_.on_exit(how, served || killed_from_outside, Clock::now());
  state.restarts.fetch_add(1);
  if (decision.parked) {
    state.worker_state.store(static_cast<std::uint64_t>(proto::WorkerState::PARKED));
    spdlog::error("worker parked ({}): keeping /dev/cachefiles bound, retrying in {} s",
                  how == proto::ExitClass::FATAL_CONFIG ? "configuration error" : "crash loop",
                  std::chrono::duration_cast<std::chrono::seconds>(decision.delay).count());
  } else if (decision.delay.count() > 0) {
    spdlog::warn("restarting worker in {} ms (start failures back off)", decision.delay.count());
  } else {
    spdlog::info("restarting worker now");
  }
  restart_timer_.expires_after(decision.delay);
  restart_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) start_worker();
  });
}

void Supervisor::kill_worker(const char* why) {
  if (!worker_ || worker_->killed_by_us) return;
  worker_->killed_by_us = true;
  spdlog::warn("killing worker pid={} generation={}: {}", worker_->process.pid, worker_->generation, why);
  // pidfd_send_signal: cannot hit a recycled pid.
  if (::syscall(SYS_pidfd_send_signal, worker_->process.pidfd.get(), SIGKILL, nullptr, 0) < 0)
    spdlog::error("pidfd_send_signal: {}", sys::errno_name(errno));
}

void Supervisor::check_health() {
  health_timer_.expires_after(HEALTH_PERIOD);
  health_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    if (worker_ && worker_->serving && !worker_->killed_by_us && !shutting_down_) {
      auto& state = shm_->state();
      const auto now = monotonic_ns();
      const auto beat = state.heartbeat_ns.load();
      const auto oldest = state.oldest_request_ns.load();
      const auto ms = [](std::uint64_t ns) { return ns / 1'000'000; };
      std::string why;
      if (config_.watchdog_timeout_ms && beat && now > beat && ms(now - beat) > config_.watchdog_timeout_ms)
        why = fmt::format("heartbeat stale for {} ms (limit {} ms)", ms(now - beat), config_.watchdog_timeout_ms);
      else if (config_.request_timeout_ms && oldest && now > oldest &&
               ms(now - oldest) > config_.request_timeout_ms)
        why = fmt::format("a request has been in flight for {} ms (limit {} ms)", ms(now - oldest),
                          config_.request_timeout_ms);
      if (!why.empty()) {
        state.hangs_detected.fetch_add(1);
        kill_worker(why.c_str());
      }
    }
    check_health();
  });
}

void Supervisor::shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  restart_timer_.cancel();
  health_timer_.cancel();
  if (!worker_) {
    loop_.stop();
    return;
  }
  spdlog::info("asking worker pid={} to stop", worker_->process.pid);
  try {
    send_json(worker_->process.channel.get(), {{"type", "stop"}});
  } catch (const ChannelError&) {
    ::syscall(SYS_pidfd_send_signal, worker_->process.pidfd.get(), SIGTERM, nullptr, 0);
  }
  shutdown_timer_.expires_after(STOP_GRACE);
  shutdown_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) kill_worker("did not stop in time");
  });
}

}  // namespace ondemand::supervisor

namespace ondemand::supervisor {

namespace {
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

nlohmann::json Supervisor::status() const {
  const auto& st = shm_->state();
  const auto& c = st.counters;
  nlohmann::json worker = nullptr;
  if (worker_) {
    worker = {{"pid", worker_->process.pid},
              {"generation", worker_->generation},
              {"serving", worker_->serving},
              {"uptime_s", std::chrono::duration<double>(Clock::now() - worker_->started).count()}};
  }
  return proto::control_ok({
      {"supervisor_pid", ::getpid()},
      {"version", std::string(proto::VERSION)},
      {"uptime_s", std::chrono::duration<double>(Clock::now() - started_).count()},
      {"state", state_name(st.worker_state.load())},
      {"worker", worker},
      {"worker_binary", config_.worker_binary.string()},
      {"generation", st.generation.load()},
      {"restarts", st.restarts.load()},
      {"hangs_detected", st.hangs_detected.load()},
      {"inflight", c.inflight.load()},
      {"counters",
       {{"opens", c.opens.load()},
        {"open_refused", c.open_refused.load()},
        {"reads", c.reads.load()},
        {"read_failed", c.read_failed.load()},
        {"closes", c.closes.load()},
        {"bytes_written", c.bytes_written.load()},
        {"unknown_object", c.unknown_object.load()},
        {"bad_messages", c.bad_messages.load()},
        {"restores", c.restores.load()},
        {"restores_repair", c.restores_repair.load()}}},
  });
}

void Supervisor::restart_worker() {
  policy_.reset();
  if (worker_) {
    spdlog::info("restart requested: asking worker pid={} to stop", worker_->process.pid);
    try {
      send_json(worker_->process.channel.get(), {{"type", "stop"}});
    } catch (const ChannelError&) {
      kill_worker("restart requested and the channel is gone");
    }
    // Its clean exit restarts it at once (a stopped worker that had served).
  } else {
    spdlog::info("restart requested while no worker runs: starting one now");
    restart_timer_.cancel();
    start_worker();
  }
}

void Supervisor::handle_control(const proto::ControlRequest& request, ControlServer::Reply reply) {
  if (request.cmd == "status") return reply(status());
  if (request.cmd == "restart-worker") {
    if (shutting_down_) return reply(proto::control_error("supervisor is shutting down"));
    restart_worker();
    return reply(proto::control_ok({{"message", "worker restart started"}}));
  }
  if (request.cmd == "stop") {
    reply(proto::control_ok({{"message", "stopping"}}));
    return shutdown();
  }
  reply(proto::control_error("unrecognized command \"" + request.cmd + "\""));
}

}  // namespace ondemand::supervisor
