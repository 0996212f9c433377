// The supervisor's control socket (proto/control.h): accepts one request per
// connection, checks the peer's uid with SO_PEERCRED, answers through a
// handler, and never lets a bad peer block or crash the supervisor (every
// connection has a deadline; every parse error becomes an error reply).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "common/unique_fd.h"
#include "proto/control.h"

namespace ondemand::supervisor {

class ControlServer {
 public:
  using Reply = std::function<void(const proto::ControlReply&)>;
  // The handler must call `reply` exactly once, now or later.
  using Handler = std::function<void(const proto::ControlRequest&, Reply)>;

  // Binds <state_dir>/control.sock (replacing a stale one), mode 0600, or
  // 0666 when allowed_uids is not empty (who may do what: control_policy.h).
  // Throws std::runtime_error on failure.
  ControlServer(boost::asio::io_context& loop, const std::filesystem::path& state_dir,
                std::vector<uid_t> allowed_uids, Handler handler);
  ~ControlServer();

 private:
  void accept_next();
  void serve(UniqueFd connection);

  boost::asio::io_context& loop_;
  std::filesystem::path path_;
  std::vector<uid_t> allowed_uids_;
  Handler handler_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> listener_;
};

}  // namespace ondemand::supervisor
