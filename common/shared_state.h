// Maps proto::SharedState (Boost.Interprocess POSIX shared memory).
// The supervisor creates it; workers and ondemandctl attach and check the
// {magic, version, size} header before trusting a single field.
#pragma once

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "proto/shm_layout.h"

namespace ondemand {

struct SharedStateError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class SharedStateMapping {
 public:
  // Replaces any segment `name` ("ondemand-<tag>") with a fresh, zeroed one:
  // unlinks it, then creates exclusively (O_EXCL, 0600). Only for a caller
  // that knows no process maps the old one; the supervisor uses
  // open_or_create.
  static SharedStateMapping create(const std::string& name);
  // Attaches to an existing segment (a supervisor adopting a running worker
  // keeps the counters), or creates it exclusively, 0600, when absent. A
  // segment that fails the checks of attach() is an error, never re-created.
  static SharedStateMapping open_or_create(const std::string& name);
  // Attaches read-write to an existing segment. Throws SharedStateError
  // naming the path and the problem when it is missing, is not owned by our
  // euid, has group/other permission bits, or has a wrong header (magic,
  // incompatible version, a layout older than ours: see shm_layout.h).
  static SharedStateMapping attach(const std::string& name);
  // Maps an inherited fd of segment `name` (a worker that may not open it by
  // name: common/sandbox.h) after the same header checks; the fd may be
  // closed afterwards.
  static SharedStateMapping attach_fd(int fd, const std::string& name);
  static void remove(const std::string& name);

  SharedStateMapping(SharedStateMapping&&) noexcept;
  SharedStateMapping& operator=(SharedStateMapping&&) noexcept;
  ~SharedStateMapping();

  proto::SharedState& state() const { return *state_; }
  const std::string& name() const { return name_; }

 private:
  struct Impl;
  SharedStateMapping(std::unique_ptr<Impl> impl, std::string name);
  static SharedStateMapping create_exclusive(const std::string& name);
  static std::optional<SharedStateMapping> open_existing(const std::string& name);  // nullopt: missing
  std::unique_ptr<Impl> impl_;
  proto::SharedState* state_ = nullptr;
  std::string name_;
};

// The counters as a JSON object, one member per counter: the single list
// that `ondemandctl status` and the test tools print.
nlohmann::json counters_json(const proto::WorkerCounters& counters);

// The segment name for a cache tag: one supervisor per tag.
std::string shm_name_for_tag(const std::string& tag);

// Checks a mapped header; returns an error text or empty. Pure, unit-tested.
// Accepts a layout at least as large as ours with our magic and version.
std::string check_header(const void* mapping, std::size_t mapped_size);

}  // namespace ondemand
