#include "common/shared_state.h"

#include <cstring>
#include <new>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <fmt/format.h>

namespace ondemand {
namespace bip = boost::interprocess;

struct SharedStateMapping::Impl {
  bip::shared_memory_object shm;
  bip::mapped_region region;
};

namespace {
void init_header(proto::SharedState* s) {
  std::memset(static_cast<void*>(s), 0, sizeof *s);
  new (s) proto::SharedState{};
  s->magic = proto::SHM_MAGIC;
  s->version = proto::SHM_VERSION;
  s->size = sizeof(proto::SharedState);
}
}  // namespace

std::string check_header(const void* mapping, std::size_t mapped_size) {
  if (mapped_size < sizeof(proto::SharedState))
    return fmt::format("segment is {} bytes, layout needs {}", mapped_size, sizeof(proto::SharedState));
  const auto* s = static_cast<const proto::SharedState*>(mapping);
  if (s->magic != proto::SHM_MAGIC) return fmt::format("bad magic {:#x}", s->magic);
  if (s->version != proto::SHM_VERSION)
    return fmt::format("layout version {} (we speak {})", s->version, proto::SHM_VERSION);
  if (s->size != sizeof(proto::SharedState))
    return fmt::format("layout size {} (we expect {})", s->size, sizeof(proto::SharedState));
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
      state_(static_cast<proto::SharedState*>(impl_->region.get_address())),
      name_(std::move(name)) {}
SharedStateMapping::SharedStateMapping(SharedStateMapping&&) noexcept = default;
SharedStateMapping& SharedStateMapping::operator=(SharedStateMapping&&) noexcept = default;
SharedStateMapping::~SharedStateMapping() = default;

SharedStateMapping SharedStateMapping::create(const std::string& name) {
  try {
    auto impl = std::make_unique<Impl>();
    impl->shm = bip::shared_memory_object(bip::open_or_create, name.c_str(), bip::read_write, 0600);
    impl->shm.truncate(sizeof(proto::SharedState));
    impl->region = bip::mapped_region(impl->shm, bip::read_write);
    init_header(static_cast<proto::SharedState*>(impl->region.get_address()));
    return SharedStateMapping(std::move(impl), name);
  } catch (const bip::interprocess_exception& e) {
    throw SharedStateError(fmt::format("shared memory {}: {}", name, e.what()));
  }
}

SharedStateMapping SharedStateMapping::attach(const std::string& name) {
  try {
    auto impl = std::make_unique<Impl>();
    impl->shm = bip::shared_memory_object(bip::open_only, name.c_str(), bip::read_write);
    impl->region = bip::mapped_region(impl->shm, bip::read_write);
    if (auto why = check_header(impl->region.get_address(), impl->region.get_size()); !why.empty())
      throw SharedStateError(fmt::format("shared memory {}: {}", name, why));
    return SharedStateMapping(std::move(impl), name);
  } catch (const bip::interprocess_exception& e) {
    throw SharedStateError(fmt::format("shared memory {}: {}", name, e.what()));
  }
}

SharedStateMapping SharedStateMapping::open_or_create(const std::string& name) {
  try {
    return attach(name);
  } catch (const SharedStateError&) {
    return create(name);
  }
}

void SharedStateMapping::remove(const std::string& name) { bip::shared_memory_object::remove(name.c_str()); }

}  // namespace ondemand
