#include "tests/harness/harness.h"

#include <sys/stat.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

#include "proto/kernel_msg.h"

extern char** environ;

namespace ondemand::harness {
namespace fs = std::filesystem;

namespace {
std::atomic<unsigned> counter{0};

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what + ": " + std::strerror(errno)); }

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// fork+exec with the given fds at 0..n-1 (-1: /dev/null); everything is
// prepared before fork, the child only makes async-signal-safe calls.
// `listen_pid_env`: put LISTEN_PID=<child pid> in the child's environment.
pid_t spawn(const std::vector<std::string>& argv_in, const std::vector<std::string>& env_in,
            std::vector<int> fds, bool listen_pid_env) {
  std::vector<std::string> argv_s = argv_in, env_s = env_in;
  std::vector<char*> argv, envp;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env_s) envp.push_back(e.data());
  char listen_pid[32] = "LISTEN_PID=";
  if (listen_pid_env) envp.push_back(listen_pid);
  envp.push_back(nullptr);
  const int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  for (auto& fd : fds)
    if (fd < 0) fd = devnull;
  // Move the sources above the target range first, so dup2 never clobbers one.
  std::vector<int> high;
  for (int fd : fds) high.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, 100));
  sigset_t none;
  sigemptyset(&none);
  const pid_t pid = ::fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    // Default dispositions: an ignored SIGPIPE/SIGHUP in the test runner
    // must not hide the supervisor's own behaviour.
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (listen_pid_env) {
      char digits[16];
      int n = 0;
      for (pid_t p = ::getpid(); p > 0; p /= 10) digits[n++] = static_cast<char>('0' + p % 10);
      char* out = listen_pid + std::strlen("LISTEN_PID=");
      while (n) *out++ = digits[--n];
      *out = '\0';
    }
    for (std::size_t i = 0; i < high.size(); ++i)
      if (::dup2(high[i], static_cast<int>(i)) < 0) ::_exit(126);  // dup2 clears FD_CLOEXEC
    // Nothing else of ours (or of whoever started the test run) leaks in:
    // the fd tests count what the supervisor hands out.
    ::close_range(static_cast<unsigned>(high.size()), ~0U, 0);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  for (int fd : high) ::close(fd);
  ::close(devnull);
  return pid;
}

std::vector<std::string> base_environment() {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string_view v = *e;
    if (v.starts_with("LISTEN_") || v.starts_with("NOTIFY_SOCKET=")) continue;
    env.emplace_back(v);
  }
  return env;
}
}  // namespace

// ---- binaries ----

Binaries find_binaries() {
  const char* env = std::getenv("HARNESS_BIN_DIR");
  const fs::path dir = env && *env ? fs::path(env) : fs::path(HARNESS_DEFAULT_BIN_DIR);
  auto first = [&](std::initializer_list<const char*> candidates) {
    for (const char* c : candidates)
      if (fs::exists(dir / c)) return dir / c;
    throw std::runtime_error(fmt::format("HARNESS_BIN_DIR={}: none of the expected binaries ({}, ...) exists",
                                         dir.string(), *candidates.begin()));
  };
  return {first({"supervisor/ondemand-supervisor"}), first({"worker/ondemand-worker"}),
          first({"tools/ctl/ondemandctl", "supervisor/ondemandctl"})};
}

fs::path fake_worker_binary() { return HARNESS_FAKE_WORKER; }
fs::path seccomp_victim_binary() { return HARNESS_SECCOMP_VICTIM; }

// ---- temp dir ----

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "ondemand-harness-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) fail("mkdtemp");
  // The worker runs unprivileged (config worker_user): it reads the config
  // and blob_dir below this directory.
  if (::chmod(tmpl.c_str(), 0755) < 0) fail("chmod");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

// ---- fake device ----

