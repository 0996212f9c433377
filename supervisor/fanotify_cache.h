// The fanotify front end's kernel object, held by the supervisor for its
// whole life like the bound /dev/cachefiles fd: the pre-content group, the
// pending-event record (frontends/fanotify/pending_record.h) and every
// cache file's writer fd. Workers get duplicates of all three; a worker's
// death therefore never closes the group (which would ALLOW every pending
// event: fanotify_release), and its successor finds the record and the
// writer fds it needs to finish what the dead one read.
//
// Cache files live in <cache_dir>/fanotify/<blob id>, sparse, of the blob's
// size; they are the cache, kept across restarts. Each writer fd is opened
// before the file is marked (writes through it raise no event). A metadata
// blob (the first blob of a mount) is not marked: the worker fills it whole
// at once, and `ondemandctl mount` mounts only once it is complete (before
// Linux 7.1 metadata reads raise no event, so a mount over a partial
// metadata blob would read zeros).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "config/config.h"
#include "frontends/fanotify/cache_file.h"
#include "frontends/fanotify/pending_record.h"
#include "proto/channel.h"

namespace ondemand::supervisor {

struct FanotifyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct FanotifyFile {
  proto::msg::CacheFileEntry entry;
  fanotify::CacheFile file;
};

class FanotifyCache {
 public:
  // fanotify_init (frontends/fanotify/group.h) and a fresh record at
  // /dev/shm/ondemand-<tag>-fanotify (a new inode: a worker of a previous
  // supervisor keeps its own); the cache files already in
  // <cache_dir>/fanotify are taken back (incomplete data blobs marked).
  // Throws FanotifyError naming the step.
  static FanotifyCache create(const Config& config, std::optional<gid_t> worker_gid);
  // What an adopted worker handed back (supervisor/adopt.h): the record is
  // attached (its header checked), each writer fd must be a regular file of
  // its entry's size and each blob id valid. Throws FanotifyError naming
  // the first that is not.
  static FanotifyCache adopt(const Config& config, std::optional<gid_t> worker_gid, UniqueFd group,
                             UniqueFd record_fd, std::vector<proto::msg::CacheFileEntry> entries,
                             std::vector<UniqueFd> writers);

  // The size of a blob, for its cache file: from its binding when bound
  // (needs a size), else blob_dir/<id>. nullopt and `why` when unknown.
  using SizeOf = std::function<std::optional<std::uint64_t>(const std::string& blob_id, std::string* why)>;

  // Adds the cache files of one mount: blobs[0] the metadata blob, the rest
  // data blobs. A blob that already has a cache file is reused. Returns the
  // entries that are new (for the workers) and every blob's path, in order.
  // Throws FanotifyError naming the blob (invalid id, unknown size, a file
  // system without pre-content marks).
  struct Added {
    std::vector<std::size_t> new_files;  // indexes into files()
    std::vector<std::string> paths;
  };
  Added add(const std::vector<std::string>& blobs, const SizeOf& size_of);

  int group() const { return group_.get(); }
  int record_fd() const { return record_fd_.get(); }
  const std::vector<FanotifyFile>& files() const { return files_; }

 private:
  FanotifyCache(UniqueFd group, fanotify::PendingRecord record, UniqueFd record_fd, std::filesystem::path dir,
                std::optional<gid_t> worker_gid);
  void rediscover();
  // Opens (creating) the cache file of blob `id`, marks it unless it is a
  // metadata blob or complete, appends it. Returns whether it was marked.
  bool register_file(const std::string& id, std::uint64_t size, bool whole);
  static bool is_metadata_blob(const std::string& path);

  UniqueFd group_;
  fanotify::PendingRecord record_;
  UniqueFd record_fd_;
  std::filesystem::path dir_;
  std::optional<gid_t> worker_gid_;
  std::vector<FanotifyFile> files_;
};

// <cache_dir>/fanotify/<blob id>: where a blob's cache file is.
std::filesystem::path fanotify_cache_path(const Config& config, const std::string& blob_id);
// /dev/shm/ondemand-<tag>-fanotify.
std::string fanotify_record_path(const Config& config);

}  // namespace ondemand::supervisor
