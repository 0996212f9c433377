#include "worker/worker.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <optional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "common/fd_passing.h"
#include "common/shared_state.h"
#include "common/sys.h"
#include "worker/backends/local.h"
#include "worker/cachefiles_device.h"
#include "worker/engine.h"

namespace ondemand::worker {
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

constexpr auto HANDSHAKE_TIMEOUT = 10s;
constexpr auto HEARTBEAT_PERIOD = 100ms;
constexpr auto DRAIN_LIMIT = 10s;

struct Handoff {
  UniqueFd device;
  std::uint64_t generation = 0;
  std::string shm_name;
  bool restore = true;
};

Handoff handshake(int channel) {
  send_json(channel, proto::make_hello("worker", ::getpid()));
  auto hello = receive_message(channel, HANDSHAKE_TIMEOUT);
  if (hello.message.type != "hello")
    throw ChannelError("expected hello, got \"" + hello.message.type + "\"");
  const auto& h = hello.message.body;
  auto version = proto::negotiate(proto::HANDOFF_PROTO_MIN, proto::HANDOFF_PROTO_MAX,
                                  h.value("proto_min", 0u), h.value("proto_max", 0u));
  if (!version) throw ChannelError("no common handoff protocol version with the supervisor");
  spdlog::info("supervisor {} speaks handoff protocol {}..{}; using {}",
               h.value("version", std::string("?")), h.value("proto_min", 0u),
               h.value("proto_max", 0u), *version);

  auto device = receive_message(channel, HANDSHAKE_TIMEOUT);
  if (device.message.type != "device" || device.fds.size() != 1)
    throw ChannelError("expected \"device\" with one fd, got \"" + device.message.type + "\"");
  const auto& d = device.message.body;
  Handoff out;
  out.device = std::move(device.fds[0]);
  out.generation = d.value("generation", std::uint64_t{0});
  out.shm_name = d.value("shm", std::string());
  out.restore = d.value("restore", true);

  struct stat st{};
  if (::fstat(out.device.get(), &st) < 0)
    throw ChannelError("fstat on the received device fd: " + sys::errno_name(errno));
  const auto expected_rdev = d.value("rdev", std::uint64_t{0});
  if (!S_ISCHR(st.st_mode) || st.st_rdev != expected_rdev)
    throw ChannelError("received fd is not the announced /dev/cachefiles character device");
  return out;
}

}  // namespace

Worker::Worker(Config config, UniqueFd channel)
    : config_(std::move(config)), channel_(std::move(channel)) {}

