// A worker's start (handshake, restore, serving), its channel to the
// supervisor, and its stop. The upgrade handover is in handover.cc, the
// adoption by a new supervisor in adoption.cc.
#include "worker/worker.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "common/fd_passing.h"
#include "common/serving_lock.h"
#include "common/sys.h"
#include "common/unix_socket.h"
#include "common/watch_fd.h"
#include "worker/make_backend.h"
#include "worker/sandbox.h"
#include "worker/worker_internal.h"

namespace ondemand::worker {
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {
constexpr auto HANDSHAKE_TIMEOUT = 10s;
constexpr auto HEARTBEAT_PERIOD = 100ms;
constexpr auto DRAIN_LIMIT = 10s;
constexpr auto SERVING_LOCK_WAIT = 5000ms;
constexpr auto SERVING_LOCK_RETRY = 10ms;
}  // namespace

Worker::Worker(Config config, UniqueFd channel)
    : config_(std::move(config)), channel_(std::move(channel)) {}

Worker::~Worker() = default;  // adoption_ removes our socket if it is still ours

Worker::Handoff Worker::handshake() {
  send(channel_.get(), proto::make_hello("worker", ::getpid()));
  auto hello = receive_message(channel_.get(), HANDSHAKE_TIMEOUT);
  negotiate_or_throw(expect<proto::msg::Hello>(hello, "hello"), "supervisor");

  auto device = receive_message(channel_.get(), HANDSHAKE_TIMEOUT);
  const auto& d = expect<proto::msg::Device>(device, "device");
  Handoff out;
  out.device = std::move(device.fds[0]);  // decode() checked there is exactly one
  out.generation = d.generation;
  out.rdev = d.rdev;
  out.shm_name = d.shm;
  out.restore = d.restore;
  out.standby = d.standby;
  out.spare = d.spare;

  struct stat st{};
  if (::fstat(out.device.get(), &st) < 0)
    throw ChannelError("fstat on the received device fd: " + sys::errno_name(errno));
  if (!S_ISCHR(st.st_mode) || st.st_rdev != out.rdev)
    throw ChannelError("received fd is not the announced /dev/cachefiles character device");
  return out;
}

proto::ExitCode Worker::run() {
  Handoff handoff;
  try {
    handoff = handshake();
  } catch (const ChannelError& e) {
    spdlog::error("handoff from the supervisor failed: {}", e.what());
    return proto::ExitCode::HANDOFF_FAILED;
  }
  generation_ = handoff.generation;
  rdev_ = handoff.rdev;

  if (!handoff.shm_name.empty()) {
    try {
      shm_.emplace(attach_worker_shm(handoff.shm_name));
      state_ = &shm_->state();
    } catch (const SharedStateError& e) {
      spdlog::error("{}", e.what());
      return proto::ExitCode::HANDOFF_FAILED;
    }
  }
  try {
    backend_ = make_backend(config_);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return proto::ExitCode::CONFIG;
  }
  // Everything from outside is open now (device, shared memory, blob_dir),
  // no thread exists yet and no kernel message was read: lock ourselves in.
  lock_down(config_);

  // Kernel interface, engine, front end: the front end owns the requests'
  // semantics, the engine the backend work.
  device_ = std::make_unique<CachefilesDevice>(loop_, std::move(handoff.device), state_->counters);
  device_->on_fatal([this](int) {
    exit_code_ = proto::ExitCode::DEVICE_READ_FAILING;
    stop("read() on the device keeps failing");
  });
  engine_ = std::make_unique<Engine>(
      loop_, *backend_,
      EngineOptions{.io_threads = config_.io_threads, .prefetch_window = config_.fill_window, .fill_counters = &state_->fill},
      state_->counters, state_->worker_metrics);
  frontend_ = std::make_unique<CachefilesFrontend>(
      loop_, *engine_, *device_,
      CachefilesOptions{.max_inflight = config_.max_inflight,
                        .fill_window = config_.fill_window,
                        .fill_window_min = config_.fill_window_min ? config_.fill_window_min
                                                                   : config_.fill_window,
                        .fill_ahead_windows = config_.fill_ahead_windows,
                        .prefetch = config_.prefetch,
                        .request_deadline = request_deadline_for(config_.request_timeout_ms),
                        .max_open_objects = config_.max_open_objects,
                        .budget_counters = &state_->budget},
      state_->counters, state_->worker_metrics, device_.get());
  frontend_->on_request_done([this] { on_request_done(); });
  cull_commands_ = std::make_unique<DeviceCullCommands>(device_->fd(), config_.tag);
  culler_ = std::make_unique<Culler>(
      loop_, *cull_commands_,
      CullerOptions{config_.cache_dir.string(), config_.cache_cull && culling_possible(config_), {config_.cache_max_bytes, config_.cache_low_watermark}},
      state_->counters);
  culler_->on_dead([this] {
    exit_code_ = proto::ExitCode::CACHE_DEAD;
    stop("the cache is dead");
  });

  signals_.add(SIGTERM);
  signals_.add(SIGINT);
  signals_.async_wait([this](boost::system::error_code ec, int signo) {
    if (!ec) stop(signo == SIGTERM ? "SIGTERM" : "SIGINT");
  });
  (void)sys::set_nonblocking(channel_.get());
  watch_channel();
  heartbeat();

  spare_ = handoff.spare;
  if (handoff.standby) {
    spdlog::info("generation {} in standby {}: holding the device, not reading it", generation_,
                 spare_ ? "as a spare for the next failover" : "for an upgrade");
  } else {
    start_reading(handoff.restore);
  }
  loop_.run();
  engine_->join();  // before the front end goes: pool jobs call back into it
  spdlog::info("stopped: {} opens, {} reads, {} bytes written so far in all generations",
               state_->counters.opens.load(), state_->counters.reads.load(),
               state_->counters.bytes_written.load());
  return exit_code_;
}

void Worker::start_reading(bool restore) {
  // Never a second reader of the device: an upgrade's predecessor frees the
  // lock when it exits, just after handing over, hence the bounded retry
  // (on a timer: the loop keeps answering the supervisor meanwhile).
  if (!serving_lock_) {
    auto lock = take_serving_lock(config_.state_dir);
    if (!lock.held()) {
      if (serving_lock_tries_++ * SERVING_LOCK_RETRY < SERVING_LOCK_WAIT) {
        serving_lock_retry_.expires_after(SERVING_LOCK_RETRY);
        serving_lock_retry_.async_wait([this, restore](boost::system::error_code ec) {
          if (!ec && !reading_ && !stopping_) start_reading(restore);
        });
        return;
      }
      spdlog::critical("not reading the device: {}", lock.error);
      std::exit(static_cast<int>(proto::ExitCode::TEMPORARY));
    }
    serving_lock_ = std::move(lock.fd);
  }
  auto& counters = state_->counters;
  // Per-generation values: a dead predecessor's in-flight requests were
  // re-queued by the kernel, not finished, so its gauge must not carry over.
  counters.first_reply_ns.store(0);
  counters.inflight.store(frontend_->inflight());
  // Likewise the fill-ahead gauge: a killed predecessor's fills died with
  // it (ondemand-chaos reads this gauge to tell kills during fill-ahead).
  state_->fill.fill_ahead_running.store(0);
  // Before `restore`, so ondemand-chaos can split a failover's time into
  // getting a worker to this point and what it takes from here to the first
  // reply (the kernel re-sending, re-OPENs, fills).
  state_->failover.serving_ns.store(sys::monotonic_ns());
  if (restore) {
    if (int err = device_->restore()) {
      spdlog::critical("writing restore failed: {}", sys::errno_name(err));
      // cachefiles_daemon_write refuses every command on a dead cache with EIO.
      if (err == EIO && cull_commands_->probe() == EIO) {
        state_->counters.cache_dead.store(1);
        spdlog::critical("the cache in {} is DEAD (cachefiles stopped it after an I/O error on its file system): "
                         "unmount the EROFS mounts on it, stop the service, repair cache_dir's file system, start it",
                         config_.cache_dir.string());
        std::exit(static_cast<int>(proto::ExitCode::CACHE_DEAD));
      }
      std::exit(static_cast<int>(proto::ExitCode::DEVICE_LOST));
    }
    counters.restores.fetch_add(1, std::memory_order_relaxed);
  }
  counters.cache_dead.store(0);  // the device took our commands: the cache lives
  spdlog::info("generation {} serving with backend {} (restore={}, objects={}, max_inflight={}, io_threads={}, fill_window={}, fill_window_min={}, fill_ahead_windows={})",
               generation_, backend_->describe(), restore, frontend_->objects(), config_.max_inflight,
               config_.io_threads, config_.fill_window, config_.fill_window_min, config_.fill_ahead_windows);
  reading_ = true;
  reading_since_ns_ = sys::monotonic_ns();
  state_->heartbeat_ns.store(reading_since_ns_, std::memory_order_relaxed);
  // The field is per worker: a dead predecessor's stuck request must not
  // count against us. Written before "serving", because the supervisor
  // checks it from then on and our first heartbeat may come 100 ms later.
  state_->oldest_request_ns.store(frontend_->oldest_request_ns(), std::memory_order_relaxed);
  note_oldest_request();
  frontend_->start();
  culler_->start();
  listen_for_supervisor();
  report_serving();
}

void Worker::report_serving() {
  state_->serving_generation.store(generation_);
  try {
    send(channel_.get(), proto::msg::Serving{generation_});
  } catch (const ChannelError& e) {
    spdlog::warn("could not tell the supervisor we serve: {}", e.what());
  }
}

// Beside oldest_request_ns, what that request is (proto/shm_layout.h
// RequestNote): the supervisor names it when this worker dies. Rewritten
// only when it changed.
void Worker::note_oldest_request() {
  auto what = frontend_->oldest_request_what();
  if (noted_request_ && what == *noted_request_) return;  // the first call always writes: a predecessor's note
  auto& text = state_->oldest_request.text;
  const auto n = std::min(what.size(), sizeof text - 1);
  std::memcpy(text, what.data(), n);
  text[n] = '\0';
  noted_request_ = std::move(what);
}

void Worker::heartbeat() {
  // Only the worker that reads the device beats: a standby (spare or
  // upgrade successor) writing the shared fields would mask a hung server.
  if (reading_ && !handing_over_) {
    state_->heartbeat_ns.store(sys::monotonic_ns(), std::memory_order_relaxed);
    state_->oldest_request_ns.store(frontend_->oldest_request_ns(), std::memory_order_relaxed);
    note_oldest_request();
    state_->worker_metrics.open_objects.store(frontend_->objects(), std::memory_order_relaxed);
  }
  heartbeat_timer_.expires_after(HEARTBEAT_PERIOD);
  heartbeat_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) heartbeat();
  });
}

