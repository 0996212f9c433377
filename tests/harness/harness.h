// Host-level fault harness: runs the real ondemand-supervisor (and its real
// workers) without a cachefiles kernel, so failover, spare promotion,
// upgrade and adoption paths can be tested on a plain host in seconds.
//
// The "device": the supervisor is started through its systemd fd-store path
// (LISTEN_FDS=1, LISTEN_FDNAMES=cachefiles, LISTEN_PID=<its pid>) with fd 3
// the master side of a pseudo-terminal. A pty master is a character device,
// so the supervisor's S_ISCHR check and the worker's rdev check pass; the
// harness holds the slave side and plays the kernel:
//   - what the worker writes to the device (`restore`, `copen <id>,<v>`)
//     arrives on the slave and is collected by a reader thread;
//   - what the harness writes to the slave (binary struct cachefiles_msg,
//     proto/kernel_msg.h encoders) is what the worker's read() returns.
// The slave is in raw mode (cfmakeraw: no echo, no CR/NL mapping, no
// XON/XOFF, no signal characters), so bytes pass unchanged both ways.
//
// Message boundaries: cachefiles returns one message per read(); a pty
// returns whatever is buffered, so two messages written back to back can
// come out of one read() (harness_self_test.cc shows it). The harness
// therefore never has two messages in flight: inject() writes one message
// and waits until the worker has read it (FIONREAD on the harness's own copy
// of the master reaches 0 and stays there), and an OPEN is followed by
// waiting for its copen. A harness cannot install an OPEN's anonymous fd
// into the worker, so OPENs name a blob that does not exist and an fd number
// the worker does not have (1000): the worker answers `copen <id>,-2` and
// closes "its" fd, which is a harmless EBADF.
//
// Binaries come from HARNESS_BIN_DIR (default: this build tree), so the same
// tests run against the baseline build or a sanitized build directory.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/unique_fd.h"

namespace ondemand::harness {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Binaries {
  std::filesystem::path supervisor, worker, ctl;
};
// From HARNESS_BIN_DIR (or the build tree this harness was built in); knows
// both the reshaped layout (tools/ctl/) and the original one (supervisor/).
Binaries find_binaries();
// The fake worker of the malformed-message tests (always from this tree).
std::filesystem::path fake_worker_binary();
// The worker that breaks its own seccomp filter (seccomp_victim.cc).
std::filesystem::path seccomp_victim_binary();

// A temporary directory removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// The pty that plays /dev/cachefiles.
class FakeDevice {
 public:
  FakeDevice();
  ~FakeDevice();
  FakeDevice(const FakeDevice&) = delete;
  FakeDevice& operator=(const FakeDevice&) = delete;

  int master() const { return master_.get(); }  // given to the supervisor as fd 3

  // Writes one kernel message and waits until the worker has read it.
  // False when it is still unread at the deadline.
  bool inject(const std::string& message, Clock::duration timeout = 5s);
  // Injects an OPEN of a blob that does not exist (anon fd 1000) and waits
  // for its copen; returns the copen value, or nullopt on timeout.
  std::optional<std::int64_t> open_missing(std::uint32_t msg_id, Clock::duration timeout = 5s,
                                           Clock::duration* latency = nullptr);
  std::optional<std::int64_t> wait_copen(std::uint32_t msg_id, Clock::time_point deadline);
  // Waits until `restore` has been written `count` times in all.
  bool wait_restores(std::size_t count, Clock::duration timeout);
  std::size_t restores();
  std::string written();  // everything the workers wrote, for failure messages
  // Writes bytes to the slave without waiting (harness self-tests only).
  bool write_raw(const std::string& bytes);

 private:
  void reader();
  struct Copen {
    std::int64_t value;
    Clock::time_point at;
  };
  void parse_locked();

