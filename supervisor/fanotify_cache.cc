#include "supervisor/fanotify_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/sys.h"
#include "frontends/fanotify/group.h"
#include "proto/blob_id.h"

namespace ondemand::supervisor {
namespace fs = std::filesystem;

fs::path fanotify_cache_path(const Config& config, const std::string& blob_id) {
  return config.cache_dir / "fanotify" / blob_id;
}

std::string fanotify_record_path(const Config& config) {
  return fmt::format("/dev/shm/ondemand-{}-fanotify", config.tag);
}

FanotifyCache::FanotifyCache(UniqueFd group, fanotify::PendingRecord record, UniqueFd record_fd, fs::path dir,
                             std::optional<gid_t> worker_gid)
    : group_(std::move(group)),
      record_(std::move(record)),
      record_fd_(std::move(record_fd)),
      dir_(std::move(dir)),
      worker_gid_(worker_gid) {}

FanotifyCache FanotifyCache::create(const Config& config, std::optional<gid_t> worker_gid) {
  UniqueFd group;
  try {
    group = fanotify::create_group();
  } catch (const std::system_error& e) {
    throw FanotifyError(fmt::format("fanotify_init(FAN_CLASS_PRE_CONTENT): {} (needs Linux 6.14+ with "
                                    "CONFIG_FANOTIFY_ACCESS_PERMISSIONS, and CAP_SYS_ADMIN)",
                                    e.what()));
  }
  const auto dir = config.cache_dir / "fanotify";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw FanotifyError(fmt::format("config key \"cache_dir\": cannot create {}: {}", dir.string(), ec.message()));
  // The worker reads through event fds and unmarks by fd: it needs read
  // permission on the files, and nothing on the directories.
  ::chmod(dir.c_str(), 0750);
  if (worker_gid) (void)::chown(dir.c_str(), 0, *worker_gid);
  // A new inode, never the old one truncated: a worker of a previous
  // supervisor may still map its record (and serve its own group).
  const auto path = fanotify_record_path(config);
  ::unlink(path.c_str());
  try {
    auto record = fanotify::PendingRecord::create(path);
    auto opened = sys::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (!opened.fd) throw FanotifyError(fmt::format("open {}: {}", path, sys::errno_name(opened.err)));
    spdlog::info("fanotify: group created, pending-event record {}, cache files in {}", path, dir.string());
    return FanotifyCache(std::move(group), std::move(record), std::move(opened.fd), dir, worker_gid);
  } catch (const std::system_error& e) {
    throw FanotifyError(fmt::format("pending-event record {}: {}", path, e.what()));
  }
}

FanotifyCache FanotifyCache::adopt(const Config& config, std::optional<gid_t> worker_gid, UniqueFd group,
                                   UniqueFd record_fd, std::vector<proto::msg::CacheFileEntry> entries,
                                   std::vector<UniqueFd> writers) {
  if (entries.size() != writers.size())
    throw FanotifyError(fmt::format("{} cache files but {} writer fds", entries.size(), writers.size()));
  std::optional<fanotify::PendingRecord> record;
  try {
    record.emplace(fanotify::PendingRecord::attach_fd(record_fd.get(), "the adopted pending-event record"));
  } catch (const std::exception& e) {
    throw FanotifyError(e.what());
  }
  const auto dir = config.cache_dir / "fanotify";
  FanotifyCache cache(std::move(group), std::move(*record), std::move(record_fd), dir, worker_gid);
  for (std::size_t i = 0; i < entries.size(); ++i) {
    auto& entry = entries[i];
    if (auto why = worker::validate_blob_id(entry.blob_id)) throw FanotifyError("cache file " + std::to_string(i) + ": " + *why);
    FanotifyFile f;
    try {
      f.file = fanotify::cache_file_from_fd(static_cast<std::uint32_t>(i), (dir / entry.blob_id).string(),
                                            std::move(writers[i]));
    } catch (const std::system_error& e) {
      throw FanotifyError(fmt::format("blob {}: {}", entry.blob_id, e.what()));
    }
    if (f.file.size != entry.size)
      throw FanotifyError(fmt::format("blob {}: its cache file is {} bytes, the worker says {}", entry.blob_id,
                                      f.file.size, entry.size));
    f.entry = std::move(entry);
    cache.files_.push_back(std::move(f));
  }
  spdlog::info("fanotify: adopted the group, the pending-event record and {} cache files", cache.files_.size());
  return cache;
}

FanotifyCache::Added FanotifyCache::add(const std::vector<std::string>& blobs, const SizeOf& size_of) {
  if (blobs.empty()) throw FanotifyError("a mount needs at least its metadata blob");
  for (const auto& id : blobs)
    if (auto why = worker::validate_blob_id(id)) throw FanotifyError(*why);
  Added out;
  for (std::size_t i = 0; i < blobs.size(); ++i) {
    const auto& id = blobs[i];
    const bool whole = i == 0;
    const auto path = (dir_ / id).string();
    auto known = std::find_if(files_.begin(), files_.end(), [&](const FanotifyFile& f) { return f.entry.blob_id == id; });
    if (known != files_.end()) {
      if (whole && !known->entry.whole)
        throw FanotifyError(fmt::format("blob {} is already a data blob of another mount; it cannot be this "
                                        "mount's metadata blob", id));
      out.paths.push_back(path);
      continue;
    }
    std::string why;
    const auto size = size_of(id, &why);
    if (!size) throw FanotifyError(fmt::format("blob {}: {}", id, why));
    // A file of another size holds another blob's bytes: start it afresh
    // rather than keep them under this blob's name.
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && static_cast<std::uint64_t>(st.st_size) != *size) {
      spdlog::warn("fanotify: cache file {} is {} bytes, blob {} is {}: starting it afresh", path, st.st_size, id,
                   *size);
      ::unlink(path.c_str());
    }
    FanotifyFile f;
    try {
      f.file = fanotify::open_cache_file(static_cast<std::uint32_t>(files_.size()), path, *size);
    } catch (const std::system_error& e) {
      throw FanotifyError(fmt::format("blob {}: {}", id, e.what()));
    }
    (void)::fchmod(f.file.writer.get(), 0640);
    if (worker_gid_) (void)::fchown(f.file.writer.get(), 0, *worker_gid_);
    // The writer fd is open: mark now. The metadata blob is filled whole
    // before any mount; a complete data blob needs no mark.
    if (!whole && !fanotify::cache_file_complete(f.file)) {
      if (int err = fanotify::mark_fd(group_.get(), f.file.writer.get()))
        throw FanotifyError(fmt::format("blob {}: fanotify_mark(FAN_PRE_ACCESS) on {}: {} (cache_dir must be on "
                                        "ext4, xfs or btrfs, and the kernel 6.14+)",
                                        id, path, sys::errno_name(err)));
    }
    f.entry = proto::msg::CacheFileEntry{.blob_id = id, .domain = "", .size = *size, .whole = whole};
    spdlog::info("fanotify: cache file {} for blob {} ({} bytes, {})", path, id, *size,
                 whole ? "metadata, filled whole" : "data, lazy");
    out.new_files.push_back(files_.size());
    out.paths.push_back(path);
    files_.push_back(std::move(f));
  }
  return out;
}

}  // namespace ondemand::supervisor
