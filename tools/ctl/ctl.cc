#include "tools/ctl/ctl.h"

#include <poll.h>
#include <sys/socket.h>

#include <cstring>

#include <fmt/format.h>

#include "common/fd_passing.h"
#include "common/sys.h"
#include "common/unix_socket.h"
#include "proto/control.h"

namespace ondemand::ctl {

RawResult call_raw(const std::filesystem::path& socket_path, std::string_view request,
                   std::chrono::milliseconds timeout) {
  auto conn = connect_seqpacket(socket_path, timeout);
  if (!conn.fd) return {{}, conn.error};
  auto fd = std::move(conn.fd);
  if (int err = send_message(fd.get(), request)) return {{}, "send: " + sys::errno_name(err)};
  pollfd p{fd.get(), POLLIN, 0};
  int rc;
  do {
    rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
  } while (rc < 0 && errno == EINTR);
  if (rc == 0) return {{}, fmt::format("no reply within {} ms", timeout.count())};
  auto received = recv_message(fd.get(), proto::CONTROL_MAX_BYTES, 0);
  if (received.err) return {{}, "receive: " + sys::errno_name(received.err)};
  if (received.peer_closed()) return {{}, "supervisor closed the connection without a reply"};
  return {std::move(received.bytes), {}};
}

CallResult call(const std::filesystem::path& socket_path, const proto::ControlRequest& request,
                std::chrono::milliseconds timeout) {
  const auto bytes = proto::encode_request(request);
  if (bytes.empty()) return {std::nullopt, {}, "request too large"};
  auto raw = call_raw(socket_path, bytes, timeout);
  if (!raw.error.empty()) return {std::nullopt, {}, std::move(raw.error)};
  auto decoded = proto::decode_reply(raw.bytes, request);
  if (auto* error = std::get_if<std::string>(&decoded))
    return {std::nullopt, std::move(raw.bytes), "unreadable reply: " + *error};
  return {std::get<proto::ControlReply>(std::move(decoded)), std::move(raw.bytes), {}};
}

MetricsResult parse_http_reply(std::string_view reply) {
  MetricsResult r;
  const auto head_end = reply.find("\r\n\r\n");
  if (!reply.starts_with("HTTP/1.") || reply.size() < 12 || head_end == std::string_view::npos) {
    r.error = "not an HTTP reply";
    return r;
  }
  const auto code = reply.substr(9, 3);
  for (char c : code)
    if (c < '0' || c > '9') {
      r.error = fmt::format("bad HTTP status \"{}\"", code);
      return r;
    }
  r.http_status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
  r.body = std::string(reply.substr(head_end + 4));
  return r;
}

MetricsResult fetch_metrics(const std::filesystem::path& socket_path, std::chrono::milliseconds timeout) {
  UniqueFd fd{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (!fd) return {0, {}, "socket: " + sys::errno_name(errno)};
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.string().size() >= sizeof addr.sun_path) return {0, {}, "socket path too long"};
  std::strcpy(addr.sun_path, socket_path.c_str());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
    return {0, {}, fmt::format("connect {}: {}", socket_path.string(), sys::errno_name(errno))};
  constexpr std::string_view REQUEST = "GET /metrics HTTP/1.0\r\n\r\n";
  if (auto w = sys::write(fd.get(), REQUEST.data(), REQUEST.size()); !w.ok() || w.rc != std::int64_t(REQUEST.size()))
    return {0, {}, "send: " + sys::errno_name(w.err)};
  // Read to EOF: the server closes after its one reply. Bounded in time.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string reply;
  char buf[16384];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return {0, {}, fmt::format("no complete reply within {} ms", timeout.count())};
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) return {0, {}, "poll: " + sys::errno_name(errno)};
    if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
    auto n = sys::read(fd.get(), buf, sizeof buf);
    if (!n.ok()) return {0, {}, "receive: " + sys::errno_name(n.err)};
    if (n.rc == 0) break;
    reply.append(buf, static_cast<std::size_t>(n.rc));
  }
  return parse_http_reply(reply);
}

std::string format_status(const proto::control::StatusReply& s) {
  std::string out;
  out += fmt::format("{:<11} pid {}, version {}, up {:.1f} s\n", "supervisor", s.supervisor_pid, s.version,
                     s.uptime_s);
  out += fmt::format("{:<11} {}\n", "state", s.state);
  if (const auto& w = s.worker)
    out += fmt::format("{:<11} pid {}, generation {}, up {:.1f} s, {}\n", "worker", w->pid, w->generation,
                       w->uptime_s, w->serving ? "serving" : "not serving yet");
  else
    out += fmt::format("{:<11} none\n", "worker");
  out += fmt::format("{:<11} {}\n", "binary", s.worker_binary);
  out += fmt::format("{:<11} restarts {}, hangs detected {}, in flight {}\n", "health", s.restarts,
                     s.hangs_detected, s.inflight);
  const auto c = [&](const char* name) { return s.counter(name); };
  out += fmt::format("{:<11} opens {} (refused {}), reads {} (failed {}), closes {}\n", "requests", c("opens"),
                     c("open_refused"), c("reads"), c("read_failed"), c("closes"));
  out += fmt::format("{:<11} {:.1f} MiB written to the cache\n", "data",
                     static_cast<double>(c("bytes_written")) / (1 << 20));
  out += fmt::format("{:<11} {} at worker start, {} repair; unknown objects {}, bad messages {}\n", "restores",
                     c("restores"), c("restores_repair"), c("unknown_object"), c("bad_messages"));
  out += fmt::format("{:<11} culled {} objects ({:.1f} MiB) in {} passes, skipped {} in use and {} of unknown use; "
                     "{} writes refused with ENOBUFS\n",
                     "cache", c("culled_objects"), static_cast<double>(c("culled_bytes")) / (1 << 20),
                     c("cull_passes"), c("cull_skipped_busy"), c("cull_skipped_unknown"), c("cache_enobufs"));
  if (c("cache_dead") != 0)
    out += fmt::format("{:<11} DEAD after an I/O error on cache_dir: unmount, stop the service, repair the disk, "
                       "start it\n", "cache");
  return out;
}

std::string format_bindings(const proto::control::BindingsReply& reply) {
  if (reply.bindings.empty()) return "no bindings\n";
  std::string out = fmt::format("{:<24} {:<24} {:<32} {:<71} {}\n", "ID", "REGISTRY", "REPOSITORY", "DIGEST", "SIZE");
  for (const auto& b : reply.bindings)
    out += fmt::format("{:<24} {:<24} {:<32} {:<71} {}\n", b.id, b.registry, b.repository, b.digest,
                       b.size ? std::to_string(*b.size) : std::string("-"));
  return out;
}

}  // namespace ondemand::ctl
