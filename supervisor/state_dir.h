// The files the supervisor keeps in state_dir for its workers: the config
// snapshot every worker starts from (the config as the supervisor last
// validated it, at start or by `ondemandctl reload`, never the operator's
// file as it is now) and worker.pid; and state_dir itself, made again when
// someone removes it (rm -rf, a tmpfiles cleanup). Never throws once
// constructed: it runs on the event loop.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <system_error>

#include "config/config.h"

namespace ondemand::supervisor {

class StateDir {
 public:
  // `worker`: the user workers run as, whose group reads the snapshot and
  // to whom state_dir is opened; none: workers run as root.
  StateDir(std::filesystem::path dir, std::optional<WorkerIdentity> worker);

  // Makes `text` the snapshot (0600, or root:<worker group> 0640: it may
  // carry credentials), atomically; "" or why not.
  std::string write_snapshot(const std::string& text);
  // Before a spawn: every worker must find the snapshot, or it exits 78
  // and parks. Rewrites it (and state_dir) when it is gone.
  void ensure_snapshot();
  const std::filesystem::path& snapshot_path() const { return snapshot_path_; }

  // Informational only: a failure is logged.
  void write_pid_file(pid_t pid);

  // Called every second: when control.sock is gone, recreates state_dir and
  // calls `rebind` (which throws on failure). Logs each new error once.
  void keep(const std::function<void()>& rebind);

 private:
  std::error_code reopen();

  std::filesystem::path dir_;
  std::optional<WorkerIdentity> worker_;
  std::filesystem::path snapshot_path_;
  std::string snapshot_text_;  // what the snapshot holds, to rewrite it if state_dir goes
  std::string last_error_;     // the last one logged, so it is logged once
};

}  // namespace ondemand::supervisor
