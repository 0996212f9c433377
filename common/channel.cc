#include "common/channel.h"

#include <poll.h>

#include <fmt/format.h>

#include "common/fd_passing.h"
#include "common/sys.h"

namespace ondemand {

ChannelMessage receive_message(int sock, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) throw ChannelError("timed out waiting for a message");
    pollfd p{sock, POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) throw ChannelError(fmt::format("poll: {}", sys::errno_name(errno)));
    if (rc == 0) continue;
    auto received = recv_message(sock, proto::MAX_MESSAGE_BYTES, proto::MAX_FDS_PER_MESSAGE);
    if (received.err == EAGAIN) continue;
    if (received.err) throw ChannelError(fmt::format("recvmsg: {}", sys::errno_name(received.err)));
    if (received.peer_closed()) throw ChannelError("peer closed the channel");
    auto decoded = proto::decode(received.bytes, received.fds.size());
    if (auto* err = std::get_if<proto::DecodeError>(&decoded))
      throw ChannelError(fmt::format("bad message: {}", err->what));
    return {std::move(std::get<proto::Message>(decoded)), std::move(received.fds)};
  }
}

void send(int sock, const proto::Message& m, std::span<const int> fds) {
  if (fds.size() != proto::fds_of(m))
    throw ChannelError(fmt::format("\"{}\" carries {} fds, {} given", proto::type_of(m), proto::fds_of(m), fds.size()));
  const std::string bytes = proto::encode(m);
  if (bytes.empty())
    throw ChannelError(fmt::format("\"{}\" does not fit one datagram ({} bytes at most)", proto::type_of(m),
                                   proto::MAX_MESSAGE_BYTES));
  if (int err = send_message(sock, bytes, fds))
    throw ChannelError(fmt::format("sendmsg: {}", sys::errno_name(err)));
}

bool send_quietly(int sock, const proto::Message& m) noexcept {
  try {
    send(sock, m);
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace ondemand