// Graceful stop: stop reading, answer what was read, then leave. Requests
// still queued in the kernel wait for the next worker.
void Worker::stop(std::string_view why) {
  if (stopping_) return;
  stopping_ = true;
  spdlog::info("stopping ({}): {} requests in flight", why, frontend_->inflight());
  frontend_->stop_reading();
  culler_->stop();
  drain_deadline_.expires_after(DRAIN_LIMIT);
  drain_deadline_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    spdlog::warn("{} requests still in flight after {} s; leaving them to the next worker",
                 frontend_->inflight(), DRAIN_LIMIT.count());
    loop_.stop();
  });
  if (frontend_->inflight() == 0) loop_.stop();
}

void Worker::on_request_done() {
  if (reading_ && !first_reply_logged_) {
    // How long the kernel's queue waited for a new server to answer: the
    // end of an upgrade's or a failover's gap, as the readers feel it.
    first_reply_logged_ = true;
    spdlog::info("first request done {:.1f} ms after reading started",
                 static_cast<double>(sys::monotonic_ns() - reading_since_ns_) / 1e6);
  }
  if (!stopping_ && !handing_over_) device_->on_capacity();
  if (frontend_->inflight() != 0) return;
  if (handing_over_) return send_objects();
  if (stopping_) loop_.stop();
}

