#include "worker/sandbox.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <set>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "backends/registry/client.h"
#include "backends/registry/http.h"
#include "common/sandbox.h"
#include "worker/landlock.h"
#include "worker/seccomp_filter.h"

namespace ondemand::worker {

SharedStateMapping attach_worker_shm(const std::string& name) {
  const char* text = std::getenv(std::string(WORKER_SHM_FD_ENV).c_str());
  if (text == nullptr) return SharedStateMapping::attach(name);
  int fd = -1;
  const auto [end, ec] = std::from_chars(text, text + std::strlen(text), fd);
  if (ec != std::errc() || *end != '\0' || fd < 0)
    throw SharedStateError(fmt::format("{}={} is not an fd number", WORKER_SHM_FD_ENV, text));
  auto mapping = SharedStateMapping::attach_fd(fd, name);
  ::close(fd);  // the mapping holds the segment; a spare fd is one more to leak
  return mapping;
}

bool culling_possible(const Config& config) {
  if (::geteuid() == 0) return true;
  if (config.cache_cull)
    spdlog::warn("culler off: the worker runs as uid {} and cannot walk cache_dir {} (cachefiles makes its "
                 "directories 0700 root); cache_dir is culled only by a worker with sandbox_drop_privileges false",
                 ::geteuid(), config.cache_dir.string());
  return false;
}

namespace {

// glibc reads these to resolve a name (nss_files, resolv, getaddrinfo's
// RFC 3484 sorting); it re-reads each one when its stat changes.
constexpr std::string_view RESOLVER_FILES[] = {"/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf",
                                               "/etc/host.conf", "/etc/gai.conf"};
// Where resolver managers keep the resolv.conf that /etc/resolv.conf links
// to. Each rewrites it by writing a new file and renaming it over the old,
// and a Landlock rule on a file holds only the inode it was made for: the
// directory keeps a rewritten one readable.
constexpr std::string_view RESOLVER_MANAGER_DIRS[] = {"/run/systemd/resolve", "/run/resolvconf",
                                                      "/run/NetworkManager"};
// glibc's resolver retries over TCP when a UDP answer has the TC bit set.
constexpr std::uint16_t DNS_PORT = 53;

std::filesystem::path resolver_rule_path(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_symlink(file, ec)) return file;
  const auto target = std::filesystem::canonical(file, ec);
  if (ec) return file;
  for (const std::string_view dir : RESOLVER_MANAGER_DIRS)
    if (target.parent_path() == dir) return target.parent_path();
  return file;
}

std::string joined(const std::vector<std::filesystem::path>& paths) {
  std::vector<std::string> names;
  for (const auto& p : paths) names.push_back(p.string());
  return fmt::format("{}", fmt::join(names, ", "));
}

// Each registry's port as its client builds the URL (registry_base_url);
// one that is not host[:port] is refused by the client and needs none.
std::set<std::uint16_t> registry_ports(const Config& config) {
  std::set<std::uint16_t> ports;
  for (const auto& [host, registry] : config.registries)
    if (const auto port = registry::url_port(registry::registry_base_url(host, registry.insecure_http)); port != 0)
      ports.insert(port);
  return ports;
}

std::string port_list(const auto& ports) {
  return ports.empty() ? std::string("none") : fmt::format("{}", fmt::join(ports, ", "));
}

// One line on what TCP the worker has, whatever the kernel could do.
void log_tcp_rule(const Config& config, const LandlockOutcome& landlock, const std::vector<std::uint16_t>& ports) {
  if (!landlock.tcp_handled)
    spdlog::warn("sandbox: Landlock TCP not restricted: the kernel's Landlock ABI {} has no TCP rights (ABI 4, Linux "
                 "6.7); the worker may bind and connect any TCP port",
                 landlock.abi);
  else if (ports.empty())
    spdlog::info("sandbox: Landlock TCP: no bind, no connect (no registries configured; UDP is not Landlock's to "
                 "restrict)");
  else
    spdlog::info("sandbox: Landlock TCP: no bind, connect only to ports {} on any address (registries: {}; DNS over "
                 "TCP: {}; registry_connect_ports: {}); UDP, so DNS's usual queries, is not Landlock's to restrict",
                 port_list(ports), port_list(registry_ports(config)), DNS_PORT,
                 port_list(config.registry_connect_ports));
}

}  // namespace

