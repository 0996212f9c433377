// ControlServer and ondemandctl's call() against each other over a real
// socket in a temp dir; the server's io_context runs on a background thread
// because call() blocks.
#include "supervisor/control_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "common/fd_passing.h"
#include "common/unix_socket.h"
#include "tools/ctl/ctl.h"
#include "tests/unit/test_util.h"

namespace ondemand::supervisor {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;

struct Server {
  test::TempDir dir;
  asio::io_context loop;
  std::atomic<int> handled{0};
  std::unique_ptr<ControlServer> server;
  std::thread thread;

  explicit Server(std::vector<uid_t> allowed = {}) {
    server = std::make_unique<ControlServer>(
        loop, dir.path(), std::move(allowed),
        [this](const proto::ControlRequest& req, ControlServer::Reply reply) {
          ++handled;
          reply(proto::control::Done{"echo " + std::string(proto::command_of(req))});
        });
    thread = std::thread([this] {
      auto guard = asio::make_work_guard(loop);
      loop.run();
    });
  }
  ~Server() {
    loop.stop();
    thread.join();
    server.reset();
  }
  std::filesystem::path socket() const { return dir.path() / "control.sock"; }
};

UniqueFd connect_to(const std::filesystem::path& path) {
  UniqueFd fd{::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)};
  REQUIRE(fd);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

constexpr uid_t NOBODY = 65534;
using CtlCallResult = ctl::CallResult;

// Forks a child that drops to `uid`, sends a status request and exits 0 if
// the reply contains `expect`, 1 if not, 2 on transport failure. Raw
// syscalls only between fork and _exit (the parent has threads).
int request_as(uid_t uid, const std::filesystem::path& socket_path, const char* expect,
               const std::string& request_text = R"({"v":1,"cmd":"status"})") {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, socket_path.c_str());
  const char* request = request_text.c_str();
  const std::size_t request_len = request_text.size();
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (::setgid(uid) != 0 || ::setuid(uid) != 0) ::_exit(3);
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET, 0);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ::_exit(2);
    // As ondemandctl does: send the request, then wait for the one reply.
    if (::send(fd, request, request_len, MSG_NOSIGNAL) < 0) ::_exit(2);
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) ::_exit(2);
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) ::_exit(2);
    ::_exit(::memmem(buf, static_cast<std::size_t>(n), expect, std::strlen(expect)) ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

}  // namespace

TEST_CASE("ControlServer refuses peers that are neither root nor in control_uids",
          "[supervisor][control]") {
  if (::geteuid() != 0) {
    WARN("needs root to act as another uid; not checked");
    return;
  }
  SECTION("not listed: refused, handler not called") {
    Server s;
    // The socket is 0600 root: let the other uid reach it so SO_PEERCRED decides.
    std::filesystem::permissions(s.dir.path(), std::filesystem::perms::all);
    REQUIRE(::chmod(s.socket().c_str(), 0666) == 0);
    CHECK(request_as(NOBODY, s.socket(), "not allowed") == 0);
    CHECK(s.handled == 0);
  }
  SECTION("listed in control_uids: served") {
    Server s({NOBODY});
    std::filesystem::permissions(s.dir.path(), std::filesystem::perms::all);
    REQUIRE(::chmod(s.socket().c_str(), 0666) == 0);
    CHECK(request_as(NOBODY, s.socket(), "\"message\":\"echo status\"") == 0);
    CHECK(s.handled == 1);
  }
}

