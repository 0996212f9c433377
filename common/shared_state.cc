#include "common/shared_state.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <new>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/sys.h"

namespace ondemand {
namespace bip = boost::interprocess;

struct SharedStateMapping::Impl {
  bip::shared_memory_object shm;
  bip::mapped_region region;
  // attach_fd maps an inherited fd itself (Boost opens segments by name only).
  void* raw = nullptr;
  std::size_t raw_size = 0;
  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    if (raw) ::munmap(raw, raw_size);
  }
  void* address() const { return raw ? raw : region.get_address(); }
};

namespace {
void init_header(proto::SharedState* s) {
  std::memset(static_cast<void*>(s), 0, sizeof *s);
  new (s) proto::SharedState{};
  s->magic = proto::SHM_MAGIC;
  s->version = proto::SHM_VERSION;
  s->size = sizeof(proto::SharedState);
}

std::string shm_path(const std::string& name) { return "/dev/shm/" + name; }

// A segment an older layout created (our magic and version, its header's
// size equal to its length and below ours) is grown to our layout: fields
// are only appended (proto/shm_layout.h), the new bytes read as zero, a
// process that mapped it before keeps its shorter mapping, which stays
// valid, and older readers that attach later accept the larger size. This
// is what lets an upgrade that appends a field roll: without it neither the
// new supervisor nor a new worker could attach the live segment. A segment
// shorter than its own header says is damaged, never grown (check_header
// refuses it). True when it grew `fd` to sizeof(SharedState).
bool grow_older_layout(int fd, const void* mapping, std::size_t mapped_size, const std::string& name) {
  const auto* s = static_cast<const proto::SharedState*>(mapping);
  if (mapped_size >= sizeof(proto::SharedState) || mapped_size < offsetof(proto::SharedState, generation) ||
      s->magic != proto::SHM_MAGIC || s->version != proto::SHM_VERSION || s->size != mapped_size)
    return false;
  if (::ftruncate(fd, static_cast<off_t>(sizeof(proto::SharedState))) < 0)
    throw SharedStateError(fmt::format("shared memory {}: growing an older layout of {} bytes to {}: {}",
                                       shm_path(name), mapped_size, sizeof(proto::SharedState),
                                       sys::errno_name(errno)));
  spdlog::info("shared memory {}: grew an older layout of {} bytes to this version's {} (appended fields start at 0)",
               shm_path(name), mapped_size, sizeof(proto::SharedState));
  return true;
}

// The segment must be ours alone: created by our euid, no group or other
// permission bits. Anyone else who created the name first would otherwise
// own our watchdog (heartbeat, worker pid, generation).
void check_owner(int fd, const std::string& name) {
  struct stat st{};
  if (::fstat(fd, &st) < 0)
    throw SharedStateError(fmt::format("shared memory {}: fstat: {}", shm_path(name), sys::errno_name(errno)));
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0)
    throw SharedStateError(fmt::format(
        "shared memory {} is owned by uid {} with mode {:04o}; we run as uid {} and need a segment of our own "
        "with no group/other access (remove it once no process uses it)",
        shm_path(name), st.st_uid, st.st_mode & 07777, ::geteuid()));
}

bool is_missing(const bip::interprocess_exception& e) { return e.get_error_code() == bip::not_found_error; }
bool is_existing(const bip::interprocess_exception& e) { return e.get_error_code() == bip::already_exists_error; }

SharedStateError wrap(const std::string& name, const bip::interprocess_exception& e) {
  return SharedStateError(fmt::format("shared memory {}: {}", shm_path(name), e.what()));
}
}  // namespace

std::string check_header(const void* mapping, std::size_t mapped_size) {
  if (mapped_size < sizeof(proto::SharedState))
    return fmt::format("segment is {} bytes, layout needs at least {}", mapped_size, sizeof(proto::SharedState));
  const auto* s = static_cast<const proto::SharedState*>(mapping);
  if (s->magic != proto::SHM_MAGIC) return fmt::format("bad magic {:#x} (not an ondemand segment)", s->magic);
  if (s->version != proto::SHM_VERSION)
    return fmt::format("incompatible layout version {} (we speak {})", s->version, proto::SHM_VERSION);
  // Append-only: a newer writer's layout is ours plus fields we ignore.
  if (s->size < sizeof(proto::SharedState))
    return fmt::format("layout size {} is older than ours ({}): an older supervisor's segment", s->size,
                       sizeof(proto::SharedState));
  if (s->size > mapped_size)
    return fmt::format("layout size {} exceeds the {}-byte segment", s->size, mapped_size);
  return {};
}

nlohmann::json counters_json(const proto::WorkerCounters& c) {
  return {{"opens", c.opens.load()},
          {"open_refused", c.open_refused.load()},
          {"reads", c.reads.load()},
          {"read_failed", c.read_failed.load()},
          {"closes", c.closes.load()},
          {"bytes_written", c.bytes_written.load()},
          {"unknown_object", c.unknown_object.load()},
          {"bad_messages", c.bad_messages.load()},
          {"restores", c.restores.load()},
          {"restores_repair", c.restores_repair.load()},
          {"inflight", c.inflight.load()},
          {"prefetched_bytes", c.prefetched_bytes.load()},
          {"cull_passes", c.cull_passes.load()},
          {"culled_objects", c.culled_objects.load()},
          {"culled_bytes", c.culled_bytes.load()},
          {"cull_skipped_busy", c.cull_skipped_busy.load()},
          {"cull_skipped_unknown", c.cull_skipped_unknown.load()},
          {"cache_enobufs", c.cache_enobufs.load()},
          {"cache_dead", c.cache_dead.load()}};
}

