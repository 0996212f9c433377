// The worker's sandbox, both halves. (What the worker then locks itself
// into, Landlock and seccomp, is worker/sandbox.h lock_down.)
//
// Supervisor side (before spawning): the worker runs as an unprivileged user
// (config worker_user/worker_group) with no capabilities and no_new_privs
// (common/spawn.h applies them between fork and exec). What that user must
// reach is prepared or checked here once, at start-up, so a permission
// problem is one clear error naming the path instead of a crash loop:
// - blob_dir and the config file: readable (every directory above them
//   searchable); checked, never changed: they are the operator's.
// - state_dir: the worker creates worker.sock there (adoption by a new
//   supervisor) and serving.lock. It becomes root:<worker group> mode 01775:
//   the group may create, the sticky bit keeps it from removing or renaming
//   over what it does not own (the control socket, worker.pid). Which also
//   means a worker cannot replace or reopen worker.sock and serving.lock
//   once they are not its own, and systemd makes them not its own: at every
//   start of the unit, RuntimeDirectory= chowns everything under state_dir
//   to the unit's user (root), even with RuntimeDirectoryPreserve=yes. So
//   each start gives those two back to the worker's user.
// - the shared memory /dev/shm/ondemand-<tag> stays root's, 0600; the worker
//   gets it as an inherited fd (WORKER_SHM_FD, named in its environment by
//   WORKER_SHM_FD_ENV) and maps that.
// - /dev/cachefiles is an inherited fd too: once the supervisor has bound
//   the cache the kernel does its cache work with the binder's credentials
//   (cachefiles_begin_secure), so copen, READ_COMPLETE, `restore`, `inuse`
//   and `cull` need no privilege. What the culler cannot do unprivileged is
//   walk <cache_dir>: cachefiles makes every directory there 0700 root
//   (namei.c cachefiles_get_directory), and `cull` acts on the caller's
//   working directory, which it cannot enter. So an unprivileged worker does
//   not cull (it says so at start); set sandbox_drop_privileges to false for
//   a culling worker until the culler moves into the supervisor.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace ondemand {

inline constexpr int WORKER_SHM_FD = 4;
inline constexpr std::string_view WORKER_SHM_FD_ENV = "ONDEMAND_SHM_FD";

// Why `uid`/`gid` (no supplementary groups) cannot read `path` (a directory
// is read and searched), from the mode bits of it and of every directory
// above it; empty when it can. ACLs are not consulted: a path that only an
// ACL opens is reported, which errs on the side of a clear message.
std::string access_problem(const std::filesystem::path& path, uid_t uid, gid_t gid);

// The files in state_dir that the worker creates and must be able to reopen
// or rename over: serving.lock (common/serving_lock.h), worker.sock.
std::vector<std::string_view> worker_owned_state_files();

// Makes `state_dir` root:gid 01775 (see above) and gives the worker's own
// files in it (worker_owned_state_files, when they are regular files or
// sockets) back to uid:gid. Returns the names it gave back. Throws
// std::runtime_error naming the path.
std::vector<std::string> open_state_dir_to_worker(const std::filesystem::path& state_dir, uid_t uid, gid_t gid);

}  // namespace ondemand
