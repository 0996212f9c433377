// Prometheus text exposition (format version 0.0.4), from a shared-state
// snapshot.
//
// Two layers, both pure (no I/O, no clock) and unit-tested:
//   - TextWriter: the format itself. One family at a time: `# HELP` and
//     `# TYPE` lines, then its samples; label values and help text escaped
//     as the format requires; histograms as cumulative `_bucket{le=...}`
//     series ending in le="+Inf", then `_sum` and `_count`.
//   - render(): walks proto::METRICS (proto/metrics.h) in order and writes
//     each metric's samples from proto::SharedState. Label names come from
//     the table; render() supplies only their values.
// Why not prometheus-cpp: see the README's metrics section.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

#include "proto/metrics.h"
#include "proto/shm_layout.h"

namespace ondemand::metrics {

inline constexpr std::string_view CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

// `\` -> `\\`, `"` -> `\"`, newline -> `\n` (label values).
std::string escape_label_value(std::string_view value);
// `\` -> `\\`, newline -> `\n` (HELP text).
std::string escape_help(std::string_view help);
// A sample value: integers exactly, "+Inf", "-Inf", "NaN", else the
// shortest decimal that reads back as the same double.
std::string format_value(double value);
std::string format_value(std::uint64_t value);

class TextWriter {
 public:
  // Starts a family: HELP and TYPE lines. Samples written until the next
  // family() belong to it and carry its label names, in table order.
  void family(const proto::MetricSpec& spec);

  // One sample of a counter or gauge; `label_values` pairs up with the
  // family's label names (same count, else the sample is dropped and
  // error() says why: a broken table, caught by the unit tests).
  void sample(std::initializer_list<std::string_view> label_values, std::uint64_t value);
  void sample(std::initializer_list<std::string_view> label_values, double value);

  // A histogram from non-cumulative bucket counts: `buckets` has one entry
  // per upper bound plus a last one for +Inf. `bounds_ns` and `sum_ns` are
  // nanoseconds; the exposition is in seconds.
  void histogram(std::span<const std::uint64_t> bounds_ns, std::span<const std::uint64_t> buckets,
                 std::uint64_t sum_ns);

  const std::string& text() const { return out_; }
  // Empty unless a sample did not fit its family (see sample()).
  const std::string& error() const { return error_; }

 private:
  void line(std::string_view suffix, std::initializer_list<std::string_view> label_values,
            std::string_view extra_label, std::string_view extra_value, std::string_view value);

  std::string out_;
  std::string error_;
  const proto::MetricSpec* family_ = nullptr;
};

// What the supervisor adds to the shared memory.
struct RenderInfo {
  std::string_view version;
  double start_time_seconds = 0;  // Unix time
};

// Every metric of proto::METRICS, in table order. `error` (when given) gets
// TextWriter::error(): empty unless the table and render() disagree.
std::string render(const proto::SharedState& state, const RenderInfo& info, std::string* error = nullptr);

}  // namespace ondemand::metrics
