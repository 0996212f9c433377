#include "proto/json_fields.h"

#include <limits>

#include <fmt/format.h>

namespace ondemand::proto {

using nlohmann::json;

void JsonFields::fail(std::string_view key, std::string_view why) {
  if (error_.empty()) error_ = fmt::format("{}: field \"{}\" {}", what_, key, why);
}

const json* JsonFields::find(const char* key) {
  if (!error_.empty()) return nullptr;
  auto it = body_.find(key);
  if (it == body_.end()) {
    fail(key, "missing");
    return nullptr;
  }
  return &*it;
}

const json* JsonFields::find_optional(const char* key) {
  if (!error_.empty()) return nullptr;
  auto it = body_.find(key);
  if (it == body_.end() || it->is_null()) return nullptr;
  return &*it;
}

bool JsonFields::unsigned_field(const char* key, std::uint64_t& out, std::uint64_t max) {
  const json* v = find(key);
  if (!v) return false;
  if (!v->is_number_unsigned()) {
    fail(key, v->is_number_integer() ? "negative" : "not an unsigned integer");
    return false;
  }
  if (v->get<std::uint64_t>() > max) {
    fail(key, "out of range");
    return false;
  }
  out = v->get<std::uint64_t>();
  return true;
}

void JsonFields::u64(const char* key, std::uint64_t& out) {
  unsigned_field(key, out, std::numeric_limits<std::uint64_t>::max());
}

void JsonFields::u32(const char* key, std::uint32_t& out) {
  std::uint64_t v = 0;
  if (unsigned_field(key, v, std::numeric_limits<std::uint32_t>::max())) out = static_cast<std::uint32_t>(v);
}

void JsonFields::i64(const char* key, std::int64_t& out) {
  const json* v = find(key);
  if (!v) return;
  if (v->is_number_unsigned() && v->get<std::uint64_t>() > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
    return fail(key, "out of range");
  if (!v->is_number_integer()) return fail(key, "not an integer");
  out = v->get<std::int64_t>();
}

void JsonFields::real(const char* key, double& out) {
  const json* v = find(key);
  if (!v) return;
  if (!v->is_number()) return fail(key, "not a number");
  out = v->get<double>();
}

void JsonFields::str(const char* key, std::string& out) {
  const json* v = find(key);
  if (!v) return;
  if (!v->is_string()) return fail(key, "not a string");
  out = v->get<std::string>();
}

void JsonFields::boolean(const char* key, bool& out) {
  const json* v = find(key);
  if (!v) return;
  if (!v->is_boolean()) return fail(key, "not a boolean");
  out = v->get<bool>();
}

void JsonFields::optional_u64(const char* key, std::optional<std::uint64_t>& out) {
  const json* v = find_optional(key);
  if (!v) return;
  if (!v->is_number_unsigned()) return fail(key, "not an unsigned integer or null");
  out = v->get<std::uint64_t>();
}

void JsonFields::optional_real(const char* key, std::optional<double>& out) {
  const json* v = find_optional(key);
  if (!v) return;
  if (!v->is_number()) return fail(key, "not a number or null");
  out = v->get<double>();
}

}  // namespace ondemand::proto
