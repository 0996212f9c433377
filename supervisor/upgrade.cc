// Rolling upgrade (ondemandctl upgrade): an "incoming" worker of the new
// binary starts in standby, holding the device; the outgoing one drains and
// hands it its objects over a socketpair, worker to worker, then exits; the
// incoming one serves. Every step is bounded, and every failure leaves a
// worker serving (proto/channel.h has the conversation and its failure
// paths).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

#include "common/channel.h"
#include "common/fd_passing.h"
#include "common/log.h"
#include "proto/log_events.h"
#include "supervisor/supervisor.h"

namespace ondemand::supervisor {
namespace asio = boost::asio;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {
constexpr auto UPGRADE_DRAIN = 5s;         // outgoing worker must finish in-flight requests
constexpr auto UPGRADE_SERVE_LIMIT = 15s;  // incoming worker must serve after that
}  // namespace

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
  watch(*incoming_);
  // If it dies or fails its handshake instead, on_incoming_exit reports the failure.
}

// The incoming worker holds the device in standby: give each side one end
// of a fresh socketpair; the objects travel worker to worker, never
// through us.
void Supervisor::begin_handover() {
  if (!incoming_ || !worker_) return;
  auto pair = make_seqpacket_pair();
  if (pair.err) {
    incoming_->kill("socketpair failed");
    return;  // its death reports the failure
  }
  try {
    const int b_end[] = {pair.b.get()};
    incoming_->send(proto::msg::HandoverPeer{}, b_end);
    const int a_end[] = {pair.a.get()};
    worker_->send(proto::msg::Handover{static_cast<std::uint64_t>(std::chrono::milliseconds(UPGRADE_DRAIN).count())},
                  a_end);
    worker_->handover_sent = true;
    recorder_.handover_started(Clock::now());
  } catch (const ChannelError& e) {
    spdlog::error("upgrade: handover messages failed: {}", e.what());
    incoming_->kill("handover could not start");
    return;
  }
  // Bound 1: the outgoing worker drains and exits, or is killed (the
  // incoming one then restores). Bound 2: the incoming one serves.
  upgrade_timer_.expires_after(UPGRADE_DRAIN + 1s);
  upgrade_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    if (worker_ && incoming_) worker_->kill("did not hand over within the drain bound");
    upgrade_timer_.expires_after(UPGRADE_SERVE_LIMIT);
    upgrade_timer_.async_wait([this](boost::system::error_code ec2) {
      if (!ec2 && incoming_ && !incoming_->serving) incoming_->kill("did not serve in time after the handover");
    });
  });
}

// The incoming worker died (the outgoing one's death is failover.cc's).
void Supervisor::on_incoming_exit(const std::string& desc) {
  incoming_.reset();
  if (shutting_down_) return finish_shutdown_if_done();
  if (upgrade_reply_) finish_upgrade(false, fmt::format("the new worker {} before serving", desc));
  if (worker_ && worker_->handover_sent && !worker_->handed_over) {
    spdlog::info("asking worker pid={} to resume reading", worker_->pid);
    worker_->send_quietly(proto::msg::Resume{});
    set_state(proto::WorkerState::RUNNING);
  } else if (!worker_ || worker_->handed_over) {
    // Nobody is left to serve: a regular restart (with restore).
    if (worker_)
      worker_->kill("its successor died after the handover");
    else
      start_worker();
  }
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
  if (ok || (worker_ && worker_->serving)) set_state(proto::WorkerState::RUNNING);
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
