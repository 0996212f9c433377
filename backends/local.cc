#include "backends/local.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <stdexcept>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/sys.h"
#include "proto/blob_id.h"

namespace ondemand::worker {
namespace {

class LocalBlob final : public Blob {
 public:
  LocalBlob(UniqueFd fd, std::uint64_t size) : fd_(std::move(fd)), size_(size) {}
  std::uint64_t size() const override { return size_; }
  std::optional<BackendError> read(std::uint64_t off, std::span<std::byte> out, Deadline) override {
    auto r = sys::pread_full(fd_.get(), out.data(), out.size(), off);
    if (!r.ok()) return error_from_errno(r.err, fmt::format("pread at {}: {}", off, sys::errno_name(r.err)));
    const auto got = static_cast<std::size_t>(r.rc);
    // Short only at end of file: the blob shrank under us if that is before
    // size_, which is an I/O error, not zeros.
    if (got < out.size() && off + got < size_)
      return BackendError{BackendError::Kind::IO, EIO,
                          fmt::format("blob file ends at {} but its size was {}", off + got, size_)};
    std::memset(out.data() + got, 0, out.size() - got);
    return std::nullopt;
  }

 private:
  UniqueFd fd_;
  std::uint64_t size_;
};

}  // namespace

LocalBackend::LocalBackend(const std::filesystem::path& blob_dir) : dir_path_(blob_dir) {
  auto r = sys::open(blob_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (!r.fd)
    throw std::runtime_error(
        fmt::format("cannot open blob_dir {}: {}", blob_dir.string(), sys::errno_name(r.err)));
  dir_ = std::move(r.fd);
}

OpenResult LocalBackend::open(const proto::BlobRef& ref, Deadline) {
  if (auto why = validate_blob_id(ref.blob_id)) return {nullptr, error_from_errno(EINVAL, *why)};
  const std::string& name = ref.blob_id;
  open_how how{};
  // O_NONBLOCK: a FIFO planted in blob_dir must not block an I/O thread in
  // open(2); it is refused below as not a regular file. (No effect on the
  // reads of a regular file.)
  how.flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long rc;
  do {
    rc = ::syscall(SYS_openat2, dir_.get(), name.c_str(), &how, sizeof how);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0 && errno == ENOSYS) {
    // openat2 filtered: systemd's RestrictSUIDSGID= (the shipped unit sets
    // it) answers ENOSYS because seccomp cannot inspect its mode argument.
    // A validated blob id is one path component without "." or "..", so
    // openat(dir, id, O_NOFOLLOW) resolves exactly as RESOLVE_BENEATH |
    // RESOLVE_NO_SYMLINKS would: beneath blob_dir, no symlink followed.
    static std::once_flag said;
    std::call_once(said, [] {
      spdlog::info("openat2 is not available (ENOSYS: a seccomp filter such as systemd's RestrictSUIDSGID=); "
                   "blobs are opened with openat(O_NOFOLLOW), the same for one-component blob ids");
    });
    do {
      rc = ::openat(dir_.get(), name.c_str(), static_cast<int>(how.flags));
    } while (rc < 0 && errno == EINTR);
  }
  if (rc < 0) {
    // ELOOP / EXDEV mean a symlink or an escape attempt: refuse as invalid.
    int err = errno;
    if (err == ELOOP || err == EXDEV)
      return {nullptr, error_from_errno(EINVAL, "a symlink or a path outside blob_dir")};
    return {nullptr, error_from_errno(err, fmt::format("open {}/{}: {}", dir_path_.string(),
                                                       escape_id(name), sys::errno_name(err)))};
  }
  UniqueFd fd{static_cast<int>(rc)};
  struct stat st{};
  if (::fstat(fd.get(), &st) < 0) {
    const int err = errno;
    return {nullptr, error_from_errno(err, "fstat: " + sys::errno_name(err))};
  }
  if (!S_ISREG(st.st_mode)) return {nullptr, error_from_errno(EINVAL, "not a regular file")};
  return {std::make_shared<LocalBlob>(std::move(fd), static_cast<std::uint64_t>(st.st_size)), std::nullopt};
}

std::string LocalBackend::describe() const { return fmt::format("local:{}", dir_path_.string()); }

}  // namespace ondemand::worker
