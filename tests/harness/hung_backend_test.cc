// A hung backend (issue 9, "faults the suite must cover"): a registry that
// accepts connections and never answers. The request that needs it must
// fail on its own (the backend deadline, 3/4 of request_timeout_ms) and
// nothing else may wait for it: no other blob's request, and no watchdog
// kill, which would only re-deliver the same request to the next worker
// (the kill-restore-retry loop of a poison request).
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <cerrno>
#include <optional>
#include <string>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "proto/kernel_msg.h"
#include "tests/harness/harness.h"

using namespace ondemand::harness;
using ondemand::UniqueFd;

namespace {

// A TCP listener on loopback that never accepts: the kernel completes each
// connection into the backlog, the client sends its request, and no byte
// ever comes back.
struct SilentListener {
  UniqueFd fd;
  int port = 0;
  SilentListener() {
    fd = UniqueFd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    REQUIRE(fd);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd.get(), 64) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port = ntohs(addr.sin_port);
  }
};

// A supervisor whose config names the silent registry, with blob id
// "stuck" bound to it. No --size: the worker must ask the registry for the
// size at OPEN, so the hang is in the OPEN, whose reply the harness sees.
struct HungRegistryNode {
  SilentListener registry;
  std::string host = fmt::format("127.0.0.1:{}", registry.port);
  TempDir data;
  SupervisorProcess sv;
  HungRegistryNode(int request_timeout_ms, int registry_request_timeout_ms)
      : sv(options(request_timeout_ms, registry_request_timeout_ms)) {}
  // Once a worker serves (the control socket is up); its pid.
  pid_t serving_with_binding() {
    const auto worker = sv.wait_serving();
    REQUIRE(worker);
    const auto bind = sv.ctl({"bind", "stuck", "--registry", host, "--repository", "harness/stuck", "--digest",
                              "sha256:" + std::string(64, '0')});
    INFO(bind.out);
    REQUIRE(bind.rc == 0);
    return *worker;
  }
  SupervisorOptions options(int request_timeout_ms, int registry_request_timeout_ms) const {
    SupervisorOptions o;
    o.config = {{"data_dir", data.path().string()},
                {"registries", {{host, {{"insecure_http", true}}}}},
                {"request_timeout_ms", request_timeout_ms},
                {"registry_request_timeout_ms", registry_request_timeout_ms},
                {"spare_worker", false}};
    return o;
  }
};

}  // namespace

// Property: an OPEN whose blob lives on a hung registry is answered with an
// error by the same worker once its backend deadline passes, while an OPEN
// of another blob sent after it is answered first; the worker is never
// killed or replaced for it. Two bounds sit below request_timeout_ms
// (4 s): the engine's backend deadline (3/4 of it, 3 s), which bites
// first here, and the registry client's own registry_request_timeout_ms
// (3.9 s; the config refuses one that is not below request_timeout_ms).
// Without them the request would sit until request_timeout_ms and the
// watchdog would kill the worker (hangs_detected 1, a new pid), and the
// next worker would get the same request again.
TEST_CASE("a hung registry fails only its own request, and no worker is killed for it",
          "[harness][hung_backend]") {
  HungRegistryNode node(4000, 3900);
  auto& sv = node.sv;
  const auto worker = node.serving_with_binding();

  REQUIRE(sv.device().inject(ondemand::proto::encode_open(1, 1, /*fd=*/1000, "erofs,harness", "stuck")));
  // Another image's OPEN, sent after the stuck one, is answered while the
  // stuck one is still waiting for the registry.
  CHECK(sv.device().open_missing(2) == -ENOENT);
  CHECK_FALSE(sv.device().wait_copen(1, Clock::now()).has_value());

  const auto stuck = sv.device().wait_copen(1, Clock::now() + 20s);
  INFO(sv.log());
  REQUIRE(stuck.has_value());
  CHECK(*stuck < 0);
  CHECK(sv.log().find("stuck") != std::string::npos);  // the error names the blob

  // Well past request_timeout_ms: the same worker serves, nothing was
  // detected as a hang, nothing restarted.
  std::this_thread::sleep_for(3s);
  CHECK(sv.device().open_missing(3) == -ENOENT);
  const auto status = sv.status();
  REQUIRE(status);
  CHECK((*status)["worker"].value("pid", -1) == worker);
  CHECK(status->value("hangs_detected", -1) == 0);
  CHECK(status->value("restarts", -1) == 0);
}

// Property: the supervisor names the request a worker died on, from the
// note the worker's heartbeat leaves in the shared memory, and when the
// same request is in flight at consecutive deaths of workers that died on
// their own (the kernel re-sends a pending request to the next worker after
// `restore`, and the harness plays that by sending it again), it says that
// this is the likely poison request. Without the note the log says only
// that workers keep crashing, not on what. SIGABRT, not SIGSEGV: ASan
// would turn a SIGSEGV into a report (asan_harness).
TEST_CASE("the request that workers keep dying on is named in the log", "[harness][poison]") {
  HungRegistryNode node(20000, 15000);
  auto& sv = node.sv;
  std::optional<pid_t> worker = node.serving_with_binding();

  const std::string request = "OPEN msg_id=5 object_id=5 blob=stuck";
  for (int death = 1; death <= 2; ++death) {
    REQUIRE(sv.device().inject(ondemand::proto::encode_open(5, 5, /*fd=*/1000, "erofs,harness", "stuck")));
    std::this_thread::sleep_for(700ms);  // a few heartbeats (100 ms): the note is written
    REQUIRE(::kill(*worker, SIGABRT) == 0);
    auto next = sv.wait_serving(15s, *worker);
    INFO(sv.log());
    REQUIRE(next);
    worker = next;
  }
  const auto log = sv.log();
  INFO(log);
  CHECK(log.find("died with a request in flight, the oldest without progress for") != std::string::npos);
  CHECK(log.find(request) != std::string::npos);
  CHECK(log.find("the same request was in flight when each of the last 2 workers died on their own: " + request) !=
        std::string::npos);
}
