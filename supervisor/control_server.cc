#include "supervisor/control_server.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/fd_passing.h"
#include "common/sys.h"
#include "common/unix_socket.h"
#include "supervisor/control_policy.h"

namespace ondemand::supervisor {
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {
constexpr auto CONNECTION_DEADLINE = 5s;

// One accepted connection: waits (bounded) for its request, answers once.
struct Connection : std::enable_shared_from_this<Connection> {
  Connection(asio::io_context& loop, UniqueFd fd)
      : socket(loop, fd.release()), deadline(loop) {}
  asio::posix::stream_descriptor socket;
  asio::steady_timer deadline;
  bool replied = false;

  void send(const proto::ControlReply& reply) {
    if (replied) return;
    replied = true;
    deadline.cancel();
    auto bytes = proto::encode_reply(reply);
    if (bytes.empty()) bytes = proto::encode_reply(proto::control::Error{"reply too large for one datagram"});
    // Best effort: a peer that went away does not matter.
    (void)send_message(socket.native_handle(), bytes);
    boost::system::error_code ignored;
    socket.close(ignored);
  }
};
}  // namespace

ControlServer::ControlServer(asio::io_context& loop, const std::filesystem::path& state_dir,
                             std::vector<uid_t> allowed_uids, Handler handler)
    : loop_(loop),
      path_(state_dir / std::string(proto::CONTROL_SOCKET_NAME)),
      allowed_uids_(std::move(allowed_uids)),
      handler_(std::move(handler)) {
  // Root only: 0600 from the start, no window where others could connect.
  // With control_uids the socket is 0666 so they can reach it; SO_PEERCRED
  // and control_policy.h then decide, per command.
  auto fd = listen_seqpacket(path_, allowed_uids_.empty() ? 0600 : 0666, 16);
  listener_ = std::make_unique<asio::posix::stream_descriptor>(loop_, fd.release());
  spdlog::info("control socket {}", path_.string());
  accept_next();
}

ControlServer::~ControlServer() {
  if (listener_) ::unlink(path_.c_str());
}

void ControlServer::accept_next() {
  listener_->async_wait(asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
    if (ec) return;
    for (;;) {
      UniqueFd conn{::accept4(listener_->native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK)};
      if (!conn) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
          spdlog::warn("control accept: {}", sys::errno_name(errno));
        if (errno == EINTR || errno == ECONNABORTED) continue;
        break;
      }
      serve(std::move(conn));
    }
    accept_next();
  });
}

void ControlServer::serve(UniqueFd fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
    spdlog::warn("control: SO_PEERCRED failed: {}", sys::errno_name(errno));
    return;
  }
  auto conn = std::make_shared<Connection>(loop_, std::move(fd));
  const bool allowed = cred.uid == 0 ||
                       std::find(allowed_uids_.begin(), allowed_uids_.end(), cred.uid) != allowed_uids_.end();
  conn->deadline.expires_after(CONNECTION_DEADLINE);
  conn->deadline.async_wait([conn](boost::system::error_code ec) {
    if (!ec) conn->send(proto::control::Error{"no request within the deadline"});
  });
  conn->socket.async_wait(asio::posix::stream_descriptor::wait_read,
                          [this, conn, cred, allowed](boost::system::error_code ec) {
    if (ec || conn->replied) return;
    // The deadline bounds a silent peer, not the command: an upgrade may
    // take longer, and its own bounds end it with a reply.
    conn->deadline.cancel();
    auto received = recv_message(conn->socket.native_handle(), proto::CONTROL_MAX_BYTES, 0);
    // A refused peer is answered only after its request is read: closing a
    // unix socket with unread data resets the connection, and the peer then
    // gets ECONNRESET instead of the reason.
    if (!allowed) {
      spdlog::warn("control: refused peer pid={} uid={} (not root, not in control_uids)", cred.pid, cred.uid);
      conn->send(proto::control::Error{fmt::format("uid {} is not allowed", cred.uid)});
      return;
    }
    if (received.err || received.peer_closed()) {
      conn->send(proto::control::Error{received.err ? "request rejected: " + sys::errno_name(received.err)
                                                    : "empty request"});
      return;
    }
    auto decoded = proto::decode_request(received.bytes);
    if (auto* error = std::get_if<std::string>(&decoded)) {
      spdlog::warn("control: bad request from pid={} uid={}: {}", cred.pid, cred.uid, *error);
      conn->send(proto::control::Error{*error});
      return;
    }
    auto& request = std::get<proto::ControlRequest>(decoded);
    const auto* upgrade = std::get_if<proto::control::Upgrade>(&request);
    if (auto refusal = control_refusal(proto::command_of(request), upgrade && upgrade->binary.has_value(), cred.uid,
                                       allowed_uids_)) {
      spdlog::warn("control: refused \"{}\" from pid={}: {}", proto::command_of(request), cred.pid, *refusal);
      return conn->send(proto::control::Error{*refusal});
    }
    spdlog::info("control: \"{}\" from pid={} uid={}", proto::command_of(request), cred.pid, cred.uid);
    handler_(request, [conn](const proto::ControlReply& reply) { conn->send(reply); });
  });
}

}  // namespace ondemand::supervisor
