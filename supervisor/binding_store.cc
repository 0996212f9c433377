#include "supervisor/binding_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/sys.h"
#include "common/unique_fd.h"
#include "proto/blob_id.h"

namespace ondemand::supervisor {

BindingStore::BindingStore(std::filesystem::path data_dir, std::filesystem::path state_dir,
                           std::optional<WorkerIdentity> worker)
    : data_dir_(std::move(data_dir)), state_dir_(std::move(state_dir)), worker_(std::move(worker)) {}

void BindingStore::load(const Config& config) {
  if (data_dir_.empty()) return;
  std::filesystem::create_directories(data_dir_);
  auto loaded = bindings::load_bindings_file(file());
  if (auto* error = std::get_if<std::string>(&loaded))
    throw ConfigError(fmt::format("blob bindings unusable: {} (fix or remove the file)", *error));
  bindings_ = std::move(std::get<bindings::Bindings>(loaded));
  for (const auto& [id, b] : bindings_)
    if (!config.registries.contains(b.registry))
      spdlog::warn("binding \"{}\" in {} names registry \"{}\", which is not in the config key registries: its "
                   "reads fail until it is added", id, file().string(), b.registry);
  if (auto error = publish(); !error.empty()) throw ConfigError(error);
  if (auto error = publish_credentials(config); !error.empty()) throw ConfigError(error);
  spdlog::info("{} blob binding(s) from {}", bindings_.size(), file().string());
}

std::string BindingStore::publish() const {
  if (data_dir_.empty()) return {};
  std::optional<unsigned> gid;
  if (worker_) gid = worker_->gid;
  return bindings::write_file_atomic(bindings::worker_bindings_path(state_dir_),
                                     bindings::serialize_bindings(bindings_), 0640, gid);
}

// The operator's credentials files stay root 0600; the worker gets a copy
// it owns (0600) in state_dir. Their contents are never logged.
std::string BindingStore::publish_credentials(const Config& config) const {
  for (const auto& [host, r] : config.registries) {
    if (r.credentials_file.empty()) continue;
    const auto key = fmt::format("config key \"registries.{}.credentials_file\"", host);
    UniqueFd fd{::open(r.credentials_file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)};
    struct stat st {};
    if (!fd || ::fstat(fd.get(), &st) < 0)
      return fmt::format("{}: cannot read {}: {}", key, r.credentials_file.string(), sys::errno_name(errno));
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0 || st.st_size > 64 * 1024)
      return fmt::format("{}: {} must be a regular file of at most 64 KiB, mode 0600 (it has {:04o})", key,
                         r.credentials_file.string(), st.st_mode & 07777);
    std::string text(static_cast<std::size_t>(st.st_size), '\0');
    if (::pread(fd.get(), text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()))
      return fmt::format("{}: cannot read {}", key, r.credentials_file.string());
    std::optional<unsigned> uid, gid;
    if (worker_) {
      uid = worker_->uid;
      gid = worker_->gid;
    }
    if (auto error = bindings::write_file_atomic(bindings::worker_credentials_path(config.state_dir, host), text,
                                                 0600, gid, uid);
        !error.empty())
      return fmt::format("{}: {}", key, error);
  }
  return {};
}

proto::ControlReply BindingStore::bind(const proto::control::Bind& request, const Config& config) {
  using proto::control::Error;
  if (data_dir_.empty()) return Error{"bindings need the config key data_dir (not set)"};
  bindings::Binding b{request.registry, request.repository, request.digest, request.size};
  if (auto error = bindings::validate_binding(request.id, b); !error.empty()) return Error{error};
  if (!config.registries.contains(b.registry))
    return Error{fmt::format("binding \"{}\": registry \"{}\" is not in the config key registries", request.id,
                             b.registry)};
  if (auto it = bindings_.find(request.id); it != bindings_.end()) {
    if (it->second == b) return proto::control::Done{fmt::format("blob id {} is already bound so", request.id)};
    // The cache may already hold the old blob's bytes under this id.
    return Error{fmt::format("binding \"{}\": already bound to {}/{}@{}; unbind it first", request.id,
                             it->second.registry, it->second.repository, it->second.digest)};
  }
  auto next = bindings_;
  next.emplace(request.id, b);
  if (auto error = bindings::write_file_atomic(file(), bindings::serialize_bindings(next), 0600); !error.empty()) {
    spdlog::error("bind {} refused: {}", request.id, error);
    return Error{fmt::format("binding \"{}\" not stored: {}", request.id, error)};
  }
  bindings_ = std::move(next);
  spdlog::info("blob id {} bound to registry={} repository={} digest={}", request.id, b.registry, b.repository,
               b.digest);
  if (auto error = publish(); !error.empty())
    return Error{fmt::format("binding \"{}\" stored in {}, but the worker's copy failed: {}", request.id,
                             file().string(), error)};
  return proto::control::Done{fmt::format("blob id {} bound to {}/{}@{}", request.id, b.registry, b.repository,
                                          b.digest)};
}

proto::ControlReply BindingStore::unbind(const proto::control::Unbind& request) {
  using proto::control::Error;
  if (data_dir_.empty()) return Error{"bindings need the config key data_dir (not set)"};
  if (!bindings_.contains(request.id))
    return Error{fmt::format("binding \"{}\": no such binding", worker::escape_id(request.id))};
  auto next = bindings_;
  next.erase(request.id);
  if (auto error = bindings::write_file_atomic(file(), bindings::serialize_bindings(next), 0600); !error.empty())
    return Error{fmt::format("binding \"{}\" not removed: {}", request.id, error)};
  bindings_ = std::move(next);
  spdlog::info("blob id {} unbound", request.id);
  if (auto error = publish(); !error.empty())
    return Error{fmt::format("binding \"{}\" removed from {}, but the worker's copy failed: {}", request.id,
                             file().string(), error)};
  return proto::control::Done{fmt::format("blob id {} unbound", request.id)};
}

proto::control::BindingsReply BindingStore::list() const {
  proto::control::BindingsReply r;
  for (const auto& [id, b] : bindings_) r.bindings.push_back({id, b.registry, b.repository, b.digest, b.size});
  return r;
}

}  // namespace ondemand::supervisor
