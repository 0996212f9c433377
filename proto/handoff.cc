#include "proto/handoff.h"

#include <algorithm>

namespace ondemand::proto {

std::variant<DecodedMessage, DecodeError> decode_message(std::string_view bytes) {
  if (bytes.size() > MAX_MESSAGE_BYTES) return DecodeError{"message too large"};
  auto body = nlohmann::json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return DecodeError{"not JSON"};
  if (!body.is_object()) return DecodeError{"not a JSON object"};
  auto type = body.find("type");
  if (type == body.end() || !type->is_string()) return DecodeError{"missing string \"type\""};
  DecodedMessage msg;
  msg.type = type->get<std::string>();
  if (auto fds = body.find("fds"); fds != body.end()) {
    if (!fds->is_number_unsigned() || fds->get<std::uint64_t>() > MAX_FDS_PER_MESSAGE)
      return DecodeError{"\"fds\" is not a count between 0 and 253"};
    msg.announced_fds = fds->get<std::size_t>();
  }
  msg.body = std::move(body);
  return msg;
}

std::string encode_message(const nlohmann::json& body) { return body.dump(); }

nlohmann::json make_hello(std::string_view role, std::int64_t pid) {
  return {{"type", "hello"},
          {"role", role},
          {"proto_min", HANDOFF_PROTO_MIN},
          {"proto_max", HANDOFF_PROTO_MAX},
          {"version", VERSION},
          {"pid", pid}};
}

nlohmann::json make_unrecognized(std::string_view what) {
  return {{"type", "unrecognized"}, {"what", what}};
}

std::optional<std::uint32_t> negotiate(std::uint32_t our_min, std::uint32_t our_max,
                                       std::uint32_t peer_min, std::uint32_t peer_max) {
  const auto lo = std::max(our_min, peer_min);
  const auto hi = std::min(our_max, peer_max);
  if (lo > hi) return std::nullopt;
  return hi;
}

}  // namespace ondemand::proto
