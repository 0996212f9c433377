// Blocking helpers for the handoff channel (proto/handoff.h) used during
// startup handshakes, each bounded by a deadline.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/unique_fd.h"
#include "proto/handoff.h"

namespace ondemand {

struct ChannelMessage {
  proto::DecodedMessage message;
  std::vector<UniqueFd> fds;
};

struct ChannelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Waits up to `timeout` for one message; throws ChannelError on timeout,
// peer close, transport error, undecodable message or an fd count differing
// from the one announced.
ChannelMessage receive_message(int sock, std::chrono::milliseconds timeout);

// Throws ChannelError on failure.
void send_json(int sock, const nlohmann::json& body, std::span<const int> fds = {});

}  // namespace ondemand