// Issue 9.11: with control_uids the socket must be reachable by them (it was
// 0600 root, so the key could not work), and a listed uid may operate the
// cache but not name the program a root supervisor runs.
TEST_CASE("ControlServer: a listed uid reaches the socket and may operate, but not upgrade to a binary",
          "[supervisor][control][policy]") {
  if (::geteuid() != 0) {
    WARN("needs root to act as another uid; not checked");
    return;
  }
  Server s({NOBODY});
  std::filesystem::permissions(s.dir.path(), std::filesystem::perms::all);  // a temp dir is 0700
  struct stat st{};
  REQUIRE(::lstat(s.socket().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0666);  // no chmod here: the server made it so
  CHECK(request_as(NOBODY, s.socket(), "\"message\":\"echo status\"") == 0);
  CHECK(request_as(NOBODY, s.socket(), "\"message\":\"echo upgrade\"", R"({"v":1,"cmd":"upgrade"})") == 0);
  CHECK(s.handled == 2);
  CHECK(request_as(NOBODY, s.socket(), "root only", R"({"v":1,"cmd":"upgrade","binary":"/tmp/evil"})") == 0);
  CHECK(s.handled == 2);  // the handler never saw it
}

TEST_CASE("ControlServer answers a request through its handler, once", "[supervisor][control]") {
  Server s;
  auto r = ctl::call(s.socket(), proto::control::RestartWorker{}, 2000ms);
  REQUIRE(r.error == "");
  REQUIRE(r.reply);
  REQUIRE(std::holds_alternative<proto::control::Done>(*r.reply));
  CHECK(std::get<proto::control::Done>(*r.reply).message == "echo restart-worker");
  CHECK(s.handled == 1);
}

TEST_CASE("ControlServer answers malformed requests with ok=false and never calls the handler",
          "[supervisor][control]") {
  Server s;
  auto bad_version = ctl::call_raw(s.socket(), R"({"v":9,"cmd":"status"})", 2000ms);
  REQUIRE(bad_version.error == "");
  auto bad_version_reply = nlohmann::json::parse(bad_version.bytes);
  CHECK(bad_version_reply["ok"] == false);
  CHECK_THAT(bad_version_reply["error"].get<std::string>(), Catch::Contains("version"));

  auto unknown = ctl::call_raw(s.socket(), R"({"v":1,"cmd":"format-disk"})", 2000ms);
  REQUIRE(unknown.error == "");
  CHECK(nlohmann::json::parse(unknown.bytes)["ok"] == false);

  auto fd = connect_to(s.socket());
  REQUIRE(send_message(fd.get(), std::string_view("\x00\x01garbage", 9)) == 0);
  pollfd p{fd.get(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 2000) == 1);
  auto got = recv_message(fd.get(), 64 * 1024, 0);
  REQUIRE(got.err == 0);
  auto reply = nlohmann::json::parse(got.bytes);
  CHECK(reply["ok"] == false);
  CHECK(s.handled == 0);
}

TEST_CASE("ControlServer: a silent client does not block the next one", "[supervisor][control]") {
  Server s;
  auto silent = connect_to(s.socket());
  auto silent2 = connect_to(s.socket());
  const auto start = std::chrono::steady_clock::now();
  auto r = ctl::call(s.socket(), proto::control::Stop{}, 2000ms);
  REQUIRE(r.error == "");
  REQUIRE(r.reply);
  CHECK(std::holds_alternative<proto::control::Done>(*r.reply));
  CHECK(std::chrono::steady_clock::now() - start < 1s);
}

TEST_CASE("ControlServer creates its socket 0600, replacing a stale file, and removes it on exit",
          "[supervisor][control]") {
  test::TempDir dir;
  const auto path = dir.path() / "control.sock";
  dir.write("control.sock", "stale");
  asio::io_context loop;
  {
    ControlServer server(loop, dir.path(), {}, [](const proto::ControlRequest&, ControlServer::Reply r) {
      r(proto::control::Done{});
    });
    struct stat st{};
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 0777) == 0600);
  }
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("ctl::call reports an unreachable supervisor instead of hanging", "[supervisor][control]") {
  test::TempDir dir;
  auto r = ctl::call(dir.path() / "control.sock", proto::control::Status{}, 500ms);
  CHECK_FALSE(r.reply);
  CHECK_THAT(r.error, Catch::Contains("connect"));
}

TEST_CASE("ctl::format_status renders the status reply's fields", "[supervisor][control]") {
  proto::control::StatusReply status{.supervisor_pid = 42,
                                     .version = "0.1.0",
                                     .uptime_s = 3.5,
                                     .state = "running",
                                     .worker = proto::control::WorkerInfo{.pid = 43, .generation = 7,
                                                                          .serving = true, .uptime_s = 1.0},
                                     .worker_binary = "/usr/bin/ondemand-worker",
                                     .restarts = 2,
                                     .hangs_detected = 1,
                                     .inflight = 0,
                                     .counters = {{"opens", 10}, {"reads", 20}, {"bytes_written", 3 << 20}}};
  const auto text = ctl::format_status(status);
  CHECK_THAT(text, Catch::Contains("pid 42") && Catch::Contains("0.1.0") && Catch::Contains("running") &&
                       Catch::Contains("generation 7") && Catch::Contains("serving") &&
                       Catch::Contains("restarts 2") && Catch::Contains("opens 10") &&
                       Catch::Contains("reads 20") && Catch::Contains("3.0 MiB"));
  status.worker.reset();
  CHECK_THAT(ctl::format_status(status), Catch::Contains("none"));
}

TEST_CASE("ctl::call reports a status reply with fields of the wrong type (another version's) as unreadable",
          "[supervisor][control]") {
  test::TempDir dir;
  // A server that answers with another version's idea of a status reply.
  auto listener = listen_seqpacket(dir.path() / "control.sock", 0600, 4);
  std::thread server([&] {
    pollfd p{listener.get(), POLLIN, 0};
    if (::poll(&p, 1, 2000) != 1) return;
    UniqueFd conn{::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC)};
    (void)recv_message(conn.get(), 64 * 1024, 0);
    (void)send_message(conn.get(), R"({"v":1,"ok":true,"supervisor_pid":1,"version":7,"uptime_s":"long",)"
                                   R"("state":null,"worker":{"pid":"x"},"counters":"none"})");
  });
  CtlCallResult r;
  REQUIRE_NOTHROW(r = ctl::call(dir.path() / "control.sock", proto::control::Status{}, 2000ms));
  server.join();
  CHECK_FALSE(r.reply);
  CHECK_THAT(r.error, Catch::Contains("\"status\" reply") && Catch::Contains("\"version\""));
  CHECK_FALSE(r.raw.empty());
}

}  // namespace ondemand::supervisor
