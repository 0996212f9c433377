// Faults around the supervisor's state, outside the protocol (issue 9):
//   hole 5  a restarted supervisor that cannot reach the running worker
//           through worker.sock must not start a second reader of the device;
//   hole 12 losing state_dir while running must not end the supervisor.
// "Reader": a worker that was handed the device writes `restore` before its
// first read(); the harness sees every restore, so a second reader shows as
// one more restore (and as one more ondemand-worker on our config).
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "tests/harness/harness.h"

using namespace ondemand::harness;
namespace fs = std::filesystem;

namespace {

// Live ondemand-worker processes started for this supervisor's config.
std::set<pid_t> workers_of(SupervisorProcess& sv) {
  std::set<pid_t> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const auto name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline");
    std::stringstream s;
    s << in.rdbuf();
    const auto cmdline = s.str();
    const pid_t pid = std::stoi(name);
    if (cmdline.find("ondemand-worker") != std::string::npos &&
        cmdline.find(sv.config_path().string()) != std::string::npos && process_alive(pid))
      out.insert(pid);
  }
  return out;
}

// Watches for `span`: fails on any worker other than `only` or on any new
// restore.
void expect_single_reader(SupervisorProcess& sv, pid_t only, std::size_t restores, Clock::duration span) {
  const auto until = Clock::now() + span;
  while (Clock::now() < until) {
    const auto workers = workers_of(sv);
    INFO(fmt::format("restores: {}, device log:\n{}", sv.device().restores(), sv.device().written()));
    REQUIRE(sv.device().restores() == restores);
    for (pid_t w : workers) REQUIRE(w == only);
    std::this_thread::sleep_for(50ms);
  }
}

// One worker only: a spare holds the device too and would blur "who reads".
SupervisorOptions no_spare() {
  SupervisorOptions options;
  options.config = {{"spare_worker", false}};
  return options;
}

}  // namespace

// Property: with the serving worker unreachable on worker.sock (its socket
// file removed), a supervisor restarted through the fd-store path starts no
// worker of its own: it retries adoption for a bound, then exits 69 naming
// the worker that holds serving.lock. The old worker goes on serving alone.
TEST_CASE("a restarted supervisor refuses to start a second reader beside an unreachable worker",
          "[harness][state][hole5]") {
  SupervisorProcess sv(no_spare());
  auto serving = sv.wait_serving();
  REQUIRE(serving);
  REQUIRE(sv.device().wait_restores(1, 5s));
  const auto restores = sv.device().restores();
  REQUIRE(fs::remove(sv.state_dir() / "worker.sock"));

  sv.kill_and_restart();
  // The bound is 10 s (SERVING_WORKER_WAIT); watch through all of it.
  expect_single_reader(sv, *serving, restores, 11s);
  auto code = sv.wait_exit(10s);
  INFO(sv.log());
  REQUIRE(code);
  CHECK(*code == 69);
  CHECK_THAT(sv.log(), Catch::Contains("refusing to start a second reader") &&
                           Catch::Contains(fmt::format("pid {}", *serving)));
  REQUIRE(process_alive(*serving));
  CHECK(sv.device().open_missing(7) == -2);  // still served, by the old worker
  CHECK(sv.device().restores() == restores);
  ::kill(*serving, SIGKILL);
}

// Property: when worker.sock answers again within the bound (a handover that
// ends, a socket put back), the restarted supervisor adopts the running
// worker instead of starting one.
TEST_CASE("a restarted supervisor adopts a worker whose worker.sock comes back within the bound",
          "[harness][state][hole5]") {
  SupervisorProcess sv(no_spare());
  auto serving = sv.wait_serving();
  REQUIRE(serving);
  REQUIRE(sv.device().wait_restores(1, 5s));
  const auto restores = sv.device().restores();
  const auto sock = sv.state_dir() / "worker.sock";
  const auto away = sv.state_dir() / "worker.sock.away";
  fs::rename(sock, away);

  sv.kill_and_restart();
  expect_single_reader(sv, *serving, restores, 2s);
  fs::rename(away, sock);
  auto adopted = sv.wait_serving(15s);
  INFO(sv.log());
  REQUIRE(adopted);
  CHECK(*adopted == *serving);
  CHECK_THAT(sv.log(), Catch::Contains("adopted running worker"));
  expect_single_reader(sv, *serving, restores, 500ms);
  CHECK(sv.device().open_missing(8) == -2);
}

