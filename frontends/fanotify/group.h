// The fanotify pre-content group: the kernel object this front end serves,
// like /dev/cachefiles for the cachefiles front end. Whoever holds the last
// reference to it decides what happens to pending events when it goes away:
// fanotify_release (fs/notify/fanotify/fanotify_user.c) ALLOWS every pending
// and queued permission event, so readers then go on over holes. The
// supervisor therefore creates the group and holds it for its whole life;
// workers get a duplicate.
#pragma once

#include <cstdint>
#include <string>

#include "common/unique_fd.h"

namespace ondemand::fanotify {

// fanotify_init(FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK |
// FAN_UNLIMITED_QUEUE, O_RDONLY | O_LARGEFILE).
//
// FAN_UNLIMITED_QUEUE: with a bounded queue (16384 events) an event that
// does not fit is dropped and fanotify_handle_event (fs/notify/fanotify/
// fanotify.c) returns 0 for it, which lets the reader through: a queue
// overflow would fail open. Event fds are read-only: the fills go through
// writer fds opened before the mark (cache_file.h), which raise no events.
// Throws std::system_error (startup failure).
UniqueFd create_group();

// FAN_MARK_ADD FAN_PRE_ACCESS on one inode. Readers that opened the file
// before the mark raise no events (the fsnotify mode of a struct file is set
// at open, 6.14+): mark before the EROFS mount opens the image. Returns 0 or
// an errno (EXDEV/EINVAL on tmpfs and other file systems without
// pre-content support).
int mark(int group, const std::string& path);
// The same, for the file `fd` is open on (fanotify_mark with a NULL path):
// no path lookup, so no directory permissions.
int mark_fd(int group, int fd);
// FAN_MARK_REMOVE on the file `fd` is open on: once a file is complete it
// costs nothing. ENOENT when it was not marked. An unprivileged caller
// needs read permission on the file (fanotify_find_path's path_permission
// MAY_READ), nothing more.
int unmark(int group, int fd);

// write(2) of struct fanotify_response. Returns 0 or an errno: ENOENT when
// no event read from this group waits under that fd number (measured on
// 6.18; process_access_response walks access_list by fd), EINVAL for a
// response the kernel refuses.
int respond(int group, std::int32_t fd, std::uint32_t response);

}  // namespace ondemand::fanotify
