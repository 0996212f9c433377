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
  if (!adoption_)
    adoption_ = AdoptionListener::start(loop_, config_.state_dir,
                                        [this](UniqueFd conn, pid_t pid) { finish_adoption(std::move(conn), pid); });
}

// The peer's hello is waiting (or it closed): answer it.
void Worker::finish_adoption(UniqueFd conn, pid_t peer_pid) {
  try {
    // Busy rather than refused: our successor (or nobody, once we are gone)
    // answers the next attempt.
    const char* busy = greeting_ || handing_over_ ? "handing over to an upgrade's successor" : stopping_ ? "stopping" : nullptr;
    if (!answer_adopter(conn.get(), peer_pid, busy, supervisor_gone_)) return;
    const int fds[] = {device_->fd()};
    send(conn.get(),
         proto::msg::Adopt{.pid = ::getpid(),
                           .generation = generation_,
                           .rdev = rdev_,
                           .version = std::string(proto::VERSION),
                           .serving = reading_},
         fds);
  } catch (const ChannelError& e) {
    spdlog::warn("adoption by pid={} failed: {}", peer_pid, e.what());
    return;
  }
  spdlog::info("adopted by a new supervisor pid={}", peer_pid);
  channel_ = std::move(conn);
  (void)sys::set_nonblocking(channel_.get());
  supervisor_gone_ = false;
  watch_channel();
}

}  // namespace ondemand::worker