FakeDevice::FakeDevice() {
  master_ = UniqueFd{::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC)};
  if (!master_ || ::grantpt(master_.get()) < 0 || ::unlockpt(master_.get()) < 0) fail("posix_openpt");
  char name[64];
  if (::ptsname_r(master_.get(), name, sizeof name) != 0) fail("ptsname_r");
  slave_ = UniqueFd{::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC)};
  if (!slave_) fail(fmt::format("open {}", name));
  termios raw{};
  if (::tcgetattr(slave_.get(), &raw) < 0) fail("tcgetattr");
  ::cfmakeraw(&raw);
  raw.c_cc[VMIN] = 1;
  raw.c_cc[VTIME] = 0;
  if (::tcsetattr(slave_.get(), TCSANOW, &raw) < 0) fail("tcsetattr");
  thread_ = std::thread([this] { reader(); });
}

FakeDevice::~FakeDevice() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  thread_.join();
}

void FakeDevice::reader() {
  char buf[4096];
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stop_) return;
    }
    pollfd p{slave_.get(), POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0 || !(p.revents & POLLIN)) continue;
    const ssize_t n = ::read(slave_.get(), buf, sizeof buf);
    if (n <= 0) continue;
    std::lock_guard lock(mutex_);
    text_.append(buf, static_cast<std::size_t>(n));
    parse_locked();
    changed_.notify_all();
  }
}

// Commands arrive without separators ("restorecopen 1,-2copen 2,-2"): every
// command starts with a letter and copen's fields are digits, so a regex
// over the unparsed tail splits them unambiguously. (The worker writes each
// command in one write(2), which a small pty transfer does not split.)
void FakeDevice::parse_locked() {
  // `tag <tag>` is the worker's dead-cache probe (frontends/cachefiles/
  // cull.cc), once a second; the harness's tags end in digits.
  static const std::regex command(R"(^(restore|copen (\d+),(-?\d+)|tag harness-\d+-\d+))");
  const auto now = Clock::now();
  for (;;) {
    const std::string tail = text_.substr(parsed_);
    std::smatch m;
    if (!std::regex_search(tail, m, command)) return;
    if (m[1] == "restore")
      ++restores_;
    else if (m[1].str().starts_with("tag "))
      ++tag_probes_;
    else
      copens_.emplace(static_cast<std::uint32_t>(std::stoul(m[2])), Copen{std::stoll(m[3]), now});
    parsed_ += static_cast<std::size_t>(m.length(1));
  }
}

bool FakeDevice::inject(const std::string& message, Clock::duration timeout) {
  if (!write_raw(message)) return false;
  // The pty moves the bytes to the master asynchronously (a work item), so
  // "unread" is FIONREAD > 0 and "read" is FIONREAD == 0 seen twice, 2 ms
  // apart, after the bytes arrived or after a short grace for the transfer.
  const auto deadline = Clock::now() + timeout;
  const auto grace = Clock::now() + 20ms;
  bool seen_pending = false;
  int zero_streak = 0;
  while (Clock::now() < deadline) {
    int pending = 0;
    if (::ioctl(master_.get(), FIONREAD, &pending) < 0) return false;
    if (pending > 0) {
      seen_pending = true;
      zero_streak = 0;
    } else if (seen_pending || Clock::now() > grace) {
      if (++zero_streak >= 2) return true;
    }
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

bool FakeDevice::write_raw(const std::string& bytes) {
  return ::write(slave_.get(), bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
}

std::optional<std::int64_t> FakeDevice::wait_copen(std::uint32_t msg_id, Clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  if (!changed_.wait_until(lock, deadline, [&] { return copens_.count(msg_id) > 0; })) return std::nullopt;
  return copens_.find(msg_id)->second.value;
}

std::optional<std::int64_t> FakeDevice::open_missing(std::uint32_t msg_id, Clock::duration timeout,
                                                     Clock::duration* latency) {
  const auto start = Clock::now();
  const auto message =
      proto::encode_open(msg_id, /*object_id=*/msg_id, /*fd=*/1000, "erofs,harness", fmt::format("missing-{}", msg_id));
  if (!write_raw(message)) return std::nullopt;
  auto value = wait_copen(msg_id, start + timeout);
  if (latency) {
    std::lock_guard lock(mutex_);
    auto it = copens_.find(msg_id);
    *latency = it == copens_.end() ? Clock::now() - start : it->second.at - start;
  }
  return value;
}

bool FakeDevice::wait_restores(std::size_t count, Clock::duration timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return restores_ >= count; });
}

std::size_t FakeDevice::restores() {
  std::lock_guard lock(mutex_);
  return restores_;
}

std::string FakeDevice::written() {
  std::lock_guard lock(mutex_);
  return text_;
}

// ---- /proc ----

FdTable fd_table(pid_t pid) {
  FdTable table;
  const fs::path dir = fmt::format("/proc/{}/fd", pid);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::error_code link_ec;
    auto target = fs::read_symlink(entry.path(), link_ec);
    if (link_ec) continue;  // closed meanwhile
    table[std::stoi(entry.path().filename().string())] = target.string();
  }
  return table;
}

