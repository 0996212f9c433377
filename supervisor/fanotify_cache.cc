#include "supervisor/fanotify_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
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
    FanotifyCache cache(std::move(group), std::move(record), std::move(opened.fd), dir, worker_gid);
    cache.rediscover();
    return cache;
  } catch (const std::system_error& e) {
    throw FanotifyError(fmt::format("pending-event record {}: {}", path, e.what()));
  }
}

// A fresh group knows no file. The cache files of a previous group may
// still be mounted (its holders all died: the kernel let their pending
// reads through, window 6 of frontends/fanotify/README.md); unmarked, every
// later read of what is not fetched yet would return zeros for good. So
// each incomplete data blob found is marked again before any worker runs,
// and each incomplete metadata blob filled whole by the first worker.
void FanotifyCache::rediscover() {
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir_, ec))
    if (entry.is_regular_file(ec)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  std::size_t marked = 0;
  for (const auto& id : names) {
    const auto path = (dir_ / id).string();
    if (worker::validate_blob_id(id)) {
      spdlog::warn("fanotify: {} is not a blob's cache file (not a valid blob id): left alone", path);
      continue;
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) continue;
    try {
      if (register_file(id, static_cast<std::uint64_t>(st.st_size), is_metadata_blob(path))) ++marked;
    } catch (const FanotifyError& e) {
      spdlog::error("fanotify: cache file {} not taken back: {}", path, e.what());
    }
  }
  if (!files_.empty())
    spdlog::info("fanotify: {} cache files found in {}, {} of them incomplete data blobs marked again", files_.size(),
                 dir_.string(), marked);
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

namespace {
// Whether a cache file holds a metadata blob survives a restart in an
// xattr: a fresh supervisor must fill such a file whole again rather than
// mark it (before Linux 7.1 its reads raise no event).
constexpr const char* WHOLE_XATTR = "user.ondemand.whole";
}  // namespace

bool FanotifyCache::is_metadata_blob(const std::string& path) {
  char value = 0;
  return ::getxattr(path.c_str(), WHOLE_XATTR, &value, 1) == 1 && value == '1';
}

bool FanotifyCache::register_file(const std::string& id, std::uint64_t size, bool whole) {
  const auto path = (dir_ / id).string();
  FanotifyFile f;
  try {
    f.file = fanotify::open_cache_file(static_cast<std::uint32_t>(files_.size()), path, size);
  } catch (const std::system_error& e) {
    throw FanotifyError(fmt::format("blob {}: {}", id, e.what()));
  }
  (void)::fchmod(f.file.writer.get(), 0640);
  if (worker_gid_) (void)::fchown(f.file.writer.get(), 0, *worker_gid_);
  if (whole && ::fsetxattr(f.file.writer.get(), WHOLE_XATTR, "1", 1, 0) != 0)
    spdlog::warn("fanotify: {}: cannot record that it is a metadata blob ({}): a supervisor that starts afresh "
                 "will treat it as a data blob", path, sys::errno_name(errno));
  // The writer fd is open: mark now. The metadata blob is filled whole
  // before any mount; a complete data blob needs no mark.
  bool marked = false;
  if (!whole && !fanotify::cache_file_complete(f.file)) {
    if (int err = fanotify::mark_fd(group_.get(), f.file.writer.get()))
      throw FanotifyError(fmt::format("blob {}: fanotify_mark(FAN_PRE_ACCESS) on {}: {} (cache_dir must be on "
                                      "ext4, xfs or btrfs, and the kernel 6.14+)",
                                      id, path, sys::errno_name(err)));
    marked = true;
  }
  f.entry = proto::msg::CacheFileEntry{.blob_id = id, .domain = "", .size = size, .whole = whole};
  spdlog::info("fanotify: cache file {} for blob {} ({} bytes, {})", path, id, size,
               whole ? "metadata, filled whole" : "data, lazy");
  files_.push_back(std::move(f));
  return marked;
}

FanotifyCache::Added FanotifyCache::add(const std::vector<std::string>& blobs, const SizeOf& size_of) {
  if (blobs.empty()) throw FanotifyError("a mount needs at least its metadata blob");
  // Everything is checked before anything is created or marked: a refused
  // mount leaves no cache file behind.
  std::vector<std::optional<std::uint64_t>> sizes(blobs.size());  // nullopt: known already
  for (std::size_t i = 0; i < blobs.size(); ++i) {
    const auto& id = blobs[i];
    if (auto why = worker::validate_blob_id(id)) throw FanotifyError(fmt::format("blob \"{}\": {}", worker::escape_id(id), *why));
    auto known = std::find_if(files_.begin(), files_.end(), [&](const FanotifyFile& f) { return f.entry.blob_id == id; });
    if (known != files_.end()) {
      if (i == 0 && !known->entry.whole)
        throw FanotifyError(fmt::format("blob {} is already a data blob of another mount; it cannot be this "
                                        "mount's metadata blob", id));
      continue;
    }
    std::string why;
    sizes[i] = size_of(id, &why);
    if (!sizes[i]) throw FanotifyError(fmt::format("blob {}: {}", id, why));
  }
  Added out;
  for (std::size_t i = 0; i < blobs.size(); ++i) {
    const auto& id = blobs[i];
    const auto path = (dir_ / id).string();
    out.paths.push_back(path);
    if (!sizes[i] || std::any_of(blobs.begin(), blobs.begin() + i, [&](const auto& b) { return b == id; })) continue;
    // A file of another size holds another blob's bytes: start it afresh
    // rather than keep them under this blob's name.
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && static_cast<std::uint64_t>(st.st_size) != *sizes[i]) {
      spdlog::warn("fanotify: cache file {} is {} bytes, blob {} is {}: starting it afresh", path, st.st_size, id,
                   *sizes[i]);
      ::unlink(path.c_str());
    }
    register_file(id, *sizes[i], i == 0);
    out.new_files.push_back(files_.size() - 1);
  }
  return out;
}

}  // namespace ondemand::supervisor