std::string shm_name_for_tag(const std::string& tag) { return "ondemand-" + tag; }

SharedStateMapping::SharedStateMapping(std::unique_ptr<Impl> impl, std::string name)
    : impl_(std::move(impl)),
      state_(static_cast<proto::SharedState*>(impl_->address())),
      name_(std::move(name)) {}
SharedStateMapping::SharedStateMapping(SharedStateMapping&&) noexcept = default;
SharedStateMapping& SharedStateMapping::operator=(SharedStateMapping&&) noexcept = default;
SharedStateMapping::~SharedStateMapping() = default;

// O_CREAT|O_EXCL, 0600: never opens a segment someone else prepared.
SharedStateMapping SharedStateMapping::create_exclusive(const std::string& name) {
  auto impl = std::make_unique<Impl>();
  impl->shm = bip::shared_memory_object(bip::create_only, name.c_str(), bip::read_write, bip::permissions(0600));
  check_owner(impl->shm.get_mapping_handle().handle, name);
  impl->shm.truncate(sizeof(proto::SharedState));
  impl->region = bip::mapped_region(impl->shm, bip::read_write);
  init_header(static_cast<proto::SharedState*>(impl->region.get_address()));
  return SharedStateMapping(std::move(impl), name);
}

SharedStateMapping SharedStateMapping::create(const std::string& name) {
  try {
    bip::shared_memory_object::remove(name.c_str());
    return create_exclusive(name);
  } catch (const bip::interprocess_exception& e) {
    throw wrap(name, e);
  }
}

std::optional<SharedStateMapping> SharedStateMapping::open_existing(const std::string& name) {
  try {
    auto impl = std::make_unique<Impl>();
    try {
      impl->shm = bip::shared_memory_object(bip::open_only, name.c_str(), bip::read_write);
    } catch (const bip::interprocess_exception& e) {
      if (is_missing(e)) return std::nullopt;
      throw;
    }
    check_owner(impl->shm.get_mapping_handle().handle, name);
    // The whole segment: a newer supervisor's may be larger than our layout.
    impl->region = bip::mapped_region(impl->shm, bip::read_write);
    if (grow_older_layout(impl->shm.get_mapping_handle().handle, impl->region.get_address(),
                          impl->region.get_size(), name)) {
      impl->region = bip::mapped_region(impl->shm, bip::read_write);
      static_cast<proto::SharedState*>(impl->region.get_address())->size = sizeof(proto::SharedState);
    }
    if (auto why = check_header(impl->region.get_address(), impl->region.get_size()); !why.empty())
      throw SharedStateError(fmt::format("shared memory {}: {}", shm_path(name), why));
    return SharedStateMapping(std::move(impl), name);
  } catch (const bip::interprocess_exception& e) {
    throw wrap(name, e);
  }
}

SharedStateMapping SharedStateMapping::attach(const std::string& name) {
  if (auto m = open_existing(name)) return std::move(*m);
  throw SharedStateError(fmt::format("shared memory {}: no such segment (is the supervisor running?)", shm_path(name)));
}

SharedStateMapping SharedStateMapping::attach_fd(int fd, const std::string& name) {
  // No owner check: the fd is the supervisor's own segment, handed over at
  // exec (a worker running as another user could not open it by name).
  struct stat st{};
  if (::fstat(fd, &st) < 0)
    throw SharedStateError(fmt::format("shared memory {} (fd {}): fstat: {}", shm_path(name), fd, sys::errno_name(errno)));
  if (!S_ISREG(st.st_mode) || st.st_size <= 0)
    throw SharedStateError(fmt::format("shared memory {} (fd {}): not a shared memory segment", shm_path(name), fd));
  auto impl = std::make_unique<Impl>();
  auto map = [&](std::size_t bytes) {
    if (impl->raw) ::munmap(impl->raw, impl->raw_size);
    impl->raw = nullptr;
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
      throw SharedStateError(fmt::format("shared memory {} (fd {}): mmap: {}", shm_path(name), fd, sys::errno_name(errno)));
    impl->raw = p;
    impl->raw_size = bytes;
    return p;
  };
  void* p = map(static_cast<std::size_t>(st.st_size));
  if (grow_older_layout(fd, p, impl->raw_size, name)) {
    p = map(sizeof(proto::SharedState));
    static_cast<proto::SharedState*>(p)->size = sizeof(proto::SharedState);
  }
  if (auto why = check_header(p, impl->raw_size); !why.empty())
    throw SharedStateError(fmt::format("shared memory {}: {}", shm_path(name), why));
  return SharedStateMapping(std::move(impl), name);
}

SharedStateMapping SharedStateMapping::open_or_create(const std::string& name) {
  // An unusable segment (owner, mode, header) is an error, never replaced:
  // a live process may be using it. Two rounds: a segment created by someone
  // else between our look and our create is opened (and checked) on the second.
  for (int round = 0;; ++round) {
    if (auto m = open_existing(name)) return std::move(*m);
    try {
      return create_exclusive(name);
    } catch (const bip::interprocess_exception& e) {
      if (!is_existing(e) || round > 0) throw wrap(name, e);
    }
  }
}

void SharedStateMapping::remove(const std::string& name) { bip::shared_memory_object::remove(name.c_str()); }

}  // namespace ondemand
