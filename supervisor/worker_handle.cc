#include "supervisor/worker_handle.h"

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "common/fd_passing.h"
#include "common/log.h"
#include "common/sys.h"
#include "common/watch_fd.h"
#include "proto/log_events.h"

namespace ondemand::supervisor {
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {
constexpr auto UNREAPED_WARN_AFTER = 5s;
constexpr auto UNREAPED_WARN_EVERY = 10s;
}  // namespace

WorkerHandle::WorkerHandle(asio::io_context& loop, pid_t pid_, UniqueFd pidfd_, UniqueFd channel_)
    : pid(pid_), pidfd(std::move(pidfd_)), channel(std::move(channel_)), loop_(loop) {
  (void)sys::set_nonblocking(channel.get());
}

WorkerHandle::~WorkerHandle() = default;

void WorkerHandle::watch(Events events) {
  events_ = std::move(events);
  watch_exit();
  watch_channel();
}

void WorkerHandle::bound_handshake(std::chrono::steady_clock::duration bound) {
  handshake_timer_ = std::make_unique<asio::steady_timer>(loop_, bound);
  handshake_timer_->async_wait([this](boost::system::error_code ec) {
    if (!ec && !handshake_ok) kill("no handshake within the bound");
  });
}

void WorkerHandle::handshake_done() {
  handshake_ok = true;
  handshake_timer_.reset();
}

void WorkerHandle::watch_exit() {
  exit_watch_ = std::make_unique<asio::posix::stream_descriptor>(watch_fd(loop_, pidfd.get()));
  exit_watch_->async_wait(asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
    if (ec) return;
    if (auto status = try_reap(pidfd.get()))
      events_.exit(*this, *status);  // may destroy us
    else
      watch_exit();
  });
}

void WorkerHandle::watch_channel() {
  if (!channel_watch_)
    channel_watch_ = std::make_unique<asio::posix::stream_descriptor>(watch_fd(loop_, channel.get()));
  channel_watch_->async_wait(asio::posix::stream_descriptor::wait_read,
                             [this, alive = std::weak_ptr<char>(alive_)](boost::system::error_code ec) {
    if (ec) return;
    for (;;) {
      auto received = recv_message(channel.get(), proto::MAX_MESSAGE_BYTES, proto::MAX_FDS_PER_MESSAGE);
      if (received.err == EAGAIN) break;
      if (received.peer_closed() || received.err) return;  // its death follows through the pidfd
      auto decoded = proto::decode(received.bytes, received.fds.size());
      if (auto* msg = std::get_if<proto::Message>(&decoded)) {
        events_.message(*this, *msg);  // may destroy us
      } else {
        const auto& error = std::get<proto::DecodeError>(decoded);
        spdlog::warn("unrecognized message from worker pid={}: {}", pid, error.what);
        if (!handshake_ok)
          kill("malformed message during the handshake");
        else
          ondemand::send_quietly(channel.get(), proto::msg::Unrecognized{error.what});
      }
      if (alive.expired()) return;
    }
    watch_channel();
  });
}

void WorkerHandle::send(const proto::Message& m, std::span<const int> fds) { ondemand::send(channel.get(), m, fds); }

void WorkerHandle::send_quietly(const proto::Message& m) { (void)ondemand::send_quietly(channel.get(), m); }

void WorkerHandle::kill(const char* why) {
  if (killed_by_us) return;
  killed_by_us = true;
  killed_at = Clock::now();
  {
    LogFields fields({{"MESSAGE_ID", std::string(proto::log_event::WORKER_KILLED)},
                      {"WORKER_PID", std::to_string(pid)},
                      {"WORKER_GENERATION", std::to_string(generation)},
                      {"REASON", why}});
    spdlog::warn("killing worker pid={} generation={}: {}", pid, generation, why);
  }
  if (::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0) < 0)
    spdlog::error("pidfd_send_signal: {}", sys::errno_name(errno));
}

void WorkerHandle::stop(const char* why) {
  try {
    send(proto::msg::Stop{});
  } catch (const ChannelError&) {
    kill(why);
  }
}

proto::control::WorkerInfo WorkerHandle::info() const {
  const auto now = Clock::now();
  return proto::control::WorkerInfo{
      .pid = pid,
      .generation = generation,
      .version = version,
      .binary = binary.string(),
      .serving = serving,
      .adopted = adopted,
      .uptime_s = std::chrono::duration<double>(now - started).count(),
      // Set once we SIGKILLed it: how long its exit has been awaited.
      .killed_s_ago = killed_by_us ? std::optional<double>(std::chrono::duration<double>(now - killed_at).count())
                                   : std::nullopt};
}

// A worker we SIGKILLed whose exit the pidfd has not reported: it is stuck
// in the kernel (D state: a hung cache file system, a blocked device write).
// Nothing replaces it before it is gone, since it may still hold a request
// of the device, so the device is not read meanwhile: say so, every 10 s.
void WorkerHandle::warn_unreaped() {
  if (!killed_by_us) return;
  const auto now = Clock::now();
  if (now - killed_at < UNREAPED_WARN_AFTER || now - unreaped_logged_ < UNREAPED_WARN_EVERY) return;
  unreaped_logged_ = now;
  spdlog::error("worker pid={} generation={} killed {:.0f} s ago, not reaped (stuck in the kernel, D state?): no "
                "new worker until it exits, so nothing reads the device",
                pid, generation, std::chrono::duration<double>(now - killed_at).count());
}

}  // namespace ondemand::supervisor
