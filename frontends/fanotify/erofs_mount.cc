#include "frontends/fanotify/erofs_mount.h"

#include <sys/mount.h>

#include "frontends/fanotify/fanotify_sys.h"

namespace ondemand::fanotify {

int mount_erofs_file(const std::string& image, const std::string& target,
                     const std::vector<std::string>& devices) {
  std::string options;
  for (const auto& d : devices) {
    if (!options.empty()) options += ',';
    options += "device=" + d;
  }
  auto r = sys::mount(image.c_str(), target.c_str(), "erofs", MS_RDONLY,
                      options.empty() ? nullptr : options.c_str());
  return r.ok() ? 0 : r.err;
}

int unmount(const std::string& target) {
  auto r = sys::umount2(target.c_str(), 0);
  return r.ok() ? 0 : r.err;
}

}  // namespace ondemand::fanotify