  UniqueFd master_, slave_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::string text_;            // all bytes written by workers
  std::size_t parsed_ = 0;      // prefix of text_ already parsed
  std::multimap<std::uint32_t, Copen> copens_;
  std::size_t restores_ = 0;
  std::size_t tag_probes_ = 0;  // dead-cache probes (`tag <tag>`) seen
  bool stop_ = false;
  std::thread thread_;
};

// One fd table entry: the fd number and what /proc/<pid>/fd/<n> links to.
using FdTable = std::map<int, std::string>;
FdTable fd_table(pid_t pid);
std::string describe(const FdTable& table);
// "socket:[123]" -> 123 for sockets and pipes; nullopt for anything else.
std::optional<std::uint64_t> socket_or_pipe_inode(const std::string& link);
bool process_alive(pid_t pid);  // exists and is not a zombie

struct SupervisorOptions {
  nlohmann::json config;  // merged over the temp config (e.g. worker_binary, spare_worker)
  std::vector<std::string> extra_env;
  // stderr of the supervisor (and so of its workers): a file by default, or
  // this fd (e.g. a pipe's write end) when >= 0.
  int stderr_fd = -1;
};

// The real ondemand-supervisor on a temp config with the fake device.
class SupervisorProcess {
 public:
  explicit SupervisorProcess(SupervisorOptions options = {});
  ~SupervisorProcess();  // stops it, kills what is left, removes the shm
  SupervisorProcess(const SupervisorProcess&) = delete;
  SupervisorProcess& operator=(const SupervisorProcess&) = delete;

  pid_t pid() const { return pid_; }
  FakeDevice& device() { return device_; }
  const std::filesystem::path& dir() const { return dir_.path(); }
  std::filesystem::path state_dir() const { return dir_.path() / "state"; }
  std::filesystem::path blob_dir() const { return dir_.path() / "blobs"; }
  std::filesystem::path config_path() const { return dir_.path() / "config.json"; }
  const std::string& tag() const { return tag_; }
  const Binaries& binaries() const { return bin_; }

  bool alive();  // running (not exited, not a zombie)
  // SIGKILLs the supervisor (its workers live on: they wait for adoption)
  // and starts a new one the same way, on the same config, state_dir and
  // device: the systemd restart of a crashed supervisor. Its stderr goes on
  // in the same log.
  void kill_and_restart();
  // Waits up to `timeout` for the supervisor to exit; its exit code, or
  // nullopt when it still runs (or died by a signal).
  std::optional<int> wait_exit(Clock::duration timeout);
  // `ondemandctl --state-dir DIR <args>`: exit code and stdout.
  struct CtlResult {
    int rc = -1;
    std::string out;
  };
  CtlResult ctl(const std::vector<std::string>& args, Clock::duration timeout = 15s);
  // `status --json`, or nullopt when the supervisor does not answer.
  std::optional<nlohmann::json> status();
  // Waits until a worker serves (other than `not_pid`); returns its pid.
  std::optional<pid_t> wait_serving(Clock::duration timeout = 10s, pid_t not_pid = -1);
  // Waits until a spare worker exists and holds the device; returns its pid.
  std::optional<pid_t> wait_spare(Clock::duration timeout = 10s, pid_t not_pid = -1);
  std::string log();  // the captured stderr (empty when stderr_fd was given)

 private:
  void reap_if_exited();
  void start();

  SupervisorOptions options_;

  Binaries bin_;
  TempDir dir_;
  std::string tag_;
  FakeDevice device_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int exit_status_ = 0;
  std::set<pid_t> workers_seen_;  // killed at teardown if still there
};

// Registers a log to print if the current test case fails (main.cc).
void keep_log_for_failure(std::string title, std::string text);
// Records a failure of the current test case without throwing (main.cc):
// usable from a destructor.
void fail_current_test(const std::string& why);
// The first line of a sanitizer report (ASan, LSan, UBSan, TSan) in a
// captured stderr, or of a sanitizer saying it could not write one
// ("Can't open file": its log_path), or nullopt. A sandboxed worker cannot
// open the sanitizer's log_path (its uid, Landlock), so a sanitized worker
// reports to its stderr (worker/main.cc), which is the supervisor's log.
std::optional<std::string> sanitizer_report(const std::string& text);

}  // namespace ondemand::harness
