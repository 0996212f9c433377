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

namespace {
// A mountinfo field: the kernel escapes space, tab, newline and backslash
// as \ooo (fs/proc_namespace.c, show_mountinfo -> seq_escape).
std::string unescape(std::string_view field) {
  std::string out;
  for (std::size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() &&
        field.substr(i + 1, 3).find_first_not_of("01234567") == std::string_view::npos) {
      out.push_back(static_cast<char>(((field[i + 1] - '0') << 6) | ((field[i + 2] - '0') << 3) | (field[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(field[i]);
    }
  }
  return out;
}
}  // namespace

std::vector<std::string> erofs_mounts_in(std::string_view mountinfo, const std::string& dir) {
  std::string prefix = dir;
  if (prefix.empty() || prefix.back() != '/') prefix.push_back('/');
  std::vector<std::string> out;
  while (!mountinfo.empty()) {
    const auto eol = mountinfo.find('\n');
    const std::string_view line = mountinfo.substr(0, eol);
    mountinfo = eol == std::string_view::npos ? std::string_view() : mountinfo.substr(eol + 1);
    // id parent maj:min root mount-point options [optional...] - fstype source super-options
    std::vector<std::string_view> fields;
    for (std::size_t at = 0; at < line.size();) {
      const auto sp = line.find(' ', at);
      fields.push_back(line.substr(at, sp == std::string_view::npos ? std::string_view::npos : sp - at));
      if (sp == std::string_view::npos) break;
      at = sp + 1;
    }
    std::size_t dash = 6;
    while (dash < fields.size() && fields[dash] != "-") ++dash;
    if (fields.size() < 5 || dash + 2 >= fields.size() || fields[dash + 1] != "erofs") continue;
    if (unescape(fields[dash + 2]).rfind(prefix, 0) != 0) continue;
    out.push_back(unescape(fields[4]));
  }
  return out;
}

}  // namespace ondemand::fanotify