proto::ExitCode Worker::run() {
  Handoff handoff;
  try {
    handoff = handshake(channel_.get());
  } catch (const ChannelError& e) {
    spdlog::error("handoff from the supervisor failed: {}", e.what());
    return proto::ExitCode::HANDOFF_FAILED;
  }

  std::optional<SharedStateMapping> shm;
  proto::SharedState local_state{};
  proto::SharedState* state = &local_state;
  if (!handoff.shm_name.empty()) {
    try {
      shm.emplace(SharedStateMapping::attach(handoff.shm_name));
      state = &shm->state();
    } catch (const SharedStateError& e) {
      spdlog::error("{}", e.what());
      return proto::ExitCode::HANDOFF_FAILED;
    }
  }
  auto& counters = state->counters;
  // Per-generation values: a dead predecessor's in-flight requests were
  // re-queued by the kernel, not finished, so its gauge must not carry over.
  counters.first_reply_ns.store(0);
  counters.inflight.store(0);

  std::unique_ptr<Backend> backend;
  try {
    backend = std::make_unique<LocalBackend>(config_.blob_dir);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return proto::ExitCode::CONFIG;
  }

  asio::io_context loop(1);
  EngineOptions options;
  options.max_inflight = config_.max_inflight;
  options.io_threads = config_.io_threads;
  options.fill_window = config_.fill_window;
  options.prefetch = config_.prefetch;
  CachefilesDevice device(loop, std::move(handoff.device), counters);
  Engine engine(loop, *backend, device, options, counters);

  if (handoff.restore) {
    if (int err = device.restore()) {
      spdlog::error("writing restore failed: {}", sys::errno_name(err));
      return proto::ExitCode::DEVICE_LOST;
    }
    counters.restores.fetch_add(1, std::memory_order_relaxed);
  }
  spdlog::info("generation {} serving with backend {} (restore={}, max_inflight={}, io_threads={}, fill_window={})",
               handoff.generation, backend->describe(), handoff.restore, options.max_inflight,
               options.io_threads, options.fill_window);

  // Graceful stop: stop reading, answer what was read, then leave. Requests
  // still queued in the kernel wait for the next worker.
  bool stopping = false;
  asio::steady_timer drain_deadline(loop);
  auto stop = [&](std::string_view why) {
    if (stopping) return;
    stopping = true;
    spdlog::info("stopping ({}): {} requests in flight", why, engine.inflight());
    device.stop_reading();
    drain_deadline.expires_after(DRAIN_LIMIT);
    drain_deadline.async_wait([&](boost::system::error_code ec) {
      if (ec) return;
      spdlog::warn("{} requests still in flight after {}s; leaving them to the next worker",
                   engine.inflight(), DRAIN_LIMIT.count());
      loop.stop();
    });
    if (engine.inflight() == 0) loop.stop();
  };
  engine.on_request_done([&] {
    device.on_capacity();
    if (stopping && engine.inflight() == 0) loop.stop();
  });
  device.start(engine);

  asio::signal_set signals(loop, SIGTERM, SIGINT);
  signals.async_wait([&](boost::system::error_code ec, int signo) {
    if (!ec) stop(signo == SIGTERM ? "SIGTERM" : "SIGINT");
  });

  asio::steady_timer heartbeat(loop);
  std::function<void()> beat = [&] {
    state->heartbeat_ns.store(monotonic_ns(), std::memory_order_relaxed);
    state->oldest_request_ns.store(engine.oldest_request_ns(), std::memory_order_relaxed);
    heartbeat.expires_after(HEARTBEAT_PERIOD);
    heartbeat.async_wait([&](boost::system::error_code ec) {
      if (!ec) beat();
    });
  };
  beat();

  // The channel: "stop" asks for a graceful stop; EOF means the supervisor
  // died, which is no reason to stop serving.
  ::fcntl(channel_.get(), F_SETFL, ::fcntl(channel_.get(), F_GETFL) | O_NONBLOCK);
  asio::posix::stream_descriptor channel(loop, ::dup(channel_.get()));
  std::function<void()> watch_channel = [&] {
    channel.async_wait(asio::posix::stream_descriptor::wait_read, [&](boost::system::error_code ec) {
      if (ec) return;
      auto received = recv_message(channel.native_handle(), proto::MAX_MESSAGE_BYTES,
                                   proto::MAX_FDS_PER_MESSAGE);
      if (received.err == EAGAIN) return watch_channel();
      if (received.peer_closed() || received.err) {
        spdlog::warn("supervisor channel closed ({}); serving on without a supervisor",
                     received.err ? sys::errno_name(received.err) : "EOF");
        return;
      }
      auto decoded = proto::decode_message(received.bytes);
      if (auto* msg = std::get_if<proto::DecodedMessage>(&decoded); msg && msg->type == "stop") {
        stop("asked by the supervisor");
      } else {
        const std::string what = msg ? msg->type : std::get<proto::DecodeError>(decoded).what;
        spdlog::warn("unrecognized message from the supervisor: {}", what);
        try {
          send_json(channel.native_handle(), proto::make_unrecognized(what));
        } catch (const ChannelError&) {
        }
      }
      watch_channel();
    });
  };
  watch_channel();

  state->serving_generation.store(handoff.generation);
  try {
    send_json(channel_.get(), {{"type", "serving"}, {"generation", handoff.generation}});
  } catch (const ChannelError& e) {
    spdlog::warn("could not tell the supervisor we serve: {}", e.what());
  }

  loop.run();
  engine.join();
  spdlog::info("stopped: served {} opens, {} reads, {} bytes written in all generations",
               counters.opens.load(), counters.reads.load(), counters.bytes_written.load());
  return proto::ExitCode::OK;
}

}  // namespace ondemand::worker
