#include "supervisor/metrics_server.h"

#include <sys/stat.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <catch2/catch.hpp>

#include <thread>

#include "metrics/supervisor_metrics.h"
#include "tests/unit/test_util.h"
#include "tools/ctl/ctl.h"

namespace ondemand::supervisor {
namespace {
namespace asio = boost::asio;
using namespace std::chrono_literals;
using Local = asio::local::stream_protocol;

std::string render_fixed() { return "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n"; }

// A client on the server's own loop: connects, writes `request` (if any),
// reads until the server closes. The loop runs until then (bounded).
template <class Socket>
struct Client {
  Socket socket;
  std::string reply;
  bool done = false;
  std::array<char, 4096> chunk{};

  explicit Client(asio::io_context& loop) : socket(loop) {}
  void send(std::string_view request) { asio::write(socket, asio::buffer(request)); }
  void read_all() {
    socket.async_read_some(asio::buffer(chunk), [this](boost::system::error_code ec, std::size_t n) {
      reply.append(chunk.data(), n);
      if (ec) done = true;
      else read_all();
    });
  }
  bool run_until_closed(asio::io_context& loop) {
    read_all();
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!done && std::chrono::steady_clock::now() < deadline) loop.run_for(2ms);
    return done;
  }
};

struct Rig {
  test::TempDir dir;
  asio::io_context loop;
  std::unique_ptr<MetricsServer> server;
  int renders = 0;

  explicit Rig(MetricsServerOptions options = {}) {
    if (options.unix_path.empty()) options.unix_path = dir.path() / "metrics.sock";
    server = std::make_unique<MetricsServer>(loop, options, [this] {
      ++renders;
      return render_fixed();
    });
  }
  std::filesystem::path socket_path() const { return dir.path() / "metrics.sock"; }
  std::unique_ptr<Client<Local::socket>> connect() {
    auto c = std::make_unique<Client<Local::socket>>(loop);
    c->socket.connect(Local::endpoint(socket_path().string()));
    return c;
  }
  std::string get(std::string_view request) {
    auto c = connect();
    c->send(request);
    REQUIRE(c->run_until_closed(loop));
    return c->reply;
  }
};

}  // namespace

