// Failover: the serving worker died. Reap, classify the exit, ask the
// restart policy (supervisor/restart_policy.h), then promote the spare or
// start a new worker, or park. The spare pool lives here too: one worker
// kept in standby, holding the device, so a failover costs no process start.
#include <cstring>
#include <string_view>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

#include "common/channel.h"
#include "common/log.h"
#include "common/sys.h"
#include "proto/blob_id.h"
#include "proto/log_events.h"
#include "supervisor/seccomp_report.h"
#include "supervisor/supervisor.h"
#include "supervisor/supervisor_internal.h"

namespace ondemand::supervisor {
namespace asio = boost::asio;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {
constexpr auto SECCOMP_RECORD_DELAY = 250ms;  // then kauditd has printed the record
constexpr auto SPARE_RETRY = 5s;
constexpr unsigned SPARE_FAILURES_BEFORE_SLOW_RETRY = 3;
// How long a failover waits for a spare still in its handshake before it
// presumes it stuck and starts a fresh worker. Well above a worker's
// spawn-to-handshake time (vm_chaos logs it: hundreds of ms under qemu
// TCG on a loaded host), well below the handshake's own 10 s bound.
constexpr auto SPARE_AWAIT = 2s;
}  // namespace

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
  if (worker_ && !shutting_down_ && !incoming_)
    name_death_request(worker_->pid, !killed_from_outside && how == proto::ExitClass::CRASHED);
  worker_.reset();  // closes pidfd and channel; the process is reaped (or was not ours)
  if (shutting_down_) {
    if (incoming_) return incoming_->kill("supervisor stopping");
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
      state_dir_->write_pid_file(worker_->pid);
      return finish_upgrade(true, "");
    }
    if (!handed_over) {
      spdlog::info("outgoing worker gone without a handover: incoming worker pid={} takes over with restore",
                   incoming_->pid);
      try {
        incoming_->send(proto::msg::Takeover{});
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
  if (!decision.parked && decision.delay.count() == 0) {
    count_spare_at_failover();
    if (promote_spare() || await_spare()) return;
    state.failover.fresh_starts.fetch_add(1);
  }
  restart_timer_.expires_after(decision.delay);
  restart_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) start_worker();
  });
}

// What the spare was at this failover, for ondemand-chaos to split its
// timings by (proto/shm_layout.h FailoverCounters): one counter per
// failover.
void Supervisor::count_spare_at_failover() {
  auto& failover = shm_->state().failover;
  if (!spare_ || spare_->killed_by_us)
    failover.no_spare.fetch_add(1);
  else if (spare_->handshake_ok)
    failover.spare_ready.fetch_add(1);
  else
    failover.spare_starting.fetch_add(1);
}

// The serving worker is dead: name the request it was stuck on, from the
// note its heartbeat left in the shared memory (proto/shm_layout.h
// RequestNote; a dead writer cannot tear it). A request that kills or
// stalls every worker comes back to the next one through `restore`; the
// same request at consecutive deaths of workers that died on their own (a
// crash, a watchdog kill: not a kill from outside, not a clean exit) is
// said to be the likely cause, so the restart backoff that follows has a
// name. The next worker clears the note before it serves.
void Supervisor::name_death_request(pid_t pid, bool own_death) {
  auto& state = shm_->state();
  const auto since = state.oldest_request_ns.load();
  const auto& text = state.oldest_request.text;
  const std::string what = worker::escape_id(std::string_view(text, ::strnlen(text, sizeof text)));
  if (since == 0 || what.empty()) {
    death_request_.clear();
    death_request_repeats_ = 0;
    return;
  }
  const auto now = sys::monotonic_ns();
  const auto age_ms = now > since ? (now - since) / 1'000'000 : 0;
  if (!own_death) {
    spdlog::info("worker pid={} had requests in flight, the oldest without progress for {} ms: {}", pid, age_ms, what);
    return;
  }
  death_request_repeats_ = what == death_request_ ? death_request_repeats_ + 1 : 1;
  death_request_ = what;
  LogFields fields({{"MESSAGE_ID", std::string(proto::log_event::DEATH_REQUEST)},
                    {"REQUEST", what},
                    {"REPEATS", std::to_string(death_request_repeats_)}});
  if (death_request_repeats_ >= 2)
    spdlog::error("the same request was in flight when each of the last {} workers died on their own: {} (without "
                  "progress for {} ms): likely a request that kills or stalls every worker it reaches (restore "
                  "hands it to the next one)",
                  death_request_repeats_, what, age_ms);
  else
    spdlog::warn("worker pid={} died with a request in flight, the oldest without progress for {} ms: {}", pid,
                 age_ms, what);
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

// ---- the spare pool ----

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
  watch(*spare_);
}

