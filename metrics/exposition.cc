#include "metrics/exposition.h"

#include <cmath>
#include <vector>

#include <fmt/format.h>

namespace ondemand::metrics {
namespace {

const char* type_name(proto::MetricType type) {
  switch (type) {
    case proto::MetricType::COUNTER: return "counter";
    case proto::MetricType::GAUGE: return "gauge";
    case proto::MetricType::HISTOGRAM: return "histogram";
  }
  return "untyped";
}

std::vector<std::string_view> split_labels(std::string_view names) {
  std::vector<std::string_view> out;
  while (!names.empty()) {
    const auto comma = names.find(',');
    out.push_back(names.substr(0, comma));
    if (comma == std::string_view::npos) break;
    names.remove_prefix(comma + 1);
  }
  return out;
}

// Bounds in seconds for `le`: a bound is an exact count of nanoseconds, so
// ns / 1e9 prints as the short decimal it was written as (2.5, 0.00025).
std::string seconds_text(std::uint64_t ns) { return format_value(static_cast<double>(ns) / 1e9); }

}  // namespace

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string escape_help(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Integral values below 2^53 print without an exponent or a fraction.
  if (value == std::floor(value) && std::fabs(value) < 9007199254740992.0)
    return fmt::format("{}", static_cast<std::int64_t>(value));
  return fmt::format("{}", value);  // shortest round-trip representation
}

std::string format_value(std::uint64_t value) { return fmt::format("{}", value); }

void TextWriter::family(const proto::MetricSpec& spec) {
  family_ = &spec;
  out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", spec.name, escape_help(spec.help), spec.name,
                      type_name(spec.type));
}

void TextWriter::line(std::string_view suffix, std::initializer_list<std::string_view> label_values,
                      std::string_view extra_label, std::string_view extra_value, std::string_view value) {
  if (!family_) {
    if (error_.empty()) error_ = "sample before any family";
    return;
  }
  const auto names = split_labels(family_->labels);
  if (names.size() != label_values.size()) {
    if (error_.empty())
      error_ = fmt::format("{}: {} label values for {} label names \"{}\"", family_->name, label_values.size(),
                           names.size(), family_->labels);
    return;
  }
  std::string labels;
  auto value_it = label_values.begin();
  for (const auto& name : names) {
    labels += fmt::format("{}{}=\"{}\"", labels.empty() ? "" : ",", name, escape_label_value(*value_it++));
  }
  if (!extra_label.empty())
    labels += fmt::format("{}{}=\"{}\"", labels.empty() ? "" : ",", extra_label, escape_label_value(extra_value));
  out_ += family_->name;
  out_ += suffix;
  if (!labels.empty()) out_ += fmt::format("{{{}}}", labels);
  out_ += ' ';
  out_ += value;
  out_ += '\n';
}

void TextWriter::sample(std::initializer_list<std::string_view> label_values, std::uint64_t value) {
  line("", label_values, {}, {}, format_value(value));
}

void TextWriter::sample(std::initializer_list<std::string_view> label_values, double value) {
  line("", label_values, {}, {}, format_value(value));
}

void TextWriter::histogram(std::span<const std::uint64_t> bounds_ns, std::span<const std::uint64_t> buckets,
                           std::uint64_t sum_ns) {
  if (buckets.size() != bounds_ns.size() + 1) {
    if (error_.empty())
      error_ = fmt::format("{}: {} buckets for {} bounds", family_ ? family_->name : "?", buckets.size(),
                           bounds_ns.size());
    return;
  }
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < bounds_ns.size(); ++i) {
    cumulative += buckets[i];
    line("_bucket", {}, "le", seconds_text(bounds_ns[i]), format_value(cumulative));
  }
  cumulative += buckets.back();
  line("_bucket", {}, "le", "+Inf", format_value(cumulative));
  line("_sum", {}, {}, {}, format_value(static_cast<double>(sum_ns) / 1e9));
  line("_count", {}, {}, {}, format_value(cumulative));
}

}  // namespace ondemand::metrics