std::string describe(const FdTable& table) {
  std::string out;
  for (const auto& [fd, link] : table) out += fmt::format("  {} -> {}\n", fd, link);
  return out;
}

std::optional<std::uint64_t> socket_or_pipe_inode(const std::string& link) {
  static const std::regex re(R"(^(socket|pipe):\[(\d+)\]$)");
  std::smatch m;
  if (!std::regex_match(link, m, re)) return std::nullopt;
  return std::stoull(m[2]);
}

bool process_alive(pid_t pid) {
  if (pid <= 0) return false;
  const auto stat = read_file(fmt::format("/proc/{}/stat", pid));
  if (stat.empty()) return false;
  const auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z' && stat[close + 2] != 'X';
}

std::optional<std::string> sanitizer_report(const std::string& text) {
  static const std::regex re(
      R"((ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|Can't open file)|WARNING: ThreadSanitizer|:\d+:\d+: runtime error: )[^\n]*)");
  std::smatch m;
  if (!std::regex_search(text, m, re)) return std::nullopt;
  // From the start of its line.
  const auto begin = text.rfind('\n', static_cast<std::size_t>(m.position(0)));
  const auto from = begin == std::string::npos ? 0 : begin + 1;
  return text.substr(from, static_cast<std::size_t>(m.position(0) + m.length(0)) - from);
}

// ---- supervisor ----

SupervisorProcess::SupervisorProcess(SupervisorOptions options)
    : bin_(find_binaries()), tag_(fmt::format("harness-{}-{}", ::getpid(), counter++)) {
  for (const char* d : {"state", "blobs", "cache"}) fs::create_directories(dir() / d);
  nlohmann::json config = {{"cache_dir", (dir() / "cache").string()},
                           {"tag", tag_},
                           {"blob_dir", blob_dir().string()},
                           {"state_dir", state_dir().string()},
                           {"worker_binary", bin_.worker.string()}};
  if (options.config.is_object()) config.merge_patch(options.config);
  std::ofstream(config_path()) << config.dump(2) << '\n';
  options_ = std::move(options);
  start();
}

