#include "supervisor/metrics_server.h"

#include <sys/stat.h>

#include <array>
#include <optional>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "metrics/exposition.h"

namespace ondemand::supervisor {
namespace asio = boost::asio;

MetricsServerOptions metrics_options_from(const Config& config) {
  MetricsServerOptions o;
  o.unix_path = config.state_dir / METRICS_SOCKET_NAME;
  o.listen = config.metrics_listen;
  return o;
}

bool head_complete(std::string_view buffered) {
  return buffered.find("\r\n\r\n") != std::string_view::npos || buffered.find("\n\n") != std::string_view::npos;
}

std::string http_error(std::string_view status, std::string_view body) {
  return fmt::format("HTTP/1.0 {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n"
                     "Connection: close\r\n\r\n{}\n",
                     status, body.size() + 1, body);
}

std::string http_reply(std::string_view head, const std::function<std::string()>& render) {
  const auto eol = head.find('\n');
  auto line = head.substr(0, eol);
  if (line.ends_with('\r')) line.remove_suffix(1);
  // METHOD SP TARGET SP HTTP/x.y
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos ||
      !line.substr(sp2 + 1).starts_with("HTTP/"))
    return http_error("400 Bad Request", "expected a request line like \"GET /metrics HTTP/1.0\"");
  const auto method = line.substr(0, sp1);
  auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  target = target.substr(0, target.find('?'));
  if (target != "/metrics") return http_error("404 Not Found", "only /metrics is served here");
  if (method != "GET") return http_error("405 Method Not Allowed", "only GET is served here");
  const auto body = render();
  return fmt::format("HTTP/1.0 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                     metrics::CONTENT_TYPE, body.size(), body);
}

struct MetricsServer::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& l, MetricsServerOptions o, Render r)
      : loop(l), options(std::move(o)), render(std::move(r)) {}

  asio::io_context& loop;
  MetricsServerOptions options;
  Render render;
  // Shared with the connections, which may outlive us by a handler or two.
  std::shared_ptr<std::size_t> active = std::make_shared<std::size_t>(0);
  std::vector<std::unique_ptr<asio::local::stream_protocol::acceptor>> unix_acceptors;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> tcp_acceptors;
  std::vector<std::filesystem::path> socket_paths;  // unlinked on destruction
  std::vector<std::string> endpoints;

  void listen_unix(const std::filesystem::path& path);
  void listen_tcp(const ListenAddress& address);
  template <class Acceptor>
  void accept_next(Acceptor* acceptor);
};

namespace {

// One connection: read a request head (bounded), write one reply, close.
template <class Socket>
struct Connection : std::enable_shared_from_this<Connection<Socket>> {
  Connection(Socket s, std::weak_ptr<MetricsServer::Impl> srv, std::shared_ptr<std::size_t> count,
             std::size_t max_bytes)
      : socket(std::move(s)), deadline(socket.get_executor()), server(std::move(srv)),
        active(std::move(count)), max_request_bytes(max_bytes) {
    ++*active;
  }
  ~Connection() { --*active; }

  Socket socket;
  asio::steady_timer deadline;
  std::weak_ptr<MetricsServer::Impl> server;
  std::shared_ptr<std::size_t> active;
  std::size_t max_request_bytes;
  std::string request;
  std::array<char, 1024> chunk{};
  std::string reply;

  void start(std::chrono::milliseconds limit) {
    deadline.expires_after(limit);
    deadline.async_wait([self = this->shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->close();  // cancels the pending read or write
    });
    read_more();
  }

  void read_more() {
    socket.async_read_some(asio::buffer(chunk), [self = this->shared_from_this()](boost::system::error_code ec,
                                                                                  std::size_t n) {
      if (ec) return self->close();  // peer gone, or the deadline closed us
      self->request.append(self->chunk.data(), n);
      if (head_complete(self->request)) {
        auto srv = self->server.lock();
        if (!srv) return self->close();
        return self->respond(http_reply(self->request, srv->render));
      }
      if (self->request.size() > self->max_request_bytes)
        return self->respond(http_error("431 Request Header Fields Too Large",
                                        fmt::format("a request is at most {} bytes", self->max_request_bytes)));
      self->read_more();
    });
  }

  void respond(std::string text) {
    reply = std::move(text);
    asio::async_write(socket, asio::buffer(reply),
                      [self = this->shared_from_this()](boost::system::error_code, std::size_t) { self->close(); });
  }

  void close() {
    boost::system::error_code ignored;
    deadline.cancel();
    socket.shutdown(Socket::shutdown_both, ignored);
    socket.close(ignored);
  }
};

}  // namespace

