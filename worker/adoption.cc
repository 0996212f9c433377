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
#include "worker/worker.h"
#include "worker/worker_internal.h"

namespace ondemand::worker {
namespace asio = boost::asio;

// ---- adoption by a new supervisor ----

void Worker::listen_for_supervisor() {
  if (adoption_) return;
  try {
    adoption_ = std::make_unique<AdoptionListener>(
        loop_, config_.state_dir, [this](UniqueFd conn, pid_t pid) { finish_adoption(std::move(conn), pid); });
  } catch (const UnixSocketError& e) {
    spdlog::error("{}; adoption by a new supervisor will not work", e.what());
  }
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
