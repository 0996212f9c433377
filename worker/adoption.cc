// Adoption by a new supervisor: a worker whose supervisor died serves on
// and listens on <state_dir>/worker.sock; the next supervisor connects,
// and gets the device fd and the worker's channel (proto/channel.h).
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "common/fd_passing.h"
#include "common/sys.h"
#include "common/unix_socket.h"
#include "common/watch_fd.h"
#include "worker/worker.h"
#include "worker/worker_internal.h"

namespace ondemand::worker {
namespace asio = boost::asio;

// ---- adoption by a new supervisor ----

void Worker::listen_for_supervisor() {
  if (listener_) return;
  const auto path = config_.state_dir / std::string(proto::WORKER_SOCKET_NAME);
  // Renamed over the well-known path: an upgrade's successor replaces its
  // predecessor's socket atomically.
  UniqueFd fd;
  try {
    fd = listen_seqpacket(path, 0600, 4);
  } catch (const UnixSocketError& e) {
    spdlog::error("{}; adoption by a new supervisor will not work", e.what());
    return;
  }
  listener_path_ = path.string();
  listener_ = std::make_unique<asio::posix::stream_descriptor>(loop_, fd.release());
  accept_supervisor();
}

void Worker::accept_supervisor() {
  auto* listener = listener_.get();
  listener->async_wait(asio::posix::stream_descriptor::wait_read, [this, listener](boost::system::error_code ec) {
    if (ec || listener_.get() != listener) return;
    UniqueFd conn{::accept4(listener->native_handle(), nullptr, nullptr, SOCK_CLOEXEC)};
    if (conn) adopt(std::move(conn));
    if (listener_.get() == listener) accept_supervisor();
  });
}

void Worker::adopt(UniqueFd conn) {
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
  pending->watch.async_wait(asio::posix::stream_descriptor::wait_read,
                            [this, pending, cred](boost::system::error_code ec) {
    if (ec || pending->done) return;
    pending->done = true;
    pending->deadline.cancel();
    finish_adoption(std::move(pending->conn), cred.pid);
  });
}

// The peer's hello is waiting (or it closed): answer it.
void Worker::finish_adoption(UniqueFd conn, pid_t peer_pid) {
  struct { pid_t pid; } cred{peer_pid};
  try {
    // Read the hello first in every case, so a refusal reaches the peer as a
    // reply rather than as a broken pipe on its own hello.
    // Readable already: the bound only covers a datagram still in flight.
    auto hello = receive_message(conn.get(), std::chrono::milliseconds(100));
    const auto& peer_hello = expect<proto::msg::Hello>(hello, "hello");
    if (handing_over_ || stopping_) {
      // Not refused: a refusal makes the new supervisor give up, and no
      // answer at all made it start a second reader next to us. Our
      // successor (or nobody, once we are gone) answers the next attempt.
      const char* why = handing_over_ ? "handing over to an upgrade's successor" : "stopping";
      send_quietly(conn.get(), proto::msg::Busy{why, BUSY_RETRY_MS});
      spdlog::info("adoption by pid={}: busy ({})", cred.pid, why);
      return;
    }
    if (!supervisor_gone_) {
      const char* why = "worker still has a live supervisor";
      send_quietly(conn.get(), proto::msg::Refused{why});
      spdlog::warn("refused adoption by pid={}: {}", cred.pid, why);
      return;
    }
    negotiate_or_throw(peer_hello, "adopting supervisor");
    send(conn.get(), proto::make_hello("worker", ::getpid()));
    const int fds[] = {device_->fd()};
    send(conn.get(),
         proto::msg::Adopt{.pid = ::getpid(),
                           .generation = generation_,
                           .rdev = rdev_,
                           .version = std::string(proto::VERSION),
                           .serving = reading_},
         fds);
  } catch (const ChannelError& e) {
    // A malformed hello included: decoding is total.
    spdlog::warn("adoption by pid={} failed: {}", cred.pid, e.what());
    return;
  }
  spdlog::info("adopted by a new supervisor pid={}", cred.pid);
  channel_ = std::move(conn);
  (void)sys::set_nonblocking(channel_.get());
  supervisor_gone_ = false;
  watch_channel();
}

}  // namespace ondemand::worker
