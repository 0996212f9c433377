#include "common/fd_passing.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace ondemand {

int send_message(int sock, std::string_view bytes, std::span<const int> fds) {
  if (fds.size() > 253) return EINVAL;  // SCM_MAX_FD
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.assign(CMSG_SPACE(sizeof(int) * fds.size()), 0);
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    ssize_t rc = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (rc >= 0) return static_cast<std::size_t>(rc) == bytes.size() ? 0 : EMSGSIZE;
    if (errno != EINTR) return errno;
  }
}

ReceivedMessage recv_message(int sock, std::size_t max_bytes, std::size_t max_fds) {
  ReceivedMessage out;
  std::string buf(max_bytes + 1, '\0');  // +1: detect an oversize datagram
  iovec iov{buf.data(), buf.size()};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * (max_fds ? max_fds : 1)), 0);
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t rc;
  do {
    rc = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    out.err = errno;
    return out;
  }
  // Adopt every fd first, so the checks below cannot leak any.
  bool bad_cmsg = false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0)) {
      bad_cmsg = true;
      continue;
    }
    const std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      out.fds.emplace_back(fd);
    }
  }
  if ((msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) || static_cast<std::size_t>(rc) > max_bytes ||
      out.fds.size() > max_fds) {
    out.fds.clear();
    out.bytes.clear();
    out.err = EMSGSIZE;
    return out;
  }
  if (bad_cmsg) {
    out.fds.clear();
    out.err = EPROTO;
    return out;
  }
  if (rc == 0 && out.fds.empty()) {
    // EOF or a zero-length datagram? The peer's close sets our socket's
    // shutdown state, which poll reports; a live peer's empty datagram
    // leaves it clear.
    pollfd p{sock, POLLRDHUP, 0};
    int prc;
    do {
      prc = ::poll(&p, 1, 0);
    } while (prc < 0 && errno == EINTR);
    out.closed = prc > 0 && (p.revents & (POLLHUP | POLLRDHUP));
    return out;
  }
  buf.resize(static_cast<std::size_t>(rc));
  out.bytes = std::move(buf);
  return out;
}

SocketPair make_seqpacket_pair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return {{}, {}, errno};
  return {UniqueFd{sv[0]}, UniqueFd{sv[1]}, 0};
}

}  // namespace ondemand