// ---- the channel to the supervisor ----

void Worker::watch_channel() {
  channel_watch_ = std::make_unique<asio::posix::stream_descriptor>(watch_fd(loop_, channel_.get()));
  auto* watch = channel_watch_.get();
  struct Waiter {
    Worker* self;
    asio::posix::stream_descriptor* watch;
    void operator()() const {
      watch->async_wait(asio::posix::stream_descriptor::wait_read,
                        [self = self, watch = watch](boost::system::error_code ec) {
        if (ec || self->channel_watch_.get() != watch) return;
        for (;;) {
          auto received = recv_message(self->channel_.get(), proto::MAX_MESSAGE_BYTES,
                                       proto::MAX_FDS_PER_MESSAGE);
          if (received.err == EAGAIN) break;
          if (received.peer_closed() || received.err) {
            self->supervisor_gone_ = true;
            if (self->spare_ && !self->reading_) {
              // A spare exists only for its supervisor's next failover.
              spdlog::info("supervisor gone while we were its spare: exiting");
              self->stopping_ = true;
              self->loop_.stop();
              return;
            }
            spdlog::warn("supervisor channel closed ({}); serving on, a new supervisor can adopt us via {}",
                         received.err ? sys::errno_name(received.err) : "EOF", (self->adoption_ ? self->adoption_->path() : std::string("(no worker.sock)")));
            return;
          }
          auto decoded = proto::decode(received.bytes, received.fds.size());
          if (auto* msg = std::get_if<proto::Message>(&decoded)) {
            self->on_channel_message(*msg, std::move(received.fds));
          } else {
            // Wrong fields, a wrong fd count, garbage: unrecognized, never fatal.
            const auto& what = std::get<proto::DecodeError>(decoded).what;
            spdlog::warn("unrecognized message from the supervisor: {}", what);
            send_quietly(self->channel_.get(), proto::msg::Unrecognized{what});
          }
          if (self->channel_watch_.get() != watch) return;  // replaced meanwhile
        }
        Waiter{self, watch}();
      });
    }
  };
  Waiter{this, watch}();
}

