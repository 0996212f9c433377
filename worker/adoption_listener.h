// <state_dir>/worker.sock, where a worker whose supervisor died waits for
// the next one (proto/channel.h, "adopt"). Both workers use it (worker.h
// for cachefiles, fanotify_worker.h): it accepts a connection, checks the
// peer's credentials, and waits on the event loop, bounded, for the peer's
// hello; the worker then answers that hello itself.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "common/unique_fd.h"

namespace ondemand::worker {

class AdoptionListener {
 public:
  // `conn` has a hello waiting (or its peer closed): read it within a short
  // bound. Called on the loop.
  using OnPeer = std::function<void(UniqueFd conn, pid_t peer_pid)>;

  // Binds <state_dir>/worker.sock (renamed over the path: an upgrade's
  // successor replaces its predecessor's socket atomically) and accepts.
  // Throws UnixSocketError naming the path.
  AdoptionListener(boost::asio::io_context& loop, const std::filesystem::path& state_dir, OnPeer on_peer);
  // Removes the socket only while it is still ours at its path.
  ~AdoptionListener();
  AdoptionListener(const AdoptionListener&) = delete;
  AdoptionListener& operator=(const AdoptionListener&) = delete;

  const std::string& path() const { return path_; }
  // Our socket is still the one at the path (no successor replaced it).
  bool at_path() const;

 private:
  void accept();
  void wait_for_hello(UniqueFd conn);

  boost::asio::io_context& loop_;
  std::string path_;
  OnPeer on_peer_;
  std::shared_ptr<boost::asio::posix::stream_descriptor> socket_;
};

}  // namespace ondemand::worker
