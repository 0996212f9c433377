// A readiness watch on an fd someone else owns: an asio descriptor over a
// close-on-exec duplicate, so closing (or destroying) the watch leaves the
// owner's fd open and a spawned child inherits neither copy. Plain dup(2)
// clears FD_CLOEXEC: spare and upgrade workers then inherited their
// siblings' pidfds and the supervisor's ends of their channels, and a
// worker's channel no longer closed when its supervisor died.
#pragma once

#include <stdexcept>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <fmt/format.h>

#include "common/sys.h"

namespace ondemand {

// Throws std::runtime_error naming the fd when it cannot be duplicated
// (EMFILE): the caller cannot watch it at all.
inline boost::asio::posix::stream_descriptor watch_fd(boost::asio::io_context& loop, int fd) {
  auto dup = sys::dup_cloexec(fd);
  if (!dup.fd) throw std::runtime_error(fmt::format("cannot watch fd {}: F_DUPFD_CLOEXEC: {}", fd, sys::errno_name(dup.err)));
  return boost::asio::posix::stream_descriptor(loop, dup.fd.release());
}

}  // namespace ondemand
