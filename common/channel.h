// Sending and receiving typed channel messages (proto/channel.h) over a
// SOCK_SEQPACKET socket, with their fds. The blocking receive is for
// startup handshakes, each bounded by a deadline; event-loop code receives
// with recv_message() and proto::decode() itself.
#pragma once

#include <chrono>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "proto/channel.h"

namespace ondemand {

struct ChannelMessage {
  proto::Message message;
  std::vector<UniqueFd> fds;
};

struct ChannelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Waits up to `timeout` for one message; throws ChannelError on timeout,
// peer close, transport error, or a message that does not decode (wrong
// fields, wrong fd count).
ChannelMessage receive_message(int sock, std::chrono::milliseconds timeout);

// Sends `m` with `fds` (as many as proto::fds_of(m)). Throws ChannelError
// on a transport error, an fd count that does not match, or a message too
// large for one datagram.
void send(int sock, const proto::Message& m, std::span<const int> fds = {});

// Like send(), for paths that have nothing to do about a failure (an answer
// to a peer that may be gone): returns false instead of throwing.
bool send_quietly(int sock, const proto::Message& m) noexcept;

}  // namespace ondemand
