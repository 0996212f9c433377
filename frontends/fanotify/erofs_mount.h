// File-backed EROFS mounts (CONFIG_EROFS_FS_BACKED_BY_FILE, Linux 6.12+):
// mount(2) with the image file as the source and fstype "erofs". util-linux
// mount(8) would attach a loop device to the file instead and mount that
// block device (the "loop-device trap"); the hooks are measured only for the
// file-backed mount. Extra devices of a
// multi-device image (mkfs.erofs --blobdev) are given as `device=<path>`;
// erofs opens them as files too (verified on 6.18).
#pragma once

#include <string>
#include <vector>

namespace ondemand::fanotify {

// Returns 0 or an errno. Read-only mount.
int mount_erofs_file(const std::string& image, const std::string& target,
                     const std::vector<std::string>& devices = {});
int unmount(const std::string& target);

}  // namespace ondemand::fanotify
