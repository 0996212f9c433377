#include "frontends/fanotify/engine_filler.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>

#include <spdlog/spdlog.h>

#include "common/sys.h"

namespace ondemand::fanotify {

EngineFiller::EngineFiller(worker::Engine& engine, CacheFileSet& files,
                           const std::vector<proto::BlobRef>& refs, FillOptions options)
    : engine_(engine), options_(options) {
  for (auto& file : files.files()) {
    if (file.index >= refs.size()) {
      if (file.index >= targets_.size()) targets_.resize(file.index + 1);
      spdlog::error("fanotify: cache file {} (index {}) has no blob reference", file.path, file.index);
      continue;
    }
    add(file, refs[file.index]);
  }
}

void EngineFiller::add(const CacheFile& file, const proto::BlobRef& ref) {
  if (file.index >= targets_.size()) targets_.resize(file.index + 1);
  targets_[file.index].reset();
  auto opened = engine_.open_now(ref, worker::NO_DEADLINE);
  if (opened.error) {
    spdlog::error("fanotify: blob {} for {}: {} ({}); its reads fail with EIO", proto::describe(ref), file.path,
                  opened.error->message, worker::to_string(opened.error->kind));
    return;
  }
  if (opened.blob->size() != file.size) {
    spdlog::error("fanotify: blob {} is {} bytes but its cache file {} is {}; its reads fail with EIO",
                  proto::describe(ref), opened.blob->size(), file.path, file.size);
    return;
  }
  const int fd = ::fcntl(file.writer.get(), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    spdlog::error("fanotify: dup of the writer fd of {}: {}; its reads fail with EIO", file.path,
                  sys::errno_name(errno));
    return;
  }
  targets_[file.index] = std::make_shared<worker::Target>(worker::Target{ref, opened.blob, UniqueFd(fd)});
}

void EngineFiller::fill(CacheFile& file, std::uint64_t offset, std::uint64_t len, Done done) {
  auto target = file.index < targets_.size() ? targets_[file.index] : nullptr;
  if (!target) return done(EIO);  // said why at construction
  const auto want_end = len > file.size - std::min(offset, file.size) ? file.size : offset + len;
  if (offset >= want_end) return done(0);  // nothing of the file asked
  worker::FillRequest request;
  request.target = target;
  // The front end's own window rule (LocalBlobFiller's too): aligned, and
  // clipped to the file's exact size, not rounded up to a page as the
  // cachefiles anonymous fd wants.
  const auto range = widen(offset, len, file.size, options_.window);
  request.plan.range = {range.start, range.end};
  request.plan.resume = true;
  request.plan.stall_timeout = options_.stall_timeout;
  request.deadline = std::chrono::steady_clock::now() + options_.stall_timeout;
  engine_.fill(std::move(request), [offset, want_end, path = file.path,
                                    done = std::move(done)](const worker::FillResult& r) {
    // The answer is about the asked bytes (RangeFiller's contract): a fill
    // that fails past them, in the rest of its window, still lets the
    // reader through, as a cachefiles READ whose pages landed does.
    const bool covered = r.range.start <= offset && r.range.start + r.done >= want_end;
    if (r.error) {
      spdlog::error("fanotify: fill of {} [{}, {}): {}{}", path, r.range.start, r.range.end, r.error->message,
                    covered ? " (past the asked bytes: allowed)" : "");
      if (covered) return done(0);
      return done(r.error->err ? r.error->err : EIO);
    }
    if (r.write_err) {
      spdlog::error("fanotify: fill of {} [{}, {}): write: {}{}", path, r.range.start, r.range.end,
                    sys::errno_name(r.write_err), covered ? " (past the asked bytes: allowed)" : "");
      return done(covered ? 0 : r.write_err);
    }
    if (!covered) {
      spdlog::error("fanotify: fill of {} covered [{}, {}) of the asked [{}, {})", path, r.range.start,
                    r.range.start + r.done, offset, want_end);
      return done(EIO);
    }
    done(0);
  });
}

}  // namespace ondemand::fanotify
