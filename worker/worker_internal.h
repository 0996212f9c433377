// What the files of class Worker (worker.h) share, and nothing else
// includes.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "proto/channel.h"

namespace ondemand::worker {

using namespace std::chrono_literals;

// How long a peer (successor, predecessor, adopting supervisor) may take
// for each message of a conversation.
inline constexpr auto PEER_TIMEOUT = 5s;
// How soon a supervisor we answered "busy" should ask again.
inline constexpr std::uint64_t BUSY_RETRY_MS = 100;

inline std::uint32_t negotiate_or_throw(const proto::msg::Hello& hello, std::string_view peer) {
  auto version =
      proto::negotiate(proto::HANDOFF_PROTO_MIN, proto::HANDOFF_PROTO_MAX, hello.proto_min, hello.proto_max);
  if (!version)
    throw ChannelError(fmt::format("no common handoff protocol version with the {} ({}..{}, we speak {}..{})",
                                   peer, hello.proto_min, hello.proto_max, proto::HANDOFF_PROTO_MIN,
                                   proto::HANDOFF_PROTO_MAX));
  spdlog::info("{} {} speaks handoff protocol {}..{}; using {}", peer, hello.version, hello.proto_min,
               hello.proto_max, *version);
  return *version;
}

// The message `m` as T, or a ChannelError naming what came instead.
template <class T>
const T& expect(const ChannelMessage& m, std::string_view wanted) {
  if (const auto* v = std::get_if<T>(&m.message)) return *v;
  throw ChannelError(fmt::format("expected \"{}\", got \"{}\"", wanted, proto::type_of(m.message)));
}

}  // namespace ondemand::worker
