// Which mounts use the fanotify cache: ondemandctl stop refuses while any
// does (supervisor/control_commands.cc), so the parse of mountinfo must
// find them, and only them.
#include "frontends/fanotify/erofs_mount.h"

#include <catch2/catch.hpp>

namespace ondemand::fanotify {

TEST_CASE("erofs_mounts_in finds file-backed EROFS mounts of cache files, and nothing else", "[fanotify][mount]") {
  const std::string mountinfo =
      "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
      // ours: the image file is a cache file (optional fields before "-")
      "44 26 0:39 / /mnt/a ro,relatime shared:9 master:2 - erofs /var/cache/od/fanotify/meta1 ro,user_xattr\n"
      // ours, with escaped spaces in both the mount point and the source
      "45 26 0:40 / /mnt/with\\040space ro,relatime - erofs /var/cache/od/fanotify/m\\040x ro\n"
      // an EROFS over fscache mount (source "none"), a loop mount, another dir
      "46 26 0:41 / /mnt/fscache ro - erofs none ro,fsid=x\n"
      "47 26 7:0 / /mnt/loop ro - erofs /dev/loop0 ro\n"
      "48 26 0:42 / /mnt/other ro - erofs /var/cache/od/fanotify-old/meta ro\n"
      // a cache file under another file system type, and a short line
      "49 26 0:43 / /mnt/ext ro - ext4 /var/cache/od/fanotify/x ro\n"
      "garbage\n";
  CHECK(erofs_mounts_in(mountinfo, "/var/cache/od/fanotify") ==
        std::vector<std::string>{"/mnt/a", "/mnt/with space"});
  CHECK(erofs_mounts_in(mountinfo, "/var/cache/od/fanotify/") ==
        std::vector<std::string>{"/mnt/a", "/mnt/with space"});
  CHECK(erofs_mounts_in(mountinfo, "/elsewhere").empty());
  CHECK(erofs_mounts_in("", "/var/cache/od/fanotify").empty());
}

}  // namespace ondemand::fanotify
