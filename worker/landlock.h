// The worker's file and TCP access rules (config sandbox_landlock), on
// Landlock's raw system calls (<linux/landlock.h>; libc has no wrappers).
//
// Applied by the worker to itself once it holds every fd it needs from
// outside (the device, the shared memory, the blob_dir handle): fds opened
// before the rules keep their access, and the kernel's own cache work runs
// with the cache's credentials (cachefiles_begin_secure), which carry no
// Landlock domain. Landlock binds the calling thread and the threads it
// creates later, so it must run before the I/O pool and the culler's thread
// exist. What the worker opens by path afterwards, and so what the rules
// allow:
//   - blob_dir: read (the blobs, openat2 beneath it);
//   - state_dir: read and write (serving.lock, worker.sock: created under a
//     temporary name and renamed over the old one, and unlinked at exit);
//   - cache_dir: read (the culler's walk; only a root worker can enter it),
//     and for a worker that culls also removing files and directories: the
//     kernel buries culled objects in <cache_dir>/graveyard and the daemon
//     deletes them (cull.h); without that right the graveyard keeps every
//     culled byte and the cache fills (ENOBUFS at mount);
//   - with registries: what name resolution and TLS read (worker/sandbox.h
//     says which), read-only, each skipped when absent.
// Nothing else: not /proc, not /dev. The anonymous fds of OPEN requests come
// from the kernel and are not opened by path.
//
// File rights handled are those of ABI 1..5 (execute, read/write files, read
// directories, create/remove every kind of entry, refer, truncate, ioctl on
// devices) as far as the running kernel has them. From ABI 4 TCP is handled
// too: every bind(2) of a TCP socket is refused and connect(2) only to the
// ports listed (security/landlock/net.c checks the port only, never the
// address, and only for TCP sockets: UDP, and so DNS over UDP, is not
// Landlock's to restrict; nor is listen(2) on an unbound TCP socket, which
// the kernel binds to an ephemeral port with no Landlock hook on the way,
// as seen on 6.18). Scopes (ABI 6) are not handled.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace ondemand::worker {

struct LandlockRules {
  std::vector<std::filesystem::path> read_only;    // directories
  std::vector<std::filesystem::path> read_write;   // directories
  std::vector<std::filesystem::path> read_remove;  // directories: read, and unlink/rmdir beneath
  // Directories or single files (symlinks followed), read-only; one that
  // does not exist, or that the worker's uid cannot reach, is skipped. A
  // rule holds the inode it was made for: a file replaced by a new one
  // (written elsewhere, renamed over it) is not covered.
  std::vector<std::filesystem::path> read_if_present;
  // ABI >= 4: the only TCP ports connect(2) may reach; empty: none. TCP
  // bind(2) is always refused (the worker serves nothing over TCP).
  std::vector<std::uint16_t> tcp_connect_ports;
};

struct LandlockOutcome {
  int abi = 0;              // the kernel's Landlock ABI; 0: none
  bool applied = false;     // false: the kernel has no Landlock (why_not says so)
  bool tcp_handled = false; // ABI >= 4: TCP bind/connect restricted as the rules say
  std::string why_not;
  std::vector<std::filesystem::path> skipped;  // read_if_present entries not there
};

// The running kernel's Landlock ABI version (LANDLOCK_CREATE_RULESET_VERSION),
// 0 when it has none (ENOSYS: not built in; EOPNOTSUPP: not enabled at boot).
int landlock_abi();

// Restricts the calling thread (and threads it starts later) to `rules`.
// A kernel without Landlock is not an error, nor one without TCP rights
// (ABI < 4): the outcome says so. Throws std::runtime_error naming the path
// or the step on any other failure.
LandlockOutcome restrict_access(const LandlockRules& rules);

}  // namespace ondemand::worker