// Property (hole 12): state_dir removed while running. The supervisor stays
// up, recreates it and its control socket, and a worker death afterwards
// (which writes worker.pid there) is survived like any other.
TEST_CASE("losing state_dir does not end the supervisor; it recreates the dir and its control socket",
          "[harness][state][hole12]") {
  SupervisorProcess sv(no_spare());
  auto serving = sv.wait_serving();
  REQUIRE(serving);
  fs::remove_all(sv.state_dir());
  REQUIRE(::kill(*serving, SIGKILL) == 0);
  auto next = sv.wait_serving(10s, *serving);  // needs control.sock back
  INFO(sv.log());
  REQUIRE(sv.alive());
  REQUIRE(next);
  CHECK(fs::is_socket(sv.state_dir() / "control.sock"));
  CHECK(sv.device().open_missing(9) == -2);
  CHECK_THAT(sv.log(), Catch::Contains("recreated it and rebound the control socket"));
  std::this_thread::sleep_for(1500ms);  // no crash loop behind it
  REQUIRE(sv.alive());
}

// Property (issue 9, "a worker stuck in D state"): a worker the supervisor
// SIGKILLed but whose exit never completes is not replaced while it may
// still hold a device request, and the wait is visible: status gives its
// "killed_s_ago", the log says "not reaped" every 10 s. Simulated with
// ptrace: a tracee with PTRACE_O_TRACEEXIT stops at PTRACE_EVENT_EXIT after
// SIGKILL, before its exit is reported (its pidfd stays unreadable), which
// is what a task in D state looks like to the supervisor. The hang that
// gets it killed: PTRACE_INTERRUPT stops its event loop thread, so its
// heartbeat goes stale.
TEST_CASE("a killed worker that is never reaped is reported, and not run beside",
          "[harness][state][unreaped]") {
  SupervisorOptions options = no_spare();
  options.config["watchdog_timeout_ms"] = 500;
  SupervisorProcess sv(options);
  auto serving = sv.wait_serving();
  REQUIRE(serving);
  REQUIRE(sv.device().wait_restores(1, 5s));
  const auto restores = sv.device().restores();
  const pid_t w = *serving;
  REQUIRE(::ptrace(PTRACE_SEIZE, w, nullptr, PTRACE_O_TRACEEXIT) == 0);
  struct Detach {
    pid_t pid;
    ~Detach() {
      ::kill(pid, SIGKILL);
      int status = 0;
      // Let it finish exiting: consume the exit stop, then let go.
      for (int i = 0; i < 50 && ::waitpid(pid, &status, __WALL | WNOHANG) == 0; ++i)
        std::this_thread::sleep_for(10ms);
      ::ptrace(PTRACE_DETACH, pid, nullptr, nullptr);
    }
  } detach{w};
  REQUIRE(::ptrace(PTRACE_INTERRUPT, w, nullptr, nullptr) == 0);
  int stop = 0;
  REQUIRE(::waitpid(w, &stop, __WALL) == w);  // the PTRACE_EVENT_STOP

  // Killed by the watchdog within about a second; reported 5 s after that.
  const auto deadline = Clock::now() + 15s;
  bool reported = false;
  while (!reported && Clock::now() < deadline) {
    reported = sv.log().find(fmt::format("worker pid={} generation=", w)) != std::string::npos &&
               sv.log().find("not reaped") != std::string::npos;
    std::this_thread::sleep_for(100ms);
  }
  INFO(sv.log());
  REQUIRE(reported);
  CHECK_THAT(sv.log(), Catch::Contains(fmt::format("killing worker pid={}", w)));
  auto status = sv.status();
  REQUIRE(status);
  CHECK((*status)["worker"].value("pid", -1) == w);
  REQUIRE((*status)["worker"]["killed_s_ago"].is_number());
  CHECK((*status)["worker"]["killed_s_ago"].get<double>() >= 5.0);
  for (pid_t other : workers_of(sv)) CHECK(other == w);  // not run beside
  CHECK(sv.device().restores() == restores);

  // Let the exit finish: a successor serves.
  int st = 0;
  REQUIRE(::waitpid(w, &st, __WALL) == w);  // the PTRACE_EVENT_EXIT stop
  REQUIRE(::ptrace(PTRACE_DETACH, w, nullptr, nullptr) == 0);
  auto next = sv.wait_serving(10s, w);
  REQUIRE(next);
  CHECK(sv.device().open_missing(10) == -2);
}
