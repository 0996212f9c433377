// Datagrams with descriptors over AF_UNIX SOCK_SEQPACKET (SCM_RIGHTS).
//
// Receiving is paranoid (after libfuse's __recv_fd): the control buffer is
// sized for the caller's maximum, fds arrive with MSG_CMSG_CLOEXEC, a
// truncated payload or control message is an error, every cmsg's
// level/type/len is checked, and every received fd is owned by a UniqueFd
// before anything can fail, so no error path leaks one.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace ondemand {

struct ReceivedMessage {
  std::string bytes;
  std::vector<UniqueFd> fds;
  int err = 0;                // errno-style; EMSGSIZE for truncation
  // recvmsg returns 0 both for a zero-length datagram and at EOF; only the
  // socket's hang-up state (POLLHUP/POLLRDHUP) tells them apart. An empty
  // datagram from a live peer has closed == false and empty bytes.
  bool closed = false;
  bool peer_closed() const { return closed; }
};

// Sends one datagram; returns 0 or an errno. Never raises SIGPIPE.
int send_message(int sock, std::string_view bytes, std::span<const int> fds = {});

// Receives one datagram. max_fds bounds the control buffer; receiving more
// (MSG_CTRUNC) is an error. Non-blocking sockets give EAGAIN.
ReceivedMessage recv_message(int sock, std::size_t max_bytes, std::size_t max_fds);

// Creates a SOCK_SEQPACKET socketpair with CLOEXEC on both ends.
struct SocketPair {
  UniqueFd a, b;
  int err = 0;
};
SocketPair make_seqpacket_pair();

}  // namespace ondemand
