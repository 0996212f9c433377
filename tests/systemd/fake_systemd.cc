// fake-systemd: plays systemd's part for one Type=notify service, for tests
// in places without systemd (the VM). Only what ondemand.service relies on:
//
//  - a SOCK_DGRAM notify socket ($NOTIFY_SOCKET), SO_PASSCRED, messages
//    accepted from the main pid only (NotifyAccess=main): READY=1, STATUS=,
//    FDSTORE=1 with FDNAME= and the fds (SCM_RIGHTS), FDSTOREREMOVE=1;
//  - an fd store of at most --fdstore-max fds (FileDescriptorStoreMax=),
//    duplicates dropped, an fd dropped on POLLHUP/POLLERR (systemd watches
//    stored fds the same way);
//  - every start passes the store back: fds at 3.., LISTEN_FDS,
//    LISTEN_FDNAMES, and LISTEN_PID = the child's own pid, set in the child
//    between fork and exec;
//  - Restart=always with RestartSec=--restart-sec-ms after the main process
//    ends by itself; KillMode=process (only the main pid is signalled);
//  - it is a child subreaper, so processes orphaned by the main process (a
//    worker whose supervisor died) are reparented to it and reaped, as
//    PID 1 does.
//
// Signals: SIGHUP = `systemctl restart` (SIGTERM to the main pid, start
// again as soon as it has exited, store kept); SIGTERM/SIGINT = `systemctl
// stop` (SIGTERM to the main pid, then the store is released and
// fake-systemd exits 0). A main pid still running --stop-timeout-ms after
// SIGTERM gets SIGKILL.
//
// Every event is logged to stderr ("fake-systemd: ...") and the current
// state is rewritten atomically to --state-file as KEY=VALUE lines:
//   main_pid starts ready ready_count ready_pid status exits last_exit
//   fdstore (names, colon-separated) fdstore_count
//   fdstore_ids (dev:ino of each stored file, colon-separated)
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/sys.h"
#include "common/unique_fd.h"

extern char** environ;

namespace {
using ondemand::UniqueFd;
using ondemand::sys::errno_name;

struct Stored {
  std::string name;
  UniqueFd fd;
  dev_t dev = 0;
  ino_t ino = 0;
};

struct Options {
  std::string notify_path = "/run/fake-systemd/notify";
  std::string state_file;
  int restart_sec_ms = 500;
  int stop_timeout_ms = 30000;
  std::size_t fdstore_max = 4;
  std::vector<std::string> command;
};

enum class Mode { RUNNING, RESTARTING, STOPPING };

std::int64_t now_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

template <typename... Args>
void say(fmt::format_string<Args...> f, Args&&... args) {
  timespec ts{};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  std::string line = fmt::format("{}.{:02} fake-systemd: ", ts.tv_sec, ts.tv_nsec / 10'000'000) +
                     fmt::format(f, std::forward<Args>(args)...) + "\n";
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("killed by SIG{}", sigabbrev_np(WTERMSIG(status)));
  return fmt::format("ended (status {:#x})", status);
}

class FakeSystemd {
 public:
  explicit FakeSystemd(Options o) : opt_(std::move(o)) {}

