#include "common/sandbox.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdexcept>

#include <fmt/format.h>

#include "common/serving_lock.h"
#include "common/sys.h"
#include "common/unique_fd.h"
#include "proto/channel.h"

namespace ondemand {
namespace {

// The permission class the kernel picks (owner, else group, else other)
// and whether it grants every bit in `want` (of r=4, w=2, x=1).
bool grants(const struct stat& st, uid_t uid, gid_t gid, unsigned want) {
  unsigned bits = st.st_mode & 07;
  if (st.st_uid == uid) bits = (st.st_mode >> 6) & 07;
  else if (st.st_gid == gid) bits = (st.st_mode >> 3) & 07;
  return (bits & want) == want;
}

}  // namespace

std::string access_problem(const std::filesystem::path& path, uid_t uid, gid_t gid) {
  std::filesystem::path walked;
  for (auto it = path.begin(); it != path.end(); ++it) {
    walked /= *it;
    struct stat st{};
    if (::stat(walked.c_str(), &st) < 0)
      return fmt::format("{}: {}", walked.string(), sys::errno_name(errno));
    const bool last = std::next(it) == path.end();
    const bool dir = S_ISDIR(st.st_mode);
    const unsigned want = last ? (dir ? 05u : 04u) : 01u;
    if (!grants(st, uid, gid, want))
      return fmt::format("{} (owner {}:{}, mode {:04o}) does not let uid {} gid {} {}", walked.string(), st.st_uid,
                         st.st_gid, st.st_mode & 07777, uid, gid,
                         !last ? "search it" : dir ? "list and search it" : "read it");
  }
  return {};
}

std::vector<std::string_view> worker_owned_state_files() {
  return {SERVING_LOCK_NAME, proto::WORKER_SOCKET_NAME};
}

std::vector<std::string> open_state_dir_to_worker(const std::filesystem::path& state_dir, uid_t uid, gid_t gid) {
  if (::chown(state_dir.c_str(), 0, gid) < 0 || ::chmod(state_dir.c_str(), 01775) < 0)
    throw std::runtime_error(fmt::format("state_dir {}: cannot make it root:{} 01775 for the worker: {}",
                                         state_dir.string(), gid, sys::errno_name(errno)));
  UniqueFd dir{::open(state_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (!dir)
    throw std::runtime_error(fmt::format("state_dir {}: {}", state_dir.string(), sys::errno_name(errno)));
  std::vector<std::string> given;
  for (const auto name_view : worker_owned_state_files()) {
    const std::string name(name_view);
    struct stat st{};
    if (::fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno == ENOENT) continue;
      throw std::runtime_error(fmt::format("{}: {}", (state_dir / name).string(), sys::errno_name(errno)));
    }
    // Anything else under that name (a symlink, a directory) is not ours to
    // chown; the worker reports it when it fails to use it.
    if (!S_ISREG(st.st_mode) && !S_ISSOCK(st.st_mode)) continue;
    if (st.st_uid == uid && st.st_gid == gid) continue;
    if (::fchownat(dir.get(), name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
      throw std::runtime_error(fmt::format("{}: cannot give it back to the worker ({}:{}): {}",
                                           (state_dir / name).string(), uid, gid, sys::errno_name(errno)));
    given.push_back(name);
  }
  return given;
}

}  // namespace ondemand
