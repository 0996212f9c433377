// The worker's half of its sandbox (the supervisor's: common/sandbox.h):
// what it maps, what it gives up, what it locks itself into.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/shared_state.h"
#include "config/config.h"

namespace ondemand::worker {

// The supervisor's segment: the inherited fd named by ONDEMAND_SHM_FD when
// there is one (then closed), else opened by name. Throws SharedStateError.
SharedStateMapping attach_worker_shm(const std::string& name);

// Whether this worker can cull: walking <cache_dir> needs root (cachefiles'
// directories are 0700 root). Logs once why not when cache_cull is on.
bool culling_possible(const Config& config);

// The TCP ports the worker's Landlock rules let it connect to: none without
// registries. With them: each registry's port as its client builds the URL
// (host[:port], else 443, or 80 with insecure_http: registry_base_url),
// 53 (glibc's resolver retries a query over TCP when the UDP answer comes
// back truncated), and registry_connect_ports (token realms and blob
// redirects elsewhere). Sorted, each once.
std::vector<std::uint16_t> allowed_tcp_ports(const Config& config);

// What name resolution and TLS read, which the worker's Landlock rules let
// it read: nothing without registries. With them: glibc's resolver files
// (/etc/hosts, resolv.conf, nsswitch.conf, host.conf, gai.conf; for a
// resolv.conf that is a symlink into the directory of systemd-resolved,
// resolvconf or NetworkManager, that directory, since they rewrite it by
// rename), libcurl's CA bundle and CA directory (default_ca_store), and
// each registry's ca_file. Absent ones are skipped when the rules are made.
std::vector<std::filesystem::path> resolver_and_tls_paths(const Config& config);

// Locks the worker in, as config sandbox_landlock and sandbox_seccomp say:
// Landlock first (worker/landlock.h: blob_dir read, state_dir read/write,
// cache_dir read; with registries, resolver_and_tls_paths read; from ABI 4
// no TCP bind and connect only to allowed_tcp_ports), then the system call
// filter (worker/seccomp_filter.h).
// Call once the worker holds the device, the shared memory and the
// blob_dir handle, before any thread is started and before the first
// kernel message is read. A kernel without Landlock gets one warning;
// anything else that fails throws ConfigError naming the key (set it to
// false to run without), so a worker that cannot lock itself in parks
// instead of serving unconfined or crash-looping.
void lock_down(const Config& config);

}  // namespace ondemand::worker
