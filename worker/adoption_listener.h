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

// `conn` has a hello waiting (or its peer closed): read it within a short
// bound (answer_adopter). Called on the loop.
using OnPeer = std::function<void(UniqueFd conn, pid_t peer_pid)>;

// The first steps of every adoption, both workers alike: read the peer's
// hello; answer Busy{busy_why} when busy_why is set (a refusal would make
// the new supervisor give up, no answer made it start a second reader next
// to us), Refused while our own supervisor lives, else agree on a version
// and send our hello. True when the worker should now hand back what it
// holds; throws ChannelError (a malformed hello included).
bool answer_adopter(int conn, pid_t peer_pid, const char* busy_why, bool supervisor_gone);

class AdoptionListener {
 public:
  // The listener, or null when worker.sock cannot be bound (logged: the
  // worker serves on, only adoption will not work).
  static std::unique_ptr<AdoptionListener> start(boost::asio::io_context& loop,
                                                 const std::filesystem::path& state_dir, OnPeer on_peer);


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