template <class Acceptor>
void MetricsServer::Impl::accept_next(Acceptor* acceptor) {
  acceptor->async_accept([weak = weak_from_this(), acceptor](boost::system::error_code ec,
                                                             typename Acceptor::protocol_type::socket socket) {
    auto self = weak.lock();
    if (!self || ec == asio::error::operation_aborted) return;
    if (ec) {
      // EMFILE and friends persist: retry later instead of spinning the loop.
      spdlog::warn("metrics accept: {}; retrying in 100 ms", ec.message());
      auto retry = std::make_shared<asio::steady_timer>(self->loop, std::chrono::milliseconds(100));
      retry->async_wait([weak, acceptor, retry](boost::system::error_code) {
        if (auto again = weak.lock()) again->accept_next(acceptor);
      });
      return;
    } else if (*self->active >= self->options.max_connections) {
      // Over the cap: answer at once without waiting for the request. A
      // fresh socket's send buffer takes this short reply without blocking.
      boost::system::error_code ignored;
      socket.non_blocking(true, ignored);
      const auto busy = http_error("503 Service Unavailable",
                                   fmt::format("{} metrics connections already open", self->options.max_connections));
      socket.write_some(asio::buffer(busy), ignored);
      socket.close(ignored);
    } else {
      using Socket = typename Acceptor::protocol_type::socket;
      std::make_shared<Connection<Socket>>(std::move(socket), weak, self->active, self->options.max_request_bytes)
          ->start(self->options.deadline);
    }
    self->accept_next(acceptor);
  });
}

void MetricsServer::Impl::listen_unix(const std::filesystem::path& path) {
  // Replace a stale socket from an earlier run, but never anything else an
  // operator's config happens to name.
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      spdlog::error("metrics: {} exists and is not a socket; not serving metrics there", path.string());
      return;
    }
    ::unlink(path.c_str());
  }
  auto acceptor = std::make_unique<asio::local::stream_protocol::acceptor>(loop);
  boost::system::error_code ec;
  const asio::local::stream_protocol::endpoint endpoint(path.string());
  acceptor->open(endpoint.protocol(), ec);
  if (!ec) acceptor->bind(endpoint, ec);
  if (!ec) acceptor->listen(16, ec);
  if (!ec) {
    // Metrics are counts and states, no secrets; anyone who can reach the
    // directory may read them, as anyone on the machine can over loopback.
    ::chmod(path.c_str(), 0666);
    socket_paths.push_back(path);
    endpoints.push_back("unix:" + path.string());
    spdlog::info("metrics socket {}", path.string());
    accept_next(acceptor.get());
    unix_acceptors.push_back(std::move(acceptor));
    return;
  }
  spdlog::error("metrics: cannot listen on {}: {}; not serving metrics there", path.string(), ec.message());
}

void MetricsServer::Impl::listen_tcp(const ListenAddress& address) {
  boost::system::error_code ec;
  const auto ip = asio::ip::make_address(address.host, ec);
  const auto host_text = [&](std::uint16_t port) {
    return ip.is_v6() ? fmt::format("[{}]:{}", address.host, port) : fmt::format("{}:{}", address.host, port);
  };
  const auto text = host_text(address.port);
  if (ec) {
    spdlog::error("metrics: bad address {}: {}", text, ec.message());
    return;
  }
  auto acceptor = std::make_unique<asio::ip::tcp::acceptor>(loop);
  const asio::ip::tcp::endpoint endpoint(ip, address.port);
  acceptor->open(endpoint.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(endpoint, ec);
  if (!ec) acceptor->listen(16, ec);
  if (!ec) {
    // The bound port: port 0 (tests) asks the kernel for a free one.
    const auto bound = host_text(acceptor->local_endpoint().port());
    endpoints.push_back("tcp:" + bound);
    spdlog::info("metrics on http://{}/metrics", bound);
    accept_next(acceptor.get());
    tcp_acceptors.push_back(std::move(acceptor));
    return;
  }
  spdlog::error("metrics: cannot listen on {}: {}; not serving metrics there", text, ec.message());
}

MetricsServer::MetricsServer(asio::io_context& loop, MetricsServerOptions options, Render render) {
  auto impl = std::make_shared<Impl>(loop, std::move(options), std::move(render));
  if (!impl->options.unix_path.empty()) impl->listen_unix(impl->options.unix_path);
  if (impl->options.listen) {
    if (impl->options.listen->is_unix())
      impl->listen_unix(impl->options.listen->unix_path);
    else
      impl->listen_tcp(*impl->options.listen);
  }
  impl_ = std::move(impl);
}

MetricsServer::~MetricsServer() {
  for (const auto& path : impl_->socket_paths) ::unlink(path.c_str());
}

const std::vector<std::string>& MetricsServer::endpoints() const { return impl_->endpoints; }

}  // namespace ondemand::supervisor
