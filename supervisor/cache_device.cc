#include "supervisor/cache_device.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/sys.h"

namespace ondemand::supervisor {

BoundCache bind_cache(const Config& config, const char* device_path) {
  std::error_code ec;
  std::filesystem::create_directories(config.cache_dir, ec);
  if (ec)
    throw DeviceError(fmt::format("cannot create cache_dir {}: {}", config.cache_dir.string(), ec.message()));

  auto opened = sys::open(device_path, O_RDWR | O_CLOEXEC);
  if (!opened.fd) {
    const char* hint = "";
    if (opened.err == EBUSY) hint = " (another daemon already holds it: only one open at a time)";
    if (opened.err == ENOENT || opened.err == ENODEV || opened.err == ENXIO)
      hint = " (kernel without CONFIG_CACHEFILES? try `modprobe cachefiles`)";
    if (opened.err == EPERM || opened.err == EACCES) hint = " (needs CAP_SYS_ADMIN)";
    throw DeviceError(fmt::format("open {}: {}{}", device_path, sys::errno_name(opened.err), hint));
  }
  BoundCache cache;
  cache.fd = std::move(opened.fd);
  struct stat st{};
  if (::fstat(cache.fd.get(), &st) < 0 || !S_ISCHR(st.st_mode))
    throw DeviceError(fmt::format("{} is not a character device", device_path));
  cache.rdev = st.st_rdev;

  const std::string commands[] = {
      fmt::format("dir {}", config.cache_dir.string()),
      fmt::format("tag {}", config.tag),
      "bind ondemand",
  };
  for (const auto& command : commands) {
    auto r = sys::write_command(cache.fd.get(), command);
    if (!r.ok()) {
      std::string hint;
      if (command.starts_with("bind") && r.err == EOPNOTSUPP)
        hint = " (kernel without CONFIG_CACHEFILES_ONDEMAND, or cache_dir on tmpfs: it must be ext4/xfs/btrfs)";
      if (command.starts_with("bind") && r.err == EINVAL)
        hint = " (kernel without CONFIG_CACHEFILES_ONDEMAND?)";
      throw DeviceError(fmt::format("writing \"{}\" to {}: {}{}", command, device_path,
                                    sys::errno_name(r.err), hint));
    }
  }
  spdlog::info("bound cache tag={} dir={} in on-demand mode", config.tag, config.cache_dir.string());
  return cache;
}

}  // namespace ondemand::supervisor
