// harness-fake-worker: stands in for ondemand-worker (as `worker_binary`) and
// speaks the channel on fd 3 as a script says, to feed the supervisor
// malformed messages. The script is the file named by ONDEMAND_FAKE_WORKER_SCRIPT,
// one step per line:
//   send <bytes>   one datagram with the rest of the line, sent as is
//   recv           wait (10 s at most) for one datagram; log it to stderr
//   recv keep      the same, keeping the fds it carried open (e.g. an
//                  upgrade's handover-peer socket) until exit
//   peer-recv      wait (10 s at most) for one datagram on the last kept
//                  fd; log it, never answer it
//   mark <name>    create <script>.<name>, for the test to wait on
//   sleep <ms>
//   hold           wait until the supervisor closes the channel or says
//                  "stop", then exit 0
// Reaching the end of the script also holds.
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/fd_passing.h"
#include "common/unique_fd.h"
#include "proto/channel.h"

namespace {
constexpr int CHANNEL = ondemand::proto::WORKER_CHANNEL_FD;

std::vector<ondemand::UniqueFd> kept;  // "recv keep"

bool receive_one(int timeout_ms, int sock = CHANNEL, bool keep = false) {
  pollfd p{sock, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return false;
  auto r = ondemand::recv_message(sock, ondemand::proto::MAX_MESSAGE_BYTES, ondemand::proto::MAX_FDS_PER_MESSAGE);
  if (r.peer_closed() || r.err) return false;
  std::fprintf(stderr, "fake-worker pid=%d: received %zu bytes, %zu fds: %.200s\n", ::getpid(), r.bytes.size(),
               r.fds.size(), r.bytes.c_str());
  if (keep)
    for (auto& fd : r.fds) kept.push_back(std::move(fd));
  return true;
}

// Proof for the test that this worker got and read its script (one that
// never got it would make every "supervisor survived" check pass
// vacuously). Written before the first step: the supervisor may kill us
// for a malformed hello the moment it is sent.
void mark_loaded(const char* script_path) {
  std::ofstream(std::string(script_path) + ".loaded") << "loaded\n";
}

int hold() {
  for (;;) {
    pollfd p{CHANNEL, POLLIN, 0};
    if (::poll(&p, 1, -1) < 0) return 0;
    auto r = ondemand::recv_message(CHANNEL, ondemand::proto::MAX_MESSAGE_BYTES, ondemand::proto::MAX_FDS_PER_MESSAGE);
    if (r.peer_closed() || (r.err && r.err != EAGAIN && r.err != EINTR)) return 0;
    if (r.bytes.find(R"("type":"stop")") != std::string::npos) return 0;  // a graceful stop, promptly
  }
}
}  // namespace

int main() {
  const char* path = std::getenv("ONDEMAND_FAKE_WORKER_SCRIPT");
  if (!path) {
    std::fprintf(stderr, "fake-worker: ONDEMAND_FAKE_WORKER_SCRIPT not set\n");
    return 64;
  }
  std::ifstream script(path);
  if (!script) {
    std::fprintf(stderr, "fake-worker: cannot read %s\n", path);
    return 64;
  }
  mark_loaded(path);
  for (std::string line; std::getline(script, line);) {
    if (line.starts_with("send ")) {
      const std::string bytes = line.substr(5);
      if (int err = ondemand::send_message(CHANNEL, bytes, {})) {
        std::fprintf(stderr, "fake-worker: send failed: %d\n", err);
        return 0;
      }
    } else if (line == "recv" || line == "recv keep") {
      if (!receive_one(10'000, CHANNEL, line == "recv keep")) std::fprintf(stderr, "fake-worker: nothing received\n");
    } else if (line == "peer-recv") {
      if (kept.empty() || !receive_one(10'000, kept.back().get()))
        std::fprintf(stderr, "fake-worker: nothing received on the kept fd\n");
    } else if (line.starts_with("mark ")) {
      std::ofstream(std::string(path) + "." + line.substr(5)) << "reached\n";
    } else if (line.starts_with("sleep ")) {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(line.c_str() + 6)));
    } else if (line == "hold") {
      return hold();
    }
  }
  return hold();
}
