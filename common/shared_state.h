// Maps proto::SharedState (Boost.Interprocess POSIX shared memory).
// The supervisor creates it; workers and ondemandctl attach and check the
// {magic, version, size} header before trusting a single field.
#pragma once

#include <memory>
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
  // Creates (or re-creates and zeroes) the segment `name` ("ondemand-<tag>").
  static SharedStateMapping create(const std::string& name);
  // Attaches to an existing segment, or creates it when absent (a supervisor
  // adopting a running worker keeps the counters). Checks the header.
  static SharedStateMapping open_or_create(const std::string& name);
  // Attaches read-write to an existing segment; throws SharedStateError
  // naming the mismatch when the header is wrong.
  static SharedStateMapping attach(const std::string& name);
  static void remove(const std::string& name);

  SharedStateMapping(SharedStateMapping&&) noexcept;
  SharedStateMapping& operator=(SharedStateMapping&&) noexcept;
  ~SharedStateMapping();

  proto::SharedState& state() const { return *state_; }
  const std::string& name() const { return name_; }

 private:
  struct Impl;
  SharedStateMapping(std::unique_ptr<Impl> impl, std::string name);
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
std::string check_header(const void* mapping, std::size_t mapped_size);

}  // namespace ondemand