  int run() {
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) say("PR_SET_CHILD_SUBREAPER: {}", errno_name(errno));
    sigset_t mask;
    sigemptyset(&mask);
    for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
    ::sigprocmask(SIG_BLOCK, &mask, nullptr);
    signals_.reset(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!signals_) return fail("signalfd", errno);
    if (!open_notify_socket()) return 1;
    start();
    for (;;) {
      std::vector<pollfd> fds{{signals_.get(), POLLIN, 0}, {notify_.get(), POLLIN, 0}};
      for (auto& s : store_) fds.push_back({s.fd.get(), 0, 0});  // POLLHUP/POLLERR only
      int timeout = -1;
      if (deadline_ms_ >= 0) timeout = static_cast<int>(std::max<std::int64_t>(0, deadline_ms_ - now_ms()));
      int rc = ::poll(fds.data(), fds.size(), timeout);
      if (rc < 0 && errno != EINTR) return fail("poll", errno);
      if (rc > 0 && (fds[1].revents & POLLIN)) on_notify();
      // Stored fds: drop any that hung up (the store may have changed above:
      // match by fd number).
      for (std::size_t i = 2; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLHUP | POLLERR | POLLNVAL))) continue;
        for (auto it = store_.begin(); it != store_.end(); ++it) {
          if (it->fd.get() != fds[i].fd) continue;
          say("fd store: dropping \"{}\" (poll revents {:#x})", it->name, fds[i].revents);
          store_.erase(it);
          write_state();
          break;
        }
      }
      if (rc > 0 && (fds[0].revents & POLLIN)) {
        if (auto exit_code = on_signals()) return *exit_code;
      }
      if (deadline_ms_ >= 0 && now_ms() >= deadline_ms_) {
        if (auto exit_code = on_deadline()) return *exit_code;
      }
    }
  }

 private:
  int fail(const char* what, int err) {
    say("{}: {}", what, errno_name(err));
    return 1;
  }

  bool open_notify_socket() {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (opt_.notify_path.empty() || opt_.notify_path.size() >= sizeof addr.sun_path) {
      say("notify socket path \"{}\" is empty or too long", opt_.notify_path);
      return false;
    }
    if (auto slash = opt_.notify_path.rfind('/'); slash != std::string::npos && slash > 0)
      ::mkdir(opt_.notify_path.substr(0, slash).c_str(), 0755);
    ::unlink(opt_.notify_path.c_str());
    std::memcpy(addr.sun_path, opt_.notify_path.data(), opt_.notify_path.size());
    notify_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    const int one = 1;
    if (!notify_ || ::bind(notify_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 ||
        ::setsockopt(notify_.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) {
      say("notify socket {}: {}", opt_.notify_path, errno_name(errno));
      return false;
    }
    return true;
  }

  // ---- starting the service ----

  void start() {
    // Everything the child needs is built before fork: environment without
    // our own NOTIFY_SOCKET/LISTEN_* entries, plus the new ones.
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      std::string_view v(*e);
      if (v.starts_with("NOTIFY_SOCKET=") || v.starts_with("LISTEN_")) continue;
      env.emplace_back(v);
    }
    env.push_back("NOTIFY_SOCKET=" + opt_.notify_path);
    std::string names;
    for (const auto& s : store_) names += (names.empty() ? "" : ":") + s.name;
    const int n = static_cast<int>(store_.size());
    if (n > 0) {
      env.push_back(fmt::format("LISTEN_FDS={}", n));
      env.push_back("LISTEN_FDNAMES=" + names);
    }
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    char listen_pid[32] = "LISTEN_PID=";  // completed in the child
    if (n > 0) envp.push_back(listen_pid);
    envp.push_back(nullptr);
    std::vector<std::string> argv_storage = opt_.command;
    std::vector<char*> argv;
    for (auto& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<int> stored;
    for (const auto& s : store_) stored.push_back(s.fd.get());

    const pid_t pid = ::fork();
    if (pid < 0) {
      say("fork: {}", errno_name(errno));
      schedule_restart();
      return;
    }
    if (pid == 0) {
      // Child (we are single-threaded, so snprintf and friends are safe).
      sigset_t none;
      sigemptyset(&none);
      for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) ::signal(s, SIG_DFL);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      // Stored fds to 3..3+n-1, without CLOEXEC: copy them above that range
      // first so no dup2 can clobber a source.
      std::vector<int> high;
      for (int fd : stored) {
        int h = ::fcntl(fd, F_DUPFD_CLOEXEC, 3 + n + 16);
        if (h < 0) ::_exit(127);
        high.push_back(h);
      }
      for (int i = 0; i < n; ++i)
        if (::dup2(high[i], 3 + i) < 0) ::_exit(127);  // dup2 clears CLOEXEC
      if (n > 0)
        std::snprintf(listen_pid + 11, sizeof listen_pid - 11, "%d", static_cast<int>(::getpid()));
      ::execvpe(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    main_pid_ = pid;
    ++starts_;
    ready_ = false;
    mode_ = Mode::RUNNING;
    deadline_ms_ = -1;
    say("started main pid {} (start #{}): {}{}", pid, starts_, fmt::join(opt_.command, " "),
        n > 0 ? fmt::format(" with LISTEN_FDS={} LISTEN_FDNAMES={}", n, names) : std::string());
    write_state();
  }

  void schedule_restart() {
    deadline_ms_ = now_ms() + opt_.restart_sec_ms;
    say("Restart=always: starting again in {} ms", opt_.restart_sec_ms);
  }

  // ---- signals: children and requests ----

  std::optional<int> on_signals() {
    signalfd_siginfo si{};
    while (::read(signals_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
      if (si.ssi_signo == SIGCHLD) continue;  // reaped below
      if (si.ssi_signo == SIGHUP) {
        say("SIGHUP: restart requested (like systemctl restart)");
        request_stop(Mode::RESTARTING);
      } else {
        say("SIG{}: stop requested (like systemctl stop)", sigabbrev_np(static_cast<int>(si.ssi_signo)));
        if (main_pid_ <= 0) return finish();
        request_stop(Mode::STOPPING);
      }
    }
    for (;;) {
      int status = 0;
      pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      if (pid != main_pid_) {
        say("reaped pid {} (not the main process): {}", pid, describe_status(status));
        continue;
      }
      main_pid_ = 0;
      ++exits_;
      last_exit_ = describe_status(status);
      say("main pid {} {}", pid, last_exit_);
      ready_ = false;
      write_state();
      switch (mode_) {
        case Mode::STOPPING: return finish();
        case Mode::RESTARTING: start(); break;
        case Mode::RUNNING: schedule_restart(); break;
      }
    }
    return std::nullopt;
  }

  void request_stop(Mode mode) {
    mode_ = mode;
    if (main_pid_ <= 0) {  // between restarts
      if (mode == Mode::RESTARTING) start();
      return;
    }
    ::kill(main_pid_, SIGTERM);  // KillMode=process: the main pid only
    deadline_ms_ = now_ms() + opt_.stop_timeout_ms;
  }

  std::optional<int> on_deadline() {
    deadline_ms_ = -1;
    if (main_pid_ > 0) {  // stop timeout
      say("main pid {} still running {} ms after SIGTERM: SIGKILL", main_pid_, opt_.stop_timeout_ms);
      ::kill(main_pid_, SIGKILL);
      return std::nullopt;
    }
    if (mode_ == Mode::RUNNING) start();  // RestartSec elapsed
    return std::nullopt;
  }

  int finish() {
    say("stopped; releasing {} stored fd(s)", store_.size());
    store_.clear();
    write_state();
    ::unlink(opt_.notify_path.c_str());
    return 0;
  }

  // ---- the notify socket ----

  void on_notify() {
    for (;;) {
      char buf[4096];
      iovec iov{buf, sizeof buf - 1};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 253)];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      ssize_t rc = ::recvmsg(notify_.get(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
      if (rc < 0) {
        if (errno != EAGAIN && errno != EINTR) say("recvmsg: {}", errno_name(errno));
        return;
      }
      std::vector<UniqueFd> fds;
      pid_t sender = -1;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET) continue;
        if (c->cmsg_type == SCM_RIGHTS) {
          const std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          for (std::size_t i = 0; i < n; ++i) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            fds.emplace_back(fd);
          }
        } else if (c->cmsg_type == SCM_CREDENTIALS) {
          ucred cred{};
          std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
          sender = cred.pid;
        }
      }
      if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        say("notify message from pid {} truncated: ignored", sender);
        continue;
      }
      buf[rc] = '\0';
      handle(std::string(buf, static_cast<std::size_t>(rc)), sender, std::move(fds));
    }
  }

  void handle(const std::string& text, pid_t sender, std::vector<UniqueFd> fds) {
    std::string shown = text;
    for (auto& ch : shown)
      if (ch == '\n') ch = ' ';
    if (sender <= 0 || sender != main_pid_) {  // NotifyAccess=main
      say("ignoring notification from pid {} (main pid is {}): {}", sender, main_pid_, shown);
      return;
    }
    say("notification from main pid {}: {}{}", sender, shown,
        fds.empty() ? std::string() : fmt::format(" (+{} fd)", fds.size()));
    std::vector<std::string> lines;
    for (std::size_t start = 0; start < text.size();) {
      auto nl = text.find('\n', start);
      if (nl == std::string::npos) nl = text.size();
      if (nl > start) lines.push_back(text.substr(start, nl - start));
      start = nl + 1;
    }
    bool fdstore = false, fdstore_remove = false;
    std::string fdname = "stored";
    for (const auto& l : lines) {
      if (l == "READY=1") {
        if (!ready_) say("READY=1: service is up (main pid {})", sender);
        ready_ = true;
        ++ready_count_;
        ready_pid_ = sender;
      } else if (l.starts_with("STATUS=")) {
        status_ = l.substr(7);
      } else if (l == "FDSTORE=1") {
        fdstore = true;
      } else if (l == "FDSTOREREMOVE=1") {
        fdstore_remove = true;
      } else if (l.starts_with("FDNAME=")) {
        fdname = l.substr(7);
      }
    }
    if (fdstore_remove) {
      std::erase_if(store_, [&](const Stored& s) { return s.name == fdname; });
      say("fd store: removed \"{}\"", fdname);
    }
    if (fdstore) {
      for (auto& fd : fds) store(fdname, std::move(fd));
    } else if (!fds.empty()) {
      say("{} fd(s) without FDSTORE=1: closed", fds.size());
    }
    write_state();
  }

  void store(const std::string& name, UniqueFd fd) {
    struct stat st{};
    if (::fstat(fd.get(), &st) < 0) {
      say("fd store: fstat: {}", errno_name(errno));
      return;
    }
    for (const auto& s : store_) {
      if (s.dev == st.st_dev && s.ino == st.st_ino) {
        say("fd store: \"{}\" is already stored (same file): duplicate closed", name);
        return;
      }
    }
    if (store_.size() >= opt_.fdstore_max) {
      say("fd store: full (FileDescriptorStoreMax={}): \"{}\" closed", opt_.fdstore_max, name);
      return;
    }
    std::string kind = S_ISCHR(st.st_mode) ? fmt::format("char device {}:{}", major(st.st_rdev), minor(st.st_rdev))
                                           : fmt::format("mode {:o}", st.st_mode);
    say("fd store: stored \"{}\" ({})", name, kind);
    store_.push_back({name, std::move(fd), st.st_dev, st.st_ino});
  }

  void write_state() {
    if (opt_.state_file.empty()) return;
    std::string names, ids;
    for (const auto& s : store_) {
      names += (names.empty() ? "" : ":") + s.name;
      ids += fmt::format("{}{}:{}", ids.empty() ? "" : ":", s.dev, s.ino);
    }
    const std::string tmp = opt_.state_file + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << "main_pid=" << main_pid_ << "\nstarts=" << starts_ << "\nready=" << (ready_ ? 1 : 0)
          << "\nready_count=" << ready_count_ << "\nready_pid=" << ready_pid_ << "\nstatus=" << status_
          << "\nexits=" << exits_ << "\nlast_exit=" << last_exit_ << "\nfdstore=" << names
          << "\nfdstore_count=" << store_.size() << "\nfdstore_ids=" << ids << "\n";
    }
    ::rename(tmp.c_str(), opt_.state_file.c_str());
  }

  Options opt_;
  UniqueFd signals_, notify_;
  std::vector<Stored> store_;
  Mode mode_ = Mode::RUNNING;
  pid_t main_pid_ = 0;
  std::int64_t deadline_ms_ = -1;
  int starts_ = 0, exits_ = 0, ready_count_ = 0;
  pid_t ready_pid_ = 0;
  bool ready_ = false;
  std::string status_, last_exit_;
};

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"fake-systemd: runs COMMAND as a Type=notify service with an fd store, the way\n"
               "systemd runs ondemand.service (NotifyAccess=main, KillMode=process,\n"
               "Restart=always), for tests where there is no systemd. SIGHUP restarts the\n"
               "service (store kept), SIGTERM stops it and exits."};
  app.add_option("--notify-socket", opt.notify_path, "path of the notify socket to create")->capture_default_str();
  app.add_option("--state-file", opt.state_file, "KEY=VALUE state, rewritten after every event");
  app.add_option("--restart-sec-ms", opt.restart_sec_ms, "RestartSec= in ms")->capture_default_str();
  app.add_option("--stop-timeout-ms", opt.stop_timeout_ms, "TimeoutStopSec= in ms")->capture_default_str();
  app.add_option("--fdstore-max", opt.fdstore_max, "FileDescriptorStoreMax=")->capture_default_str();
  app.add_option("command", opt.command, "the service's command line (after --)")->required();
  CLI11_PARSE(app, argc, argv);
  return FakeSystemd(std::move(opt)).run();
}