void Supervisor::on_spare_exit() {
  spare_.reset();
  if (shutting_down_) return;
  if (awaiting_spare_) {
    spdlog::warn("the spare a failover was waiting for died: starting a fresh worker");
    end_spare_wait(/*ready=*/false);
  }
  // A spare that cannot start must not spin: retry slowly, and at the park
  // cadence once it keeps failing.
  const auto delay = ++spare_failures_ >= SPARE_FAILURES_BEFORE_SLOW_RETRY
                         ? std::chrono::milliseconds(config_.park_retry_ms)
                         : std::chrono::duration_cast<std::chrono::milliseconds>(SPARE_RETRY);
  spare_timer_.expires_after(delay);
  spare_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) maybe_spawn_spare();
  });
}

// Liveness before promotion: a spare that cannot run (stopped by a signal
// or a debugger, a zombie) would only cost serve_timeout_ms, or SPARE_AWAIT
// if it is still starting. Such a spare is killed.
bool Supervisor::spare_runnable() {
  const char state = sys::process_state(spare_->pid);
  if (state != 'T' && state != 't' && state != 'Z' && state != 0) return true;
  spdlog::warn("spare worker pid={} is not runnable (state {}); starting a fresh worker", spare_->pid,
               state ? std::string(1, state) : std::string("unknown"));
  spare_->kill("spare not runnable at failover");
  retired_.push_back(std::move(spare_));
  return false;
}

// Failover while the spare is still starting (spawned, no handshake yet):
// it is part-way through the process start a fresh worker would begin from
// nothing, and a second start beside it would only share the CPU with it.
// So the failover waits for its handshake and promotes it then, for at most
// SPARE_AWAIT; if it dies first, or takes longer, a fresh worker starts.
// Called once the previous worker is reaped, like promote_spare.
bool Supervisor::await_spare() {
  if (!spare_ || spare_->handshake_ok || spare_->killed_by_us || !spare_runnable()) return false;
  set_state(proto::WorkerState::STARTING);
  awaiting_spare_ = true;
  spdlog::info("spare worker pid={} is still starting ({:.0f} ms after its spawn): promoting it once its "
               "handshake completes",
               spare_->pid, ms_since(spare_->started));
  spare_->on_ready = [this] {
    if (awaiting_spare_) end_spare_wait(/*ready=*/true);
  };
  spare_wait_timer_.expires_after(SPARE_AWAIT);
  spare_wait_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || !awaiting_spare_) return;
    spdlog::warn("the spare a failover was waiting for has no handshake after {} ms: starting a fresh worker",
                 std::chrono::duration_cast<std::chrono::milliseconds>(SPARE_AWAIT).count());
    end_spare_wait(/*ready=*/false);
  });
  return true;
}

// The wait of await_spare is over: promote the spare, or start afresh.
void Supervisor::end_spare_wait(bool ready) {
  awaiting_spare_ = false;
  spare_wait_timer_.cancel();
  if (spare_) spare_->on_ready = nullptr;
  if (ready && promote_spare()) return;
  shm_->state().failover.fresh_starts.fetch_add(1);
  start_worker();
}

// Failover without a process start: the spare already holds the device and
// only waits for "takeover" to restore and read. Called once the previous
// worker is reaped.
bool Supervisor::promote_spare() {
  if (!spare_ || !spare_->handshake_ok || spare_->killed_by_us || !spare_runnable()) return false;
  // Record who serves before it can serve: observers (pid file, status,
  // ondemand-chaos) must never see the new generation with the old pid.
  auto& state = shm_->state();
  set_state(proto::WorkerState::STARTING);
  state.worker_pid.store(static_cast<std::uint64_t>(spare_->pid));
  state_dir_->write_pid_file(spare_->pid);
  // Generations number workers in the order they start serving: the spare
  // may have been spawned before the worker that just died.
  spare_->generation = state.generation.fetch_add(1) + 1;
  try {
    spare_->send(proto::msg::Takeover{spare_->generation});
  } catch (const ChannelError& e) {
    spdlog::warn("spare worker pid={} unreachable ({}); starting a fresh worker", spare_->pid, e.what());
    spare_->kill("unreachable spare");
    retired_.push_back(std::move(spare_));
    return false;
  }
  worker_ = std::move(spare_);
  worker_->started = Clock::now();
  state.failover.promoted.fetch_add(1);
  spdlog::info("promoted spare worker pid={} generation={}: restoring and serving", worker_->pid,
               worker_->generation);
  return true;
}

}  // namespace ondemand::supervisor
