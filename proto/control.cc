#include "proto/control.h"

#include <array>

#include <fmt/format.h>

namespace ondemand::proto {

namespace {
constexpr std::array<std::string_view, 4> COMMANDS = {"status", "restart-worker", "stop", "upgrade"};
}

std::variant<ControlRequest, std::string> parse_control_request(std::string_view bytes) {
  if (bytes.size() > CONTROL_MAX_BYTES) return std::string("request too large");
  auto body = nlohmann::json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return std::string("malformed request: not JSON");
  if (!body.is_object()) return std::string("malformed request: not a JSON object");
  auto v = body.find("v");
  if (v == body.end() || !v->is_number_integer())
    return std::string("malformed request: missing integer \"v\"");
  if (v->get<std::int64_t>() != CONTROL_VERSION)
    return fmt::format("unsupported control protocol version {} (supervisor speaks {})",
                       v->get<std::int64_t>(), CONTROL_VERSION);
  auto cmd = body.find("cmd");
  if (cmd == body.end() || !cmd->is_string())
    return std::string("malformed request: missing string \"cmd\"");
  auto name = cmd->get<std::string>();
  bool known = false;
  for (auto c : COMMANDS) known = known || c == name;
  if (!known) {
    std::string shown = name.substr(0, 64);
    for (auto& ch : shown)
      if (ch < 0x20 || ch > 0x7e) ch = '?';
    return fmt::format("unrecognized command \"{}\"", shown);
  }
  return ControlRequest{std::move(name), std::move(body)};
}

nlohmann::json control_ok(nlohmann::json fields) {
  fields["v"] = CONTROL_VERSION;
  fields["ok"] = true;
  return fields;
}

nlohmann::json control_error(std::string_view message) {
  return {{"v", CONTROL_VERSION}, {"ok", false}, {"error", message}};
}

}  // namespace ondemand::proto
