// ondemandctl mount: the fanotify front end's file-backed EROFS mount.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

#include <fmt/format.h>

#include "common/sys.h"
#include "frontends/fanotify/erofs_mount.h"
#include "tools/ctl/ctl.h"

namespace ondemand::ctl {
using namespace std::chrono_literals;

namespace {
// 0: complete; >0: the first hole's offset + 1; <0: -errno.
std::int64_t first_hole(const std::string& path) {
  auto opened = sys::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (!opened.fd) return -opened.err;
  struct stat st {};
  if (::fstat(opened.fd.get(), &st) < 0) return -errno;
  if (st.st_size == 0) return 0;
  const auto hole = ::lseek(opened.fd.get(), 0, SEEK_HOLE);
  if (hole < 0) return -errno;
  return hole >= st.st_size ? 0 : hole + 1;
}
}  // namespace

int mount_cache_files(const std::vector<std::string>& paths, const std::vector<std::string>& blobs,
                      const std::string& mount_point, std::chrono::milliseconds wait) {
  if (paths.size() != blobs.size() || paths.empty()) {
    std::fprintf(stderr, "ondemandctl: mount: the supervisor returned %zu cache files for %zu blobs\n", paths.size(),
                 blobs.size());
    return REFUSED;
  }
  // Before Linux 7.1 metadata reads raise no pre-content event: a mount
  // over a metadata blob with holes would read zeros. The worker fills it
  // whole; wait for that.
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    const auto hole = first_hole(paths[0]);
    if (hole == 0) break;
    if (hole < 0) {
      std::fprintf(stderr, "ondemandctl: mount: metadata blob %s: %s: %s\n", blobs[0].c_str(), paths[0].c_str(),
                   sys::errno_name(static_cast<int>(-hole)).c_str());
      return REFUSED;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      std::fprintf(stderr,
                   "ondemandctl: mount: metadata blob %s is not complete after %lld ms (first hole at byte %lld "
                   "of %s); see the worker's log for why. Not mounted.\n",
                   blobs[0].c_str(), static_cast<long long>(wait.count()), static_cast<long long>(hole - 1),
                   paths[0].c_str());
      return REFUSED;
    }
    std::this_thread::sleep_for(5ms);
  }
  const std::vector<std::string> devices(paths.begin() + 1, paths.end());
  if (int err = fanotify::mount_erofs_file(paths[0], mount_point, devices)) {
    std::fprintf(stderr, "ondemandctl: mount: mount(%s, %s, \"erofs\"): %s\n", paths[0].c_str(), mount_point.c_str(),
                 sys::errno_name(err).c_str());
    return REFUSED;
  }
  std::printf("mounted %s at %s (%zu data blobs)\n", blobs[0].c_str(), mount_point.c_str(), devices.size());
  return OK;
}

}  // namespace ondemand::ctl
