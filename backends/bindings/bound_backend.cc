#include "backends/bindings/bound_backend.h"

#include <sys/stat.h>

#include <openssl/evp.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "proto/blob_id.h"

namespace ondemand::bindings {
namespace {

using worker::BackendError;

class VerifyingBlob final : public worker::Blob {
 public:
  VerifyingBlob(std::shared_ptr<worker::Blob> inner, std::string digest, std::string what)
      : inner_(std::move(inner)), digest_(std::move(digest)), what_(std::move(what)), ctx_(EVP_MD_CTX_new()) {
    check_ = digest_.starts_with("sha256:") && ctx_ && EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) == 1;
  }
  ~VerifyingBlob() override { EVP_MD_CTX_free(ctx_); }

  std::uint64_t size() const override { return inner_->size(); }
  std::size_t read_unit() const override { return inner_->read_unit(); }

  std::optional<BackendError> read(std::uint64_t off, std::span<std::byte> out, worker::Deadline deadline) override {
    if (bad()) return mismatch_error();
    auto error = inner_->read(off, out, deadline);
    if (error || !check_) return error;
    std::lock_guard lock(mutex_);
    const std::uint64_t size = inner_->size();
    const std::uint64_t end = std::min<std::uint64_t>(off + out.size(), size);
    if (off <= hashed_ && end > hashed_ && hashed_ < size) {
      EVP_DigestUpdate(ctx_, out.data() + (hashed_ - off), end - hashed_);
      hashed_ = end;
      if (hashed_ == size) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        EVP_DigestFinal_ex(ctx_, md, &len);
        std::string hex;
        for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
        if ("sha256:" + hex != digest_) {
          bad_ = true;
          spdlog::error("{}: content has sha256:{}, the binding says {}: integrity failure, its reads fail with EIO",
                        what_, hex, digest_);
          return mismatch_error();
        }
        spdlog::info("{}: whole blob read, digest {} verified", what_, digest_);
      }
    }
    return std::nullopt;
  }

 private:
  bool bad() {
    std::lock_guard lock(mutex_);
    return bad_;
  }
  BackendError mismatch_error() const {
    return BackendError{BackendError::Kind::INTEGRITY, EIO, fmt::format("{}: digest mismatch", what_)};
  }

  std::shared_ptr<worker::Blob> inner_;
  std::string digest_;
  std::string what_;
  std::mutex mutex_;
  EVP_MD_CTX* ctx_;
  bool check_ = false;
  std::uint64_t hashed_ = 0;
  bool bad_ = false;
};

}  // namespace

std::shared_ptr<worker::Blob> verifying_blob(std::shared_ptr<worker::Blob> inner, std::string digest,
                                             std::string what) {
  return std::make_shared<VerifyingBlob>(std::move(inner), std::move(digest), std::move(what));
}

BoundBackend::BoundBackend(std::unique_ptr<worker::Backend> fallback, const Config& config)
    : fallback_(std::move(fallback)),
      file_(worker_bindings_path(config.state_dir)),
      timeout_(config.registry_request_timeout_ms) {
  for (const auto& [host, r] : config.registries) {
    registry::RegistryOptions options;
    options.registry = host;
    options.insecure_http = r.insecure_http;
    options.ca_file = r.ca_file;
    if (!r.credentials_file.empty()) options.credentials_file = worker_credentials_path(config.state_dir, host);
    try {
      auto client = std::make_shared<registry::RegistryClient>(std::move(options));
      const std::string name = host;
      auto resolver = [this, name](std::string_view id) -> std::optional<registry::RegistrySource> {
        auto b = lookup(id);
        if (!b || b->registry != name) return std::nullopt;
        return registry::RegistrySource{{b->repository, b->digest}, b->size.value_or(0)};
      };
      registries_.emplace(host, std::make_shared<registry::RegistryBackend>(std::move(client), std::move(resolver),
                                                                            timeout_));
    } catch (const std::exception& e) {
      spdlog::error("registry {}: unusable, reads of its bindings fail: {}", host, e.what());
      registry_errors_.emplace(host, e.what());
    }
  }
}

void BoundBackend::refresh_locked() {
  struct stat st {};
  Stamp now;
  if (::stat(file_.c_str(), &st) == 0)
    now = {st.st_dev, st.st_ino, st.st_size,
           static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
  if (now == stamp_) return;
  auto loaded = load_bindings_file(file_);
  if (auto* error = std::get_if<std::string>(&loaded)) {
    // Keep what we had: the supervisor writes the file atomically, so this
    // is damage from outside, not a half-written update.
    if (*error != last_error_) spdlog::error("blob bindings not updated: {}", *error);
    last_error_ = *error;
    return;
  }
  last_error_.clear();
  bindings_ = std::move(std::get<Bindings>(loaded));
  stamp_ = now;
}

std::optional<Binding> BoundBackend::lookup(std::string_view id) {
  std::lock_guard lock(mutex_);
  refresh_locked();
  auto it = bindings_.find(id);
  if (it == bindings_.end()) return std::nullopt;
  return it->second;
}

worker::OpenResult BoundBackend::open(const proto::BlobRef& ref, worker::Deadline deadline) {
  auto b = lookup(ref.blob_id);
  if (!b) return fallback_->open(ref, deadline);
  const auto what = fmt::format("blob id {} (registry={} repository={})", worker::escape_id(ref.blob_id),
                                b->registry, b->repository);
  auto it = registries_.find(b->registry);
  if (it == registries_.end()) {
    auto e = registry_errors_.find(b->registry);
    const auto message = e != registry_errors_.end()
                             ? fmt::format("binding \"{}\": registry {} unusable: {}", ref.blob_id, b->registry, e->second)
                             : fmt::format("binding \"{}\": registry {} is not in the config key registries",
                                           ref.blob_id, b->registry);
    spdlog::error("{}", message);
    return {nullptr, BackendError{BackendError::Kind::IO, EIO, message}};
  }
  auto opened = it->second->open(ref, deadline);
  if (opened.error) {
    opened.error->message = fmt::format("binding \"{}\": {}", ref.blob_id, opened.error->message);
    spdlog::error("{}: open failed: {}", what, opened.error->message);
    return opened;
  }
  return {verifying_blob(std::move(opened.blob), b->digest, what), std::nullopt};
}

std::string BoundBackend::describe() const {
  std::string regs;
  for (const auto& [host, _] : registries_) regs += (regs.empty() ? "" : ",") + host;
  return fmt::format("bindings({}) over {} (registries: {})", file_.string(), fallback_->describe(),
                     regs.empty() ? "none" : regs);
}

}  // namespace ondemand::bindings
