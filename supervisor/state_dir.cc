#include "supervisor/state_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/sandbox.h"
#include "common/sys.h"
#include "common/unique_fd.h"
#include "proto/channel.h"
#include "proto/control.h"
#include "supervisor/worker_process.h"

namespace ondemand::supervisor {

namespace {
constexpr const char* CONFIG_SNAPSHOT_NAME = "worker-config.json";
}  // namespace

StateDir::StateDir(std::filesystem::path dir, std::optional<WorkerIdentity> worker)
    : dir_(std::move(dir)), worker_(std::move(worker)), snapshot_path_(dir_ / CONFIG_SNAPSHOT_NAME) {}

std::string StateDir::write_snapshot(const std::string& text) {
  const auto tmp = snapshot_path_.string() + ".tmp";
  UniqueFd fd{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
  if (!fd) return fmt::format("cannot write {}: {}", tmp, sys::errno_name(errno));
  if (worker_ && (::fchown(fd.get(), static_cast<uid_t>(-1), worker_->gid) < 0 || ::fchmod(fd.get(), 0640) < 0))
    return fmt::format("cannot give {} to the worker's group {}: {}", tmp, worker_->gid, sys::errno_name(errno));
  std::size_t done = 0;
  while (done < text.size()) {
    auto w = sys::write(fd.get(), text.data() + done, text.size() - done);
    if (!w.ok()) return fmt::format("cannot write {}: {}", tmp, sys::errno_name(w.err));
    done += static_cast<std::size_t>(w.rc);
  }
  if (::fsync(fd.get()) < 0) return fmt::format("cannot write {}: {}", tmp, sys::errno_name(errno));
  if (::rename(tmp.c_str(), snapshot_path_.c_str()) < 0)
    return fmt::format("cannot rename {} to {}: {}", tmp, snapshot_path_.string(), sys::errno_name(errno));
  snapshot_text_ = text;
  return {};
}

void StateDir::ensure_snapshot() {
  if (std::error_code ec; std::filesystem::exists(snapshot_path_, ec)) return;
  reopen();
  if (auto error = write_snapshot(snapshot_text_); !error.empty())
    spdlog::error("config snapshot {} is gone and cannot be rewritten: {}", snapshot_path_.string(), error);
  else
    spdlog::warn("config snapshot {} was gone (state_dir removed?): rewritten", snapshot_path_.string());
}

void StateDir::write_pid_file(pid_t pid) {
  const auto path = dir_ / "worker.pid";
  const auto tmp = dir_ / "worker.pid.tmp";
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << pid << '\n';
    if (!out) ec = std::make_error_code(std::errc::io_error);
  }
  if (!ec) std::filesystem::rename(tmp, path, ec);
  if (ec) spdlog::warn("cannot write {}: {}", path.string(), ec.message());
}

// Recreates state_dir if it is gone, open to an unprivileged worker's group
// as at start (its worker.sock and serving.lock live there).
std::error_code StateDir::reopen() {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec || !worker_) return ec;
  try {
    log_given_back(dir_, open_state_dir_to_worker(dir_, worker_->uid, worker_->gid), *worker_);
  } catch (const std::exception& e) {
    spdlog::error("state_dir {}: {}", dir_.string(), e.what());
    return std::make_error_code(std::errc::permission_denied);
  }
  return ec;
}

void StateDir::keep(const std::function<void()>& rebind) {
  std::error_code ec;
  if (std::filesystem::is_socket(dir_ / std::string(proto::CONTROL_SOCKET_NAME), ec)) {
    last_error_.clear();
    return;
  }
  std::string error;
  ec = reopen();
  if (ec) {
    error = fmt::format("cannot recreate state_dir {}: {}", dir_.string(), ec.message());
  } else {
    try {
      rebind();
      spdlog::error("state_dir {} lost its control.sock (removed?): recreated it and rebound the control socket. "
                    "The running worker's worker.sock and serving.lock went with it: a restarted supervisor cannot "
                    "adopt that worker; the next worker recreates them",
                    dir_.string());
      last_error_.clear();
      return;
    } catch (const std::exception& e) {
      error = fmt::format("cannot rebind the control socket in {}: {}", dir_.string(), e.what());
    }
  }
  if (error != last_error_) spdlog::error("{}; ondemandctl cannot reach us until it works (retrying)", error);
  last_error_ = error;
}

}  // namespace ondemand::supervisor