std::vector<std::uint16_t> allowed_tcp_ports(const Config& config) {
  if (config.registries.empty()) return {};
  auto ports = registry_ports(config);
  ports.insert(DNS_PORT);
  ports.insert(config.registry_connect_ports.begin(), config.registry_connect_ports.end());
  return {ports.begin(), ports.end()};
}

std::vector<std::filesystem::path> resolver_and_tls_paths(const Config& config) {
  if (config.registries.empty()) return {};
  std::vector<std::filesystem::path> paths;
  auto add = [&](const std::filesystem::path& p) {
    if (!p.empty() && std::find(paths.begin(), paths.end(), p) == paths.end()) paths.push_back(p);
  };
  for (const std::string_view file : RESOLVER_FILES) add(resolver_rule_path(file));
  // With a ca_file libcurl still hands OpenSSL the CA directory, which it
  // searches for an issuer the file lacks; without one it uses both.
  const auto store = registry::default_ca_store();
  add(store.dir);
  add(store.file);
  for (const auto& [host, registry] : config.registries) add(registry.ca_file);
  return paths;
}

void lock_down(const Config& config) {
  if (config.sandbox_landlock) {
    // Only a root worker enters cache_dir (culling_possible); one that culls
    // also deletes what the kernel buried in its graveyard.
    const bool culls = config.cache_cull && ::geteuid() == 0;
    LandlockRules rules{.read_only = {config.blob_dir},
                        .read_write = {config.state_dir},
                        .read_remove = {},
                        .read_if_present = resolver_and_tls_paths(config),
                        .tcp_connect_ports = allowed_tcp_ports(config)};
    (culls ? rules.read_remove : rules.read_only).push_back(config.cache_dir);
    LandlockOutcome landlock;
    try {
      landlock = restrict_access(rules);
    } catch (const std::runtime_error& e) {
      throw ConfigError(fmt::format("config key \"sandbox_landlock\": {} (false runs the worker without it)",
                                    e.what()));
    }
    if (landlock.applied) {
      std::vector<std::filesystem::path> resolution;
      for (const auto& p : rules.read_if_present)
        if (std::find(landlock.skipped.begin(), landlock.skipped.end(), p) == landlock.skipped.end())
          resolution.push_back(p);
      spdlog::info("sandbox: Landlock ABI {}: files only in blob_dir {} (read), cache_dir {} ({}), state_dir {} "
                   "(read/write){}",
                   landlock.abi, config.blob_dir.string(), config.cache_dir.string(),
                   culls ? "read, remove: the culler empties its graveyard" : "read", config.state_dir.string(),
                   config.registries.empty()
                       ? std::string()
                       : fmt::format("; for registries, name resolution and TLS (read): {}", joined(resolution)));
      log_tcp_rule(config, landlock, rules.tcp_connect_ports);
    } else {
      spdlog::warn("sandbox: Landlock not applied, file access and TCP are not restricted: {}", landlock.why_not);
    }
  }
  if (config.sandbox_seccomp) {
    try {
      apply_seccomp_filter(/*network=*/!config.registries.empty());
    } catch (const std::runtime_error& e) {
      throw ConfigError(fmt::format("config key \"sandbox_seccomp\": {} (false runs the worker without it)",
                                    e.what()));
    }
    spdlog::info("sandbox: seccomp filter on: {} system calls allowed{}, any other kills the worker (SIGSYS)",
                 seccomp_allowed_syscalls().size(),
                 config.registries.empty() ? ", sockets only AF_UNIX (no registries)" : "");
  }
}

}  // namespace ondemand::worker
