#include "worker/adoption_listener.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "common/unix_socket.h"
#include "common/watch_fd.h"
#include "proto/channel.h"
#include "worker/worker_internal.h"

namespace ondemand::worker {
namespace asio = boost::asio;

std::unique_ptr<AdoptionListener> AdoptionListener::start(asio::io_context& loop,
                                                         const std::filesystem::path& state_dir, OnPeer on_peer) {
  try {
    return std::make_unique<AdoptionListener>(loop, state_dir, std::move(on_peer));
  } catch (const UnixSocketError& e) {
    spdlog::error("{}; adoption by a new supervisor will not work", e.what());
    return nullptr;
  }
}

bool answer_adopter(int conn, pid_t peer_pid, const char* busy_why, bool supervisor_gone) {
  // Read the hello first in every case, so a refusal reaches the peer as a
  // reply rather than as a broken pipe on its own hello. Readable already:
  // the bound only covers a datagram still in flight.
  auto hello = receive_message(conn, std::chrono::milliseconds(100));
  const auto& peer_hello = expect<proto::msg::Hello>(hello, "hello");
  if (busy_why) {
    send_quietly(conn, proto::msg::Busy{busy_why, BUSY_RETRY_MS});
    spdlog::info("adoption by pid={}: busy ({})", peer_pid, busy_why);
    return false;
  }
  if (!supervisor_gone) {
    const char* why = "worker still has a live supervisor";
    send_quietly(conn, proto::msg::Refused{why});
    spdlog::warn("refused adoption by pid={}: {}", peer_pid, why);
    return false;
  }
  negotiate_or_throw(peer_hello, "adopting supervisor");
  send(conn, proto::make_hello("worker", ::getpid()));
  return true;
}

AdoptionListener::AdoptionListener(asio::io_context& loop, const std::filesystem::path& state_dir, OnPeer on_peer)
    : loop_(loop),
      path_((state_dir / std::string(proto::WORKER_SOCKET_NAME)).string()),
      on_peer_(std::move(on_peer)) {
  auto fd = listen_seqpacket(path_, 0600, 4);
  socket_ = std::make_shared<asio::posix::stream_descriptor>(loop_, fd.release());
  accept();
}

AdoptionListener::~AdoptionListener() {
  if (at_path()) ::unlink(path_.c_str());
  // A pending accept holds `socket_` alive past us: close it now, so the
  // handler runs with an error and nobody connects to a dead listener.
  boost::system::error_code ignored;
  socket_->close(ignored);
}

bool AdoptionListener::at_path() const {
  struct stat path_st {}, fd_st {};
  return socket_->is_open() && ::stat(path_.c_str(), &path_st) == 0 &&
         ::fstat(socket_->native_handle(), &fd_st) == 0 && path_st.st_ino == fd_st.st_ino &&
         path_st.st_dev == fd_st.st_dev;
}

void AdoptionListener::accept() {
  socket_->async_wait(asio::posix::stream_descriptor::wait_read, [this, socket = socket_](boost::system::error_code ec) {
    if (ec || !socket->is_open()) return;  // closed: `this` may be gone
    UniqueFd conn{::accept4(socket->native_handle(), nullptr, nullptr, SOCK_CLOEXEC)};
    if (conn) wait_for_hello(std::move(conn));
    accept();
  });
}

void AdoptionListener::wait_for_hello(UniqueFd conn) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
      (cred.uid != 0 && cred.uid != ::getuid())) {
    spdlog::warn("worker.sock: refused peer uid={}", cred.uid);
    return;
  }
  // Wait for the peer's hello on the event loop, never in a blocking
  // receive: a peer that connects and says nothing must not stall the
  // requests this loop serves (it did, for PEER_TIMEOUT, as long as the
  // watchdog's limit). Bounded by PEER_TIMEOUT; each pending peer owns its
  // connection, watch and timer.
  struct Pending {
    UniqueFd conn;
    asio::posix::stream_descriptor watch;
    asio::steady_timer deadline;
    bool done = false;
  };
  std::shared_ptr<Pending> pending;
  try {
    auto watch = watch_fd(loop_, conn.get());
    pending = std::make_shared<Pending>(Pending{std::move(conn), std::move(watch), asio::steady_timer(loop_), false});
  } catch (const std::exception& e) {
    spdlog::warn("adoption by pid={} not attempted: {}", cred.pid, e.what());
    return;
  }
  pending->deadline.expires_after(PEER_TIMEOUT);
  pending->deadline.async_wait([pending, pid = cred.pid](boost::system::error_code ec) {
    if (ec || pending->done) return;
    pending->done = true;
    spdlog::warn("adoption by pid={} abandoned: no hello within {} s", pid, PEER_TIMEOUT.count());
    pending->watch.cancel();
  });
  // on_peer_ is copied: the listener may be gone (an upgrade resumed, a
  // stop) by the time the hello comes; the worker outlives its loop.
  pending->watch.async_wait(asio::posix::stream_descriptor::wait_read,
                            [on_peer = on_peer_, pending, pid = cred.pid](boost::system::error_code ec) {
    if (ec || pending->done) return;
    pending->done = true;
    pending->deadline.cancel();
    on_peer(std::move(pending->conn), pid);
  });
}

}  // namespace ondemand::worker
