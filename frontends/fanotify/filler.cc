#include "frontends/fanotify/filler.h"

#include <cerrno>
#include <future>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/sys.h"

namespace ondemand::fanotify {

AlignedRange widen(std::uint64_t offset, std::uint64_t len, std::uint64_t size, std::uint64_t window) {
  if (window == 0) window = 4096;
  if (offset >= size) return {size, size};
  const std::uint64_t end = len > size - offset ? size : offset + len;
  const std::uint64_t start = offset / window * window;
  std::uint64_t wide_end = (end + window - 1) / window * window;
  if (wide_end < end || wide_end > size) wide_end = size;  // overflow or past EOF
  return {start, wide_end};
}

LocalBlobFiller::LocalBlobFiller(std::vector<UniqueFd> sources, std::uint64_t window)
    : sources_(std::move(sources)), window_(window) {}

int fill_now(RangeFiller& filler, CacheFile& file, std::uint64_t offset, std::uint64_t len) {
  std::promise<int> result;
  auto ready = result.get_future();
  filler.fill(file, offset, len, [&result](int err) { result.set_value(err); });
  return ready.get();
}

void LocalBlobFiller::fill(CacheFile& file, std::uint64_t offset, std::uint64_t len, Done done) {
  done(fill_sync(file, offset, len));
}

int LocalBlobFiller::fill_sync(CacheFile& file, std::uint64_t offset, std::uint64_t len) {
  if (file.index >= sources_.size() || !sources_[file.index]) return EIO;
  const auto range = widen(offset, len, file.size, window_);
  constexpr std::uint64_t CHUNK = 1 << 20;
  std::vector<std::byte> buf(std::min<std::uint64_t>(CHUNK, range.end - range.start));
  for (std::uint64_t pos = range.start; pos < range.end;) {
    const auto n = std::min<std::uint64_t>(CHUNK, range.end - pos);
    auto r = ondemand::sys::pread_full(sources_[file.index].get(), buf.data(), n, pos);
    if (!r.ok() || static_cast<std::uint64_t>(r.rc) != n) {
      spdlog::error("fanotify fill: blob {} short or failed read at {}+{}: {}", file.index, pos, n,
                    r.ok() ? "end of blob" : ondemand::sys::errno_name(r.err));
      return EIO;
    }
    auto w = ondemand::sys::pwrite_full(file.writer.get(), buf.data(), n, pos);
    if (!w.ok()) {
      spdlog::error("fanotify fill: write {} at {}+{}: {}", file.path, pos, n,
                    ondemand::sys::errno_name(w.err));
      return w.err == ENOSPC || w.err == EDQUOT ? w.err : EIO;
    }
    pos += n;
  }
  return 0;
}

}  // namespace ondemand::fanotify
