#include "frontends/fanotify/group.h"

#include <fcntl.h>
#include <sys/fanotify.h>

#include <system_error>

#include "common/sys.h"
#include "frontends/fanotify/fanotify_sys.h"
#include "proto/fanotify_msg.h"

namespace ondemand::fanotify {

UniqueFd create_group() {
  auto r = sys::fanotify_init(FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE,
                              O_RDONLY | O_LARGEFILE);
  if (!r.ok())
    throw std::system_error(r.err, std::generic_category(),
                            "fanotify_init(FAN_CLASS_PRE_CONTENT) (needs CAP_SYS_ADMIN, Linux 6.14+)");
  return UniqueFd(static_cast<int>(r.rc));
}

int mark(int group, const std::string& path) {
  auto r = sys::fanotify_mark(group, FAN_MARK_ADD, proto::fanotify::FAN_PRE_ACCESS_MASK, AT_FDCWD,
                              path.c_str());
  return r.ok() ? 0 : r.err;
}

int mark_fd(int group, int fd) {
  auto r = sys::fanotify_mark(group, FAN_MARK_ADD, proto::fanotify::FAN_PRE_ACCESS_MASK, fd, nullptr);
  return r.ok() ? 0 : r.err;
}

int unmark(int group, int fd) {
  auto r = sys::fanotify_mark(group, FAN_MARK_REMOVE, proto::fanotify::FAN_PRE_ACCESS_MASK, fd, nullptr);
  return r.ok() ? 0 : r.err;
}

int respond(int group, std::int32_t fd, std::uint32_t response) {
  const auto bytes = proto::fanotify::encode_response(fd, response);
  auto r = ondemand::sys::write(group, bytes.data(), bytes.size());
  if (!r.ok()) return r.err;
  return r.rc == static_cast<std::int64_t>(bytes.size()) ? 0 : EIO;
}

}  // namespace ondemand::fanotify
