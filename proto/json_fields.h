// Typed fields of one JSON object, read without throwing: each reader leaves
// its output untouched and records the first problem ("<what>: field
// \"<key>\" <why>"), after which every later read is a no-op. The channel
// (channel.cc) and control (control.cc) decoders read every message body
// through this, and add their own composite fields by subclassing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace ondemand::proto {

class JsonFields {
 public:
  // `what` names the object in errors: "\"hello\"", "status reply".
  JsonFields(const nlohmann::json& body, std::string what) : body_(body), what_(std::move(what)) {}

  void u64(const char* key, std::uint64_t& out);
  void u32(const char* key, std::uint32_t& out);
  void i64(const char* key, std::int64_t& out);
  void real(const char* key, double& out);
  void str(const char* key, std::string& out);
  void boolean(const char* key, bool& out);
  // Absent or null: left as nullopt.
  void optional_u64(const char* key, std::optional<std::uint64_t>& out);
  void optional_real(const char* key, std::optional<double>& out);

  const std::string& error() const { return error_; }
  void fail(std::string_view key, std::string_view why);

 protected:
  // The value of `key`, or nullptr (with "missing" recorded) when absent or
  // after an earlier problem.
  const nlohmann::json* find(const char* key);
  // The value of `key` when present and not null, else nullptr; nothing
  // recorded.
  const nlohmann::json* find_optional(const char* key);
  bool unsigned_field(const char* key, std::uint64_t& out, std::uint64_t max);
  const nlohmann::json& body() const { return body_; }
  const std::string& what() const { return what_; }
  // Takes the first problem of a nested reader.
  void adopt_error(const JsonFields& inner) {
    if (error_.empty()) error_ = inner.error();
  }

 private:
  const nlohmann::json& body_;
  std::string what_;
  std::string error_;
};

}  // namespace ondemand::proto
