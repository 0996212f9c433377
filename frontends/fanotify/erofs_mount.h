// File-backed EROFS mounts (CONFIG_EROFS_FS_BACKED_BY_FILE, Linux 6.12+):
// mount(2) with the image file as the source and fstype "erofs". util-linux
// mount(8) would attach a loop device to the file instead and mount that
// block device (the "loop-device trap"); the hooks are measured only for the
// file-backed mount. Extra devices of a
// multi-device image (mkfs.erofs --blobdev) are given as `device=<path>`;
// erofs opens them as files too (verified on 6.18).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ondemand::fanotify {

// Returns 0 or an errno. Read-only mount.
int mount_erofs_file(const std::string& image, const std::string& target,
                     const std::vector<std::string>& devices = {});
int unmount(const std::string& target);

// The mount points, in `mountinfo` (the text of /proc/<pid>/mountinfo), of
// EROFS mounts whose source (the image file of a file-backed mount) lies in
// `dir`. Octal escapes (\040 for a space) are undone. Pure.
std::vector<std::string> erofs_mounts_in(std::string_view mountinfo, const std::string& dir);

}  // namespace ondemand::fanotify
