// The blob bindings the supervisor owns (backends/bindings/bindings.h):
// <data_dir>/bindings.json, the operator's record of which blob id is which
// registry blob, and the copies a worker reads in state_dir (the bindings,
// and its own copy of each registry's credentials file). `ondemandctl bind`
// and `unbind` change it; nothing here touches a worker process.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "backends/bindings/bindings.h"
#include "config/config.h"
#include "proto/control.h"

namespace ondemand::supervisor {

class BindingStore {
 public:
  // `worker`: the user workers run as (their copies are given to it);
  // none: workers run as root.
  BindingStore(std::filesystem::path data_dir, std::filesystem::path state_dir,
               std::optional<WorkerIdentity> worker);

  // Reads <data_dir>/bindings.json and publishes the worker's copies. A
  // torn or corrupt file is never silently replaced by an empty one: throws
  // ConfigError, and the operator decides. No data_dir: nothing to do.
  void load(const Config& config);
  // Copies each registry's credentials_file for the worker; "" or an error
  // naming the config key.
  std::string publish_credentials(const Config& config) const;

  proto::ControlReply bind(const proto::control::Bind& request, const Config& config);
  proto::ControlReply unbind(const proto::control::Unbind& request);
  proto::control::BindingsReply list() const;
  // The binding of `id`, if any.
  const bindings::Binding* find(std::string_view id) const {
    auto it = bindings_.find(id);
    return it == bindings_.end() ? nullptr : &it->second;
  }

 private:
  std::string publish() const;
  std::filesystem::path file() const { return data_dir_ / bindings::BINDINGS_FILE_NAME; }

  std::filesystem::path data_dir_;
  std::filesystem::path state_dir_;
  std::optional<WorkerIdentity> worker_;
  bindings::Bindings bindings_;
};

}  // namespace ondemand::supervisor
