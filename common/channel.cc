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
    auto decoded = proto::decode_message(received.bytes);
    if (auto* err = std::get_if<proto::DecodeError>(&decoded))
      throw ChannelError(fmt::format("bad message: {}", err->what));
    auto& msg = std::get<proto::DecodedMessage>(decoded);
    if (msg.announced_fds != received.fds.size())
      throw ChannelError(fmt::format("message \"{}\" announced {} fds but carried {}", msg.type,
                                     msg.announced_fds, received.fds.size()));
    return {std::move(msg), std::move(received.fds)};
  }
}

void send_json(int sock, const nlohmann::json& body, std::span<const int> fds) {
  if (int err = send_message(sock, proto::encode_message(body), fds))
    throw ChannelError(fmt::format("sendmsg: {}", sys::errno_name(err)));
}

}  // namespace ondemand