void Worker::on_channel_message(const proto::Message& m, std::vector<UniqueFd> fds) {
  namespace msg = proto::msg;
  if (std::holds_alternative<msg::Stop>(m)) return stop("asked by the supervisor");
  if (const auto* handover = std::get_if<msg::Handover>(&m))
    return hand_over(std::move(fds[0]), std::chrono::milliseconds(handover->drain_ms));
  if (std::holds_alternative<msg::HandoverPeer>(m)) return receive_objects(std::move(fds[0]));
  if (const auto* takeover = std::get_if<msg::Takeover>(&m)) {
    if (reading_) return;
    if (takeover->generation) generation_ = *takeover->generation;
    spdlog::info("takeover: the previous worker is gone; restoring and serving");
    return start_reading(/*restore=*/true);
  }
  if (std::holds_alternative<msg::Resume>(m)) {
    if (greeting_) return call_off_handover("the supervisor called the upgrade off");
    if (!handing_over_) return;
    spdlog::info("upgrade called off: reading the device again");
    handing_over_ = false;
    handover_peer_.reset();
    frontend_->resume_reading();
    culler_->start();
    // A successor that got as far as listening replaced our socket at the
    // path: listen there again.
    if (!listener_at_path()) adoption_.reset();
    listen_for_supervisor();
    return;
  }
  if (const auto* unrecognized = std::get_if<msg::Unrecognized>(&m)) {
    spdlog::warn("supervisor did not recognize our message: {}", unrecognized->what);
    return;
  }
  spdlog::warn("unexpected message \"{}\" from the supervisor", proto::type_of(m));
  send_quietly(channel_.get(), msg::Unrecognized{std::string(proto::type_of(m))});
}

}  // namespace ondemand::worker
