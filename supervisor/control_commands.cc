// What ondemandctl asks (proto/control.h): status, bindings, reload,
// restart, upgrade, stop. Each command either answers at once or hands the
// reply to the life cycle that will finish it (an upgrade answers when it
// ends).
#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "metrics/exposition.h"
#include "supervisor/supervisor.h"
#include "supervisor/supervisor_internal.h"

namespace ondemand::supervisor {
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {
// The keys a running supervisor cannot apply: reload refuses changes to them.
std::vector<std::string> restart_only_changes(const Config& a, const Config& b) {
  std::vector<std::string> changed;
  auto check = [&](const char* key, bool same) {
    if (!same) changed.emplace_back(key);
  };
  check("cache_dir", a.cache_dir == b.cache_dir);
  check("tag", a.tag == b.tag);
  check("frontend", a.frontend == b.frontend);
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

void Supervisor::handle_control(const proto::ControlRequest& request, ControlServer::Reply reply) {
  using namespace proto::control;
  if (std::holds_alternative<Status>(request)) return reply(status());
  if (std::holds_alternative<ListBindings>(request)) return reply(bindings_->list());
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
  if (const auto* b = std::get_if<Bind>(&request)) return reply(bindings_->bind(*b, config_));
  if (const auto* u = std::get_if<Unbind>(&request)) return reply(bindings_->unbind(*u));
  if (const auto* a = std::get_if<AddBlobs>(&request)) return add_blobs(*a, std::move(reply));
  if (const auto* stop = std::get_if<Stop>(&request)) {
    if (fanotify_ && !stop->force) {
      if (auto mounts = fanotify_mounts(); !mounts.empty())
        return reply(Error{fmt::format(
            "not stopping: {} mounted from the fanotify cache ({}); once the group closes their readers read "
            "zeros over what is not fetched yet. Unmount first, or ondemandctl stop --force",
            mounts.size() == 1 ? "an image is" : fmt::format("{} images are", mounts.size()),
            fmt::join(mounts, ", "))});
    }
    reply(Done{"stopping"});
    return shutdown();
  }
  reply(Error{fmt::format("command \"{}\" not handled", proto::command_of(request))});
}

proto::control::StatusReply Supervisor::status() const {
  const auto& st = shm_->state();
  const auto& c = st.counters;
  auto describe = [](const Handle& w) -> std::optional<proto::control::WorkerInfo> {
    if (!w) return std::nullopt;
    return w->info();
  };
  proto::control::StatusReply s{
      .supervisor_pid = ::getpid(),
      .version = std::string(proto::VERSION),
      .uptime_s = std::chrono::duration<double>(Clock::now() - started_).count(),
      .state = state_name(st.worker_state.load()),
      .worker = describe(worker_),
      .incoming_worker = describe(incoming_),
      .spare_worker = describe(spare_),
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

// Validates first: a config that does not parse, changes a key only a
// restart applies, or names an unreadable credentials file changes nothing.
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
  if (auto error = bindings_->publish_credentials(next); !error.empty()) {
    spdlog::warn("reload refused: {}", error);
    return proto::control::Error{error + "; nothing reloaded"};
  }
  if (auto error = state_dir_->write_snapshot(text); !error.empty()) {
    spdlog::error("reload failed: {}", error);
    return proto::control::Error{error + "; nothing reloaded"};
  }
  if (next.worker_binary.empty()) next.worker_binary = default_worker_binary();
  config_ = std::move(next);
  spdlog::info("config reloaded from {}: the next worker starts from it", config_path_.string());
  // A spare started from the old config would be the next worker: replace it.
  if (spare_) {
    spare_timer_.cancel();
    spare_->on_ready = nullptr;
    retire(std::move(spare_), "config reloaded");
    if (awaiting_spare_) {
      // A failover was waiting for that spare (failover.cc await_spare):
      // nothing is left to wait for, so the fresh worker starts now, not
      // when SPARE_AWAIT runs out.
      spdlog::info("the spare a failover was waiting for was started from the old config: starting a fresh worker");
      end_spare_wait(/*ready=*/false);
    } else {
      asio::post(loop_, [this] { maybe_spawn_spare(); });
    }
  }
  return proto::control::Done{fmt::format(
      "reloaded {}: takes effect for the next worker (the running one keeps the config it started with)",
      config_path_.string())};
}

void Supervisor::restart_worker() {
  policy_.reset();
  if (worker_) {
    spdlog::info("restart requested: asking worker pid={} to stop", worker_->pid);
    // Its clean exit restarts it at once (a stopped worker that had served).
    worker_->stop("restart requested and the channel is gone");
  } else {
    spdlog::info("restart requested while no worker runs: starting one now");
    restart_timer_.cancel();
    start_worker();
  }
}

}  // namespace ondemand::supervisor
