#include "tools/ctl/doctor.h"

#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace ondemand::ctl {
namespace {

// Filesystem magics from <linux/magic.h>.
constexpr long EXT4_MAGIC = 0xEF53;
constexpr long XFS_MAGIC = 0x58465342;
constexpr long BTRFS_MAGIC = 0x9123683E;
constexpr long TMPFS_MAGIC = 0x01021994;

// "y", "m", or "" for an unset option.
std::string option(const std::string& config, std::string_view name) {
  const std::string key = fmt::format("CONFIG_{}=", name);
  std::istringstream in(config);
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(key)) return line.substr(key.size());
  return "";
}

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  if (!in) return {};
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string fs_name(long magic) {
  switch (magic) {
    case EXT4_MAGIC: return "ext2/3/4";
    case XFS_MAGIC: return "xfs";
    case BTRFS_MAGIC: return "btrfs";
    case TMPFS_MAGIC: return "tmpfs";
  }
  return fmt::format("file system type {:#x}", magic);
}

}  // namespace

DoctorInputs doctor_inputs_of_this_host(std::optional<std::filesystem::path> cache_dir) {
  DoctorInputs in;
  utsname u{};
  if (::uname(&u) == 0) in.kernel_release = u.release;
  const std::filesystem::path boot = "/boot/config-" + in.kernel_release;
  if (auto text = read_text(boot); !text.empty()) {
    in.kernel_config = text;
    in.kernel_config_source = boot.string();
  } else if (FILE* p = ::popen("zcat /proc/config.gz 2>/dev/null", "r")) {
    std::string out;
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    if (::pclose(p) == 0 && !out.empty()) {
      in.kernel_config = out;
      in.kernel_config_source = "/proc/config.gz";
    }
  }
  in.cache_dir = std::move(cache_dir);
  in.root = ::geteuid() == 0;
  return in;
}

std::vector<DoctorCheck> run_doctor(const DoctorInputs& in) {
  std::vector<DoctorCheck> out;
  auto add = [&](DoctorCheck::Status s, std::string name, std::string detail) {
    out.push_back({s, std::move(name), std::move(detail)});
  };

  if (!in.kernel_config) {
    add(DoctorCheck::WARN, "kernel config",
        fmt::format("neither /boot/config-{} nor /proc/config.gz is readable: cannot tell whether kernel {} has "
                    "on-demand mode; the /dev/cachefiles check below still applies",
                    in.kernel_release, in.kernel_release));
  } else {
    for (auto name : {"CACHEFILES", "CACHEFILES_ONDEMAND", "EROFS_FS", "EROFS_FS_ONDEMAND"}) {
      const auto v = option(*in.kernel_config, name);
      if (v == "y" || v == "m")
        add(DoctorCheck::OK, fmt::format("CONFIG_{}", name), fmt::format("={} in {}", v, in.kernel_config_source));
      else
        add(DoctorCheck::FAIL, fmt::format("CONFIG_{}", name),
            fmt::format("not set in {}: this kernel cannot serve EROFS over fscache on demand (Debian 12's stock "
                        "kernels leave it unset; tests/vm/kernel.fragment is a config that has it)",
                        in.kernel_config_source));
    }
    // The successor interface (fanotify pre-content hooks, Linux 6.14+).
    const auto pre = option(*in.kernel_config, "FANOTIFY_ACCESS_PERMISSIONS");
    add(pre == "y" ? DoctorCheck::OK : DoctorCheck::WARN, "CONFIG_FANOTIFY_ACCESS_PERMISSIONS",
        pre == "y" ? "set (fanotify pre-content events need it and Linux 6.14+)"
                   : "not set: no fanotify pre-content front end on this kernel");
  }

  struct stat st{};
  if (::stat(in.device.c_str(), &st) == 0 && S_ISCHR(st.st_mode))
    add(DoctorCheck::OK, in.device.string(), "character device present");
  else
    add(DoctorCheck::FAIL, in.device.string(),
        "missing: load the module (modprobe cachefiles) or use a kernel with CONFIG_CACHEFILES");

  if (in.cache_dir) {
    struct statfs sf{};
    if (::statfs(in.cache_dir->c_str(), &sf) != 0) {
      add(DoctorCheck::FAIL, "cache_dir",
          fmt::format("{} does not exist (the supervisor does not create it)", in.cache_dir->string()));
    } else {
      const long magic = static_cast<long>(sf.f_type);
      const bool good = magic == EXT4_MAGIC || magic == XFS_MAGIC || magic == BTRFS_MAGIC;
      add(good ? DoctorCheck::OK : DoctorCheck::FAIL, "cache_dir",
          fmt::format("{} is on {}{}", in.cache_dir->string(), fs_name(magic),
                      good ? "" : ": cachefiles needs ext4, xfs or btrfs (tmpfs is refused with EOPNOTSUPP)"));
    }
  } else {
    add(DoctorCheck::WARN, "cache_dir", "no readable --config: file system of cache_dir not checked");
  }

  struct statfs shm{};
  if (::statfs(in.shm_dir.c_str(), &shm) == 0 && static_cast<long>(shm.f_type) == TMPFS_MAGIC)
    add(DoctorCheck::OK, in.shm_dir.string(), "tmpfs (shared memory for counters and heartbeat)");
  else
    add(DoctorCheck::FAIL, in.shm_dir.string(), "not a mounted tmpfs: the supervisor's shared memory needs it");

  add(in.root ? DoctorCheck::OK : DoctorCheck::FAIL, "privilege",
      in.root ? "running as root" : "not root: opening /dev/cachefiles needs CAP_SYS_ADMIN");
  return out;
}

std::string format_doctor(const std::vector<DoctorCheck>& checks) {
  std::size_t width = 0;
  for (const auto& c : checks) width = std::max(width, c.name.size());
  std::string out;
  for (const auto& c : checks) {
    const char* tag = c.status == DoctorCheck::OK ? "ok  " : c.status == DoctorCheck::WARN ? "WARN" : "FAIL";
    out += fmt::format("{}  {:<{}}  {}\n", tag, c.name, width, c.detail);
  }
  return out;
}

int doctor_exit_code(const std::vector<DoctorCheck>& checks) {
  for (const auto& c : checks)
    if (c.status == DoctorCheck::FAIL) return 1;
  return 0;
}

}  // namespace ondemand::ctl