TEST_CASE("http_reply: GET /metrics gets the exposition, other requests a precise error", "[supervisor][metrics]") {
  int renders = 0;
  const auto render = [&] {
    ++renders;
    return std::string("x 1\n");
  };
  const auto ok = http_reply("GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n", render);
  CHECK(ok.starts_with("HTTP/1.0 200 OK\r\n"));
  CHECK_THAT(ok, Catch::Contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
  CHECK_THAT(ok, Catch::Contains("Content-Length: 4\r\n"));
  CHECK(ok.ends_with("\r\n\r\nx 1\n"));
  CHECK(http_reply("GET /metrics?x=1 HTTP/1.1\n\n", render).starts_with("HTTP/1.0 200 OK"));
  CHECK(renders == 2);
  CHECK(http_reply("GET / HTTP/1.0\r\n\r\n", render).starts_with("HTTP/1.0 404 "));
  CHECK(http_reply("POST /metrics HTTP/1.0\r\n\r\n", render).starts_with("HTTP/1.0 405 "));
  CHECK(http_reply("GET /metrics\r\n\r\n", render).starts_with("HTTP/1.0 400 "));
  CHECK(http_reply("GET /metrics FTP/1.0\r\n\r\n", render).starts_with("HTTP/1.0 400 "));
  CHECK(http_reply("GET  /metrics HTTP/1.0\r\n\r\n", render).starts_with("HTTP/1.0 400 "));
  CHECK(http_reply("\r\n\r\n", render).starts_with("HTTP/1.0 400 "));
  CHECK(renders == 2);  // errors never render
  CHECK(head_complete("GET / HTTP/1.0\r\n\r\n"));
  CHECK(head_complete("GET / HTTP/1.0\n\n"));
  CHECK(!head_complete("GET / HTTP/1.0\r\nHost: x\r\n"));
}

TEST_CASE("MetricsServer serves GET /metrics on its Unix socket, one request per connection",
          "[supervisor][metrics]") {
  Rig rig;
  REQUIRE(rig.server->endpoints() == std::vector<std::string>{"unix:" + rig.socket_path().string()});
  struct stat st{};
  REQUIRE(::stat(rig.socket_path().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0666);
  for (int i = 0; i < 3; ++i) {
    const auto reply = rig.get("GET /metrics HTTP/1.0\r\n\r\n");
    CHECK(reply.starts_with("HTTP/1.0 200 OK\r\n"));
    CHECK(reply.ends_with(render_fixed()));
  }
  CHECK(rig.get("GET /nope HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 404 "));
  CHECK(rig.renders == 3);
  rig.server.reset();
  CHECK(!std::filesystem::exists(rig.socket_path()));
}

TEST_CASE("MetricsServer: a request that never ends is cut at max_request_bytes with 431",
          "[supervisor][metrics]") {
  MetricsServerOptions o;
  o.max_request_bytes = 64;
  Rig rig(o);
  const auto reply = rig.get("GET /metrics HTTP/1.0\r\nX-Long: " + std::string(200, 'a'));
  CHECK(reply.starts_with("HTTP/1.0 431 "));
  CHECK(rig.renders == 0);
}

TEST_CASE("MetricsServer: a silent client is closed at its deadline", "[supervisor][metrics]") {
  MetricsServerOptions o;
  o.deadline = 50ms;
  Rig rig(o);
  auto c = rig.connect();
  REQUIRE(c->run_until_closed(rig.loop));  // no request sent: the server closes
  CHECK(c->reply.empty());
  // And it still serves the next one.
  CHECK(rig.get("GET /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 200 OK"));
}

TEST_CASE("MetricsServer: past max_connections a new connection gets 503 at once, then serving resumes",
          "[supervisor][metrics]") {
  MetricsServerOptions o;
  o.max_connections = 2;
  Rig rig(o);
  auto idle1 = rig.connect();
  auto idle2 = rig.connect();
  rig.loop.run_for(20ms);  // both accepted and waiting for their requests
  auto third = rig.connect();
  third->send("GET /metrics HTTP/1.0\r\n\r\n");
  REQUIRE(third->run_until_closed(rig.loop));
  CHECK(third->reply.starts_with("HTTP/1.0 503 "));
  CHECK(rig.renders == 0);
  idle1->socket.close();
  idle2->socket.close();
  rig.loop.run_for(20ms);  // the server sees both go
  CHECK(rig.get("GET /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 200 OK"));
}

TEST_CASE("MetricsServer: metrics_listen on loopback TCP", "[supervisor][metrics]") {
  MetricsServerOptions o;
  o.listen = ListenAddress{{}, "127.0.0.1", 0};  // port 0: any free port
  Rig rig(o);
  REQUIRE(rig.server->endpoints().size() == 2);
  const auto& tcp = rig.server->endpoints()[1];
  REQUIRE(tcp.starts_with("tcp:127.0.0.1:"));
  const auto port = static_cast<std::uint16_t>(std::stoi(tcp.substr(tcp.rfind(':') + 1)));
  Client<asio::ip::tcp::socket> c(rig.loop);
  c.socket.connect({asio::ip::make_address("127.0.0.1"), port});
  c.send("GET /metrics HTTP/1.0\r\n\r\n");
  REQUIRE(c.run_until_closed(rig.loop));
  CHECK(c.reply.starts_with("HTTP/1.0 200 OK"));
  CHECK(c.reply.ends_with(render_fixed()));
}

TEST_CASE("MetricsServer never replaces a file that is not a socket, and still serves elsewhere",
          "[supervisor][metrics]") {
  test::TempDir dir;
  const auto precious = dir.write("precious", "keep me");
  asio::io_context loop;
  MetricsServerOptions o;
  o.unix_path = dir.path() / "metrics.sock";
  o.listen = ListenAddress{precious, {}, 0};
  MetricsServer server(loop, o, render_fixed);
  CHECK(server.endpoints() == std::vector<std::string>{"unix:" + o.unix_path.string()});
  CHECK(std::filesystem::is_regular_file(precious));
}

TEST_CASE("ondemandctl metrics fetches exactly what the endpoint serves", "[supervisor][metrics][ctl]") {
  Rig rig;
  auto guard = asio::make_work_guard(rig.loop);
  std::thread server([&] { rig.loop.run(); });
  const auto m = ctl::fetch_metrics(rig.socket_path(), 5s);
  const auto absent = ctl::fetch_metrics(rig.dir.path() / "absent.sock", 5s);
  guard.reset();
  rig.loop.stop();
  server.join();
  CHECK(m.error == "");
  CHECK(m.http_status == 200);
  CHECK(m.body == render_fixed());
  CHECK(absent.http_status == 0);
  CHECK_THAT(absent.error, Catch::Contains("absent.sock"));
}

TEST_CASE("ondemandctl's HTTP reply parser", "[ctl][metrics]") {
  auto ok = ctl::parse_http_reply("HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nx 1\n");
  CHECK(ok.http_status == 200);
  CHECK(ok.body == "x 1\n");
  auto busy = ctl::parse_http_reply(http_error("503 Service Unavailable", "busy"));
  CHECK(busy.http_status == 503);
  CHECK(busy.body == "busy\n");
  CHECK(ctl::parse_http_reply("").http_status == 0);
  CHECK(ctl::parse_http_reply("HTTP/1.0 2x0 OK\r\n\r\n").http_status == 0);
  CHECK(ctl::parse_http_reply("HTTP/1.0 200 OK\r\n").http_status == 0);  // head never ended
}

// ---- the supervisor's recorder ----

TEST_CASE("restart_cause tells kills, hangs, crashes, config errors and clean exits apart",
          "[supervisor][metrics]") {
  using proto::ExitClass;
  using proto::RestartCause;
  CHECK(metrics::restart_cause(ExitClass::CRASHED, false, true) == RestartCause::KILLED);
  CHECK(metrics::restart_cause(ExitClass::CRASHED, true, false) == RestartCause::HANG);
  CHECK(metrics::restart_cause(ExitClass::CRASHED, false, false) == RestartCause::CRASH);
  CHECK(metrics::restart_cause(ExitClass::FATAL_CONFIG, false, false) == RestartCause::CONFIG);
  CHECK(metrics::restart_cause(ExitClass::STOPPED, false, false) == RestartCause::EXIT);
}

TEST_CASE("SupervisorRecorder: one recovery per failover, measured from the first death", "[supervisor][metrics]") {
  auto state = std::make_unique<proto::SharedState>();
  metrics::SupervisorRecorder r;
  const auto t0 = std::chrono::steady_clock::time_point{} + 1h;
  auto& sv = state->supervisor_metrics;
  const auto recoveries = [&] {
    std::uint64_t n = 0;
    for (const auto& b : sv.failover_recovery.buckets) n += b.load();
    return n;
  };
  r.worker_serving(*state, t0);  // the first worker: no failover to close
  CHECK(recoveries() == 0);
  r.worker_died(*state, proto::RestartCause::KILLED, t0);
  r.worker_serving(*state, t0 + 8ms);
  CHECK(recoveries() == 1);
  CHECK(sv.failover_recovery.sum_ns.load() == 8'000'000);
  // A replacement that dies before serving: still one failover, from t1.
  const auto t1 = t0 + 10s;
  r.worker_died(*state, proto::RestartCause::CRASH, t1);
  r.worker_died(*state, proto::RestartCause::CRASH, t1 + 100ms);
  r.worker_serving(*state, t1 + 300ms);
  r.worker_serving(*state, t1 + 400ms);  // a repeat closes nothing
  CHECK(recoveries() == 2);
  CHECK(sv.failover_recovery.sum_ns.load() == 308'000'000);
  CHECK(sv.restarts[static_cast<std::size_t>(proto::RestartCause::KILLED)].load() == 1);
  CHECK(sv.restarts[static_cast<std::size_t>(proto::RestartCause::CRASH)].load() == 2);

  r.handover_started(t1 + 1s);
  r.upgrade_serving(*state, t1 + 1s + 40ms);
  CHECK(sv.restarts[static_cast<std::size_t>(proto::RestartCause::UPGRADE)].load() == 1);
  CHECK(sv.upgrade_stall.sum_ns.load() == 40'000'000);
  CHECK(sv.upgrade_stall.buckets[proto::bucket_index(proto::RECOVERY_BOUNDS_NS, 40'000'000)].load() == 1);
  r.upgrade_serving(*state, t1 + 2s);  // no handover started: counted, not timed
  CHECK(sv.restarts[static_cast<std::size_t>(proto::RestartCause::UPGRADE)].load() == 2);
  CHECK(sv.upgrade_stall.sum_ns.load() == 40'000'000);
}

}  // namespace ondemand::supervisor