void SupervisorProcess::start() {
  UniqueFd log;
  int err_fd = options_.stderr_fd;
  if (err_fd < 0) {
    log = UniqueFd{::open((dir() / "supervisor.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)};
    if (!log) fail("open supervisor.log");
    err_fd = log.get();
  }
  auto env = base_environment();
  env.push_back("LISTEN_FDS=1");
  env.push_back("LISTEN_FDNAMES=cachefiles");
  for (auto& e : options_.extra_env) env.push_back(e);
  pid_ = spawn({bin_.supervisor.string(), "--config", config_path().string()}, env,
               {-1, err_fd, err_fd, device_.master()}, /*listen_pid_env=*/true);
  reaped_ = false;
  exit_status_ = 0;
}

void SupervisorProcess::kill_and_restart() {
  if (auto s = status())
    for (const char* key : {"worker", "incoming_worker", "spare_worker"})
      if (s->contains(key) && (*s)[key].is_object()) workers_seen_.insert((*s)[key].value("pid", -1));
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
  }
  start();
}

std::optional<int> SupervisorProcess::wait_exit(Clock::duration timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    reap_if_exited();
    if (reaped_) break;
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
  if (!WIFEXITED(exit_status_)) return std::nullopt;
  return WEXITSTATUS(exit_status_);
}

SupervisorProcess::~SupervisorProcess() {
  // Remember every worker we can still name, then stop gracefully; kill
  // whatever outlives that (by pid, never by name).
  if (auto s = status())
    for (const char* key : {"worker", "incoming_worker", "spare_worker"})
      if (s->contains(key) && (*s)[key].is_object()) workers_seen_.insert((*s)[key].value("pid", -1));
  if (!reaped_) {
    ::kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + 10s;
    while (Clock::now() < deadline) {
      reap_if_exited();
      if (reaped_) break;
      std::this_thread::sleep_for(10ms);
    }
    if (!reaped_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      reaped_ = true;
    }
  }
  for (pid_t w : workers_seen_)
    if (w > 0 && process_alive(w)) {
      // Only ours: its command line names a file in our temp dir (the
      // config, or the supervisor's snapshot of it in state_dir).
      if (read_file(fmt::format("/proc/{}/cmdline", w)).find(dir().string()) != std::string::npos)
        ::kill(w, SIGKILL);
    }
  const std::string text = log();
  if (!text.empty()) keep_log_for_failure(fmt::format("supervisor {} (tag {}) stderr", pid_, tag_), text);
  if (auto report = sanitizer_report(text))
    fail_current_test(fmt::format("a sanitizer report in the stderr of supervisor {} or its workers: {}", pid_,
                                  *report));
  std::error_code ec;
  fs::remove(fs::path("/dev/shm") / ("ondemand-" + tag_), ec);
}

void SupervisorProcess::reap_if_exited() {
  if (reaped_) return;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    reaped_ = true;
    exit_status_ = status;
  }
}

bool SupervisorProcess::alive() {
  reap_if_exited();
  return !reaped_;
}

SupervisorProcess::CtlResult SupervisorProcess::ctl(const std::vector<std::string>& args, Clock::duration timeout) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) < 0) fail("pipe2");
  UniqueFd rd{pipefd[0]}, wr{pipefd[1]};
  std::vector<std::string> argv = {bin_.ctl.string(), "--state-dir", state_dir().string(), "--timeout-ms",
                                   std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count())};
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t pid = spawn(argv, base_environment(), {-1, wr.get(), -1}, false);
  wr.reset();
  CtlResult result;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(rd.get(), buf, sizeof buf);
    if (n > 0) result.out.append(buf, static_cast<std::size_t>(n));
    else if (n == 0 || errno != EINTR) break;
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::optional<nlohmann::json> SupervisorProcess::status() {
  if (!alive()) return std::nullopt;
  auto r = ctl({"status", "--json"}, 3s);
  if (r.rc != 0) return std::nullopt;
  auto j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  for (const char* key : {"worker", "incoming_worker", "spare_worker"})
    if (j.contains(key) && j[key].is_object() && j[key].contains("pid") && j[key]["pid"].is_number_integer())
      workers_seen_.insert(j[key]["pid"].get<pid_t>());
  return j;
}

std::optional<pid_t> SupervisorProcess::wait_serving(Clock::duration timeout, pid_t not_pid) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (auto s = status()) {
      const auto& w = (*s)["worker"];
      if (w.is_object() && w.value("serving", false) && w.value("pid", -1) != not_pid && (*s)["incoming_worker"].is_null())
        return w.value("pid", -1);
    } else if (!alive()) {
      return std::nullopt;
    }
    std::this_thread::sleep_for(20ms);
  }
  return std::nullopt;
}

std::optional<pid_t> SupervisorProcess::wait_spare(Clock::duration timeout, pid_t not_pid) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (auto s = status()) {
      const auto& w = (*s)["spare_worker"];
      if (w.is_object() && w.value("pid", -1) != not_pid) {
        const pid_t pid = w.value("pid", -1);
        // It holds the device once the handshake is done: the pty master.
        for (const auto& [fd, link] : fd_table(pid))
          if (fd > 3 && (link == "/dev/ptmx" || link == "/dev/pts/ptmx")) return pid;
      }
    } else if (!alive()) {
      return std::nullopt;
    }
    std::this_thread::sleep_for(20ms);
  }
  return std::nullopt;
}

std::string SupervisorProcess::log() { return read_file(dir() / "supervisor.log"); }

}  // namespace ondemand::harness
