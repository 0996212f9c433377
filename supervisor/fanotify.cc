// The fanotify front end's part of the supervisor: handing a worker the
// group, the pending-event record and the cache files, and adding the
// cache files of a new mount (ondemandctl mount). See supervisor.h.
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <iterator>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "frontends/fanotify/erofs_mount.h"
#include "supervisor/supervisor.h"

namespace ondemand::supervisor {
using namespace std::chrono_literals;

namespace {
// How long an add-blobs request waits for the serving worker to confirm it
// holds the new files (it opens each blob first, as the engine does).
constexpr auto ADD_CONFIRM_TIMEOUT = 10s;
}  // namespace

void Supervisor::send_cache_files(WorkerHandle& w, const std::vector<std::size_t>& indexes) {
  const auto& files = fanotify_->files();
  for (std::size_t at = 0; at < indexes.size();) {
    // Entries are small (a validated blob id): fds bound the batch.
    const std::size_t n = std::min(indexes.size() - at, proto::MAX_FDS_PER_MESSAGE);
    proto::msg::CacheFiles batch;
    std::vector<int> fds;
    for (std::size_t i = at; i < at + n; ++i) {
      batch.files.push_back(files[indexes[i]].entry);
      fds.push_back(files[indexes[i]].file.writer.get());
    }
    w.send(batch, fds);
    at += n;
  }
}

void Supervisor::hand_group(WorkerHandle& w) {
  std::vector<std::size_t> all(fanotify_->files().size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  send_cache_files(w, all);
  w.cache_files = all.size();
  const int fds[] = {fanotify_->group(), fanotify_->record_fd()};
  w.send(proto::msg::FanotifyGroup{
             .generation = w.generation, .shm = shm_->name(), .standby = w.standby, .spare = w.spare},
         fds);
}

void Supervisor::add_blobs(const proto::control::AddBlobs& request, ControlServer::Reply reply) {
  if (!fanotify_)
    return reply(proto::control::Error{"add-blobs (ondemandctl mount) needs config key \"frontend\": \"fanotify\"; "
                                       "with cachefiles, mount -t erofs -o fsid=... directly"});
  const auto size_of = [this](const std::string& id, std::string* why) -> std::optional<std::uint64_t> {
    if (const auto* b = bindings_->find(id)) {
      if (b->size) return b->size;
      *why = "its binding has no size (ondemandctl bind ... --size N)";
      return std::nullopt;
    }
    const auto path = config_.blob_dir / id;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      *why = fmt::format("not bound and {} is not a regular file", path.string());
      return std::nullopt;
    }
    return static_cast<std::uint64_t>(st.st_size);
  };
  FanotifyCache::Added added;
  try {
    added = fanotify_->add(request.blobs, size_of);
  } catch (const FanotifyError& e) {
    spdlog::error("add-blobs refused: {}", e.what());
    return reply(proto::control::Error{e.what()});
  }
  const auto count = fanotify_->files().size();
  // Every worker that has its files already gets the new ones; one still
  // in its handshake gets the whole table then.
  for (WorkerHandle* h : {worker_.get(), incoming_.get(), spare_.get()}) {
    if (!h || !h->handshake_ok || added.new_files.empty()) continue;
    try {
      send_cache_files(*h, added.new_files);
    } catch (const ChannelError& e) {
      spdlog::warn("could not send the new cache files to worker pid={}: {}", h->pid, e.what());
    }
  }
  proto::control::CacheFilesReply done{added.paths};
  // Ready once the serving worker holds them; with no worker serving, the
  // next one gets them before it reads (and events wait in the kernel).
  if (!worker_ || !worker_->serving || worker_->cache_files >= count) return reply(done);
  auto deadline = std::make_shared<boost::asio::steady_timer>(loop_, ADD_CONFIRM_TIMEOUT);
  deadline->async_wait([this, raw = deadline.get()](boost::system::error_code ec) {
    if (ec) return;
    auto it = std::find_if(pending_mounts_.begin(), pending_mounts_.end(),
                           [raw](const PendingMount& p) { return p.deadline.get() == raw; });
    if (it == pending_mounts_.end()) return;
    auto pending = std::move(*it);
    pending_mounts_.erase(it);
    spdlog::error("add-blobs: the serving worker did not confirm the new cache files in {} s",
                  ADD_CONFIRM_TIMEOUT.count());
    pending.reply(proto::control::Error{fmt::format(
        "the serving worker did not confirm the new cache files within {} s; not ready to mount",
        ADD_CONFIRM_TIMEOUT.count())});
  });
  pending_mounts_.push_back({count, added.paths, std::move(reply), std::move(deadline)});
}

void Supervisor::on_cache_files_added(WorkerHandle& w, std::uint64_t count) {
  w.cache_files = std::max(w.cache_files, count);
  if (&w == worker_.get() && w.serving) answer_mounts(w.cache_files, "the serving worker confirmed them");
}

void Supervisor::answer_mounts(std::uint64_t count, const char* how) {
  for (auto it = pending_mounts_.begin(); it != pending_mounts_.end();) {
    if (it->count > count) {
      ++it;
      continue;
    }
    auto pending = std::move(*it);
    it = pending_mounts_.erase(it);
    pending.deadline->cancel();
    spdlog::info("add-blobs ready: {}", how);
    pending.reply(proto::control::CacheFilesReply{std::move(pending.paths)});
  }
}

std::vector<std::string> Supervisor::fanotify_mounts() const {
  std::ifstream in("/proc/self/mountinfo");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return fanotify::erofs_mounts_in(text, (config_.cache_dir / "fanotify").string());
}

}  // namespace ondemand::supervisor
