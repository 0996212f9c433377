// The fanotify front end's worker process; see fanotify_worker.h.
#include "worker/fanotify_worker.h"

#include <sys/stat.h>
#include <unistd.h>

#include <csignal>

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "common/fd_passing.h"
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
constexpr auto HEARTBEAT_PERIOD = std::chrono::milliseconds(HEARTBEAT_PERIOD_MS);
}  // namespace

FanotifyWorker::FanotifyWorker(Config config, UniqueFd channel)
    : config_(std::move(config)), channel_(std::move(channel)) {}

FanotifyWorker::~FanotifyWorker() = default;

FanotifyWorker::Handoff FanotifyWorker::handshake() {
  send(channel_.get(), proto::make_hello("worker", ::getpid()));
  auto hello = receive_message(channel_.get(), HANDSHAKE_TIMEOUT);
  negotiate_or_throw(expect<proto::msg::Hello>(hello, "hello"), "supervisor");
  Handoff out;
  for (;;) {
    auto m = receive_message(channel_.get(), HANDSHAKE_TIMEOUT);
    if (const auto* files = std::get_if<proto::msg::CacheFiles>(&m.message)) {
      for (std::size_t i = 0; i < files->files.size(); ++i) {  // decode() matched fds to entries
        out.entries.push_back(files->files[i]);
        out.writers.push_back(std::move(m.fds[i]));
      }
      continue;
    }
    out.group_msg = expect<proto::msg::FanotifyGroup>(m, "fanotify-group");
    out.group = std::move(m.fds[0]);
    out.record = std::move(m.fds[1]);
    return out;
  }
}

void FanotifyWorker::add_files(const std::vector<proto::msg::CacheFileEntry>& entries,
                               std::vector<UniqueFd> writers) {
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    const auto index = static_cast<std::uint32_t>(entries_.size());
    const auto path = (config_.cache_dir / "fanotify" / e.blob_id).string();  // for logs; never opened
    fanotify::CacheFile f;
    try {
      f = fanotify::cache_file_from_fd(index, path, std::move(writers[i]));
    } catch (const std::system_error&) {
      f.index = index;
      f.path = path;
    }
    if (!f.writer || f.size != e.size) {
      // Kept in the table (an index is a place) without a writer: the
      // engine filler cannot fill it, and its events are denied with EIO.
      spdlog::error("fanotify: the writer fd for blob {} is not a regular file of {} bytes; its reads fail with EIO",
                    e.blob_id, e.size);
      f.writer.reset();
    }
    f.size = e.size;
    entries_.push_back(e);
    files_.add(std::move(f));
    auto& added = files_.files().back();
    if (filler_) filler_->add(added, proto::BlobRef{e.domain, e.blob_id});
    if (serving_ && e.whole) fill_whole(added);
  }
}

void FanotifyWorker::fill_whole(fanotify::CacheFile& file) {
  if (fanotify::cache_file_complete(file)) return;
  spdlog::info("fanotify: filling metadata blob {} whole ({} bytes)", entries_[file.index].blob_id, file.size);
  const auto started = std::chrono::steady_clock::now();
  filler_->fill(file, 0, file.size, [this, index = file.index, started](int err) {
    asio::post(loop_, [this, index, started, err] {
      const auto& blob = entries_[index].blob_id;
      if (err)
        spdlog::error("fanotify: metadata blob {} not filled: {}; ondemandctl mount waits for it (the next "
                      "worker tries again)",
                      blob, sys::errno_name(err));
      else
        spdlog::info("fanotify: metadata blob {} complete in {:.1f} ms", blob,
                     std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
    });
  });
}

proto::ExitCode FanotifyWorker::run() {
  Handoff handoff;
  try {
    handoff = handshake();
  } catch (const ChannelError& e) {
    spdlog::error("handoff from the supervisor failed: {}", e.what());
    return proto::ExitCode::HANDOFF_FAILED;
  }
  generation_ = handoff.group_msg.generation;
  spare_ = handoff.group_msg.spare;
  try {
    if (!handoff.group_msg.shm.empty()) {
      shm_.emplace(attach_worker_shm(handoff.group_msg.shm));
      state_ = &shm_->state();
    }
    record_.emplace(fanotify::PendingRecord::attach_fd(handoff.record.get(), "the pending-event record"));
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return proto::ExitCode::HANDOFF_FAILED;
  }
  record_fd_ = std::move(handoff.record);  // mapped; kept for an adopting supervisor
  group_ = std::move(handoff.group);
  try {
    backend_ = make_backend(config_);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return proto::ExitCode::CONFIG;
  }
  lock_down(config_);

  engine_ = std::make_unique<Engine>(
      loop_, *backend_, EngineOptions{.io_threads = config_.io_threads, .prefetch_window = config_.fill_window},
      state_->counters, state_->worker_metrics);
  filler_ = std::make_unique<fanotify::EngineFiller>(
      *engine_, files_, std::vector<proto::BlobRef>{},
      fanotify::FillOptions{.window = config_.fill_window,
                            .stall_timeout = std::chrono::milliseconds(
                                config_.request_timeout_ms ? config_.request_timeout_ms : 60'000)});
  add_files(handoff.entries, std::move(handoff.writers));
  server_ = std::make_unique<fanotify::Server>(loop_, group_.get(), files_, *filler_, *record_);

  signals_.add(SIGTERM);
  signals_.add(SIGINT);
  signals_.async_wait([this](boost::system::error_code ec, int signo) {
    if (!ec) stop(signo == SIGTERM ? "SIGTERM" : "SIGINT");
  });
  (void)sys::set_nonblocking(channel_.get());
  watch_channel();
  heartbeat();
  if (handoff.group_msg.standby)
    spdlog::info("generation {} in standby {}: holding the fanotify group, not reading it", generation_,
                 spare_ ? "as a spare for the next failover" : "for an upgrade");
  else
    start_serving("started");
  loop_.run();
  server_.reset();
  engine_->join();
  spdlog::info("stopped after {} fanotify events", record_->layout().events_answered.load());
  return exit_code_;
}

void FanotifyWorker::start_serving(const char* why) {
  if (serving_ || stopping_) return;
  // Before the first read(): the dead predecessor's events first (their fd
  // numbers may repeat in ours; the kernel answers the oldest event with a
  // number). Synchronous: nothing else is read meanwhile.
  const auto report = server_->recover();
  if (report.events)
    spdlog::info("fanotify: recovered {} events of the previous worker ({} already answered, {} of unknown file, "
                 "{} denied)",
                 report.events, report.stale, report.unknown_file, report.denied);
  serving_ = true;
  state_->counters.first_reply_ns.store(0);
  state_->heartbeat_ns.store(sys::monotonic_ns(), std::memory_order_relaxed);
  state_->oldest_request_ns.store(0, std::memory_order_relaxed);
  for (auto& f : files_.files())
    if (entries_[f.index].whole) fill_whole(f);
  server_->start();
  listen_for_supervisor();
  spdlog::info("generation {} serving fanotify ({}) with backend {}: {} cache files, fill_window={}", generation_,
               why, backend_->describe(), files_.files().size(), config_.fill_window);
  state_->serving_generation.store(generation_);
  try {
    send(channel_.get(), proto::msg::Serving{generation_});
  } catch (const ChannelError& e) {
    spdlog::warn("could not tell the supervisor we serve: {}", e.what());
  }
}

void FanotifyWorker::heartbeat() {
  // The supervisor's watchdog reads this (the record has its own, written
  // by the Server on the same loop).
  if (serving_ && !stopping_) {
    state_->heartbeat_ns.store(sys::monotonic_ns(), std::memory_order_relaxed);
    state_->worker_metrics.open_objects.store(files_.files().size(), std::memory_order_relaxed);
  }
  heartbeat_timer_.expires_after(HEARTBEAT_PERIOD);
  heartbeat_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) heartbeat();
  });
}

// Graceful stop: read no more, answer every event already read, leave.
// Events still queued wait in the kernel for the next worker.
void FanotifyWorker::stop(const char* why) {
  if (stopping_) return;
  stopping_ = true;
  spdlog::info("stopping ({})", why);
  server_->hand_over([this] { loop_.stop(); });
}

void FanotifyWorker::watch_channel() {
  channel_watch_ = std::make_unique<asio::posix::stream_descriptor>(watch_fd(loop_, channel_.get()));
  channel_watch_->async_wait(asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
    if (ec) return;
    for (;;) {
      auto received = recv_message(channel_.get(), proto::MAX_MESSAGE_BYTES, proto::MAX_FDS_PER_MESSAGE);
      if (received.err == EAGAIN) break;
      if (received.peer_closed() || received.err) {
        if (spare_ && !serving_) {
          spdlog::info("supervisor gone while we were its spare: exiting");
          stopping_ = true;
          loop_.stop();
          return;
        }
        // Our references keep the group open and its readers served; the
        // next supervisor adopts us and takes them back.
        supervisor_gone_ = true;
        spdlog::warn("supervisor channel closed ({}); serving on, a new supervisor can adopt us via {}",
                     received.err ? sys::errno_name(received.err) : "EOF",
                     adoption_ ? adoption_->path() : std::string("(no worker.sock)"));
        return;
      }
      auto decoded = proto::decode(received.bytes, received.fds.size());
      if (auto* msg = std::get_if<proto::Message>(&decoded)) {
        on_channel_message(*msg, std::move(received.fds));
      } else {
        const auto& what = std::get<proto::DecodeError>(decoded).what;
        spdlog::warn("unrecognized message from the supervisor: {}", what);
        send_quietly(channel_.get(), proto::msg::Unrecognized{what});
      }
    }
    watch_channel();
  });
}

void FanotifyWorker::on_channel_message(const proto::Message& m, std::vector<UniqueFd> fds) {
  namespace msg = proto::msg;
  if (std::holds_alternative<msg::Stop>(m)) return stop("asked by the supervisor");
  if (const auto* files = std::get_if<msg::CacheFiles>(&m)) {
    add_files(files->files, std::move(fds));
    spdlog::info("fanotify: {} cache files added, {} in all", files->files.size(), files_.files().size());
    send_quietly(channel_.get(), msg::CacheFilesAdded{files_.files().size()});
    return;
  }
  if (std::holds_alternative<msg::Handover>(m)) return hand_over(std::move(fds[0]));
  if (std::holds_alternative<msg::HandoverPeer>(m)) return receive_hand_over(std::move(fds[0]));
  if (const auto* takeover = std::get_if<msg::Takeover>(&m)) {
    if (serving_) return;
    if (takeover->generation) generation_ = *takeover->generation;
    return start_serving("takeover: the previous worker is gone");
  }
  if (std::holds_alternative<msg::Resume>(m)) {
    if (server_->handing_over()) server_->resume();
    return;
  }
  if (const auto* unrecognized = std::get_if<msg::Unrecognized>(&m)) {
    spdlog::warn("supervisor did not recognize our message: {}", unrecognized->what);
    return;
  }
  spdlog::warn("unexpected message \"{}\" from the supervisor", proto::type_of(m));
  send_quietly(channel_.get(), msg::Unrecognized{std::string(proto::type_of(m))});
}

// Upgrade, outgoing side: stop reading, answer every event already read,
// and only then let the successor read (it recovers an empty record).
// There is no object table: the cache files and the group are the
// supervisor's.
void FanotifyWorker::hand_over(UniqueFd peer) {
  if (stopping_) return;
  auto shared = std::make_shared<UniqueFd>(std::move(peer));
  server_->hand_over([this, shared] {
    try {
      send(shared->get(), proto::make_hello("worker", ::getpid()));
      auto hello = receive_message(shared->get(), PEER_TIMEOUT);
      negotiate_or_throw(expect<proto::msg::Hello>(hello, "hello"), "successor");
      send(shared->get(), proto::msg::ObjectsDone{0});
      send(channel_.get(), proto::msg::HandedOver{0});
      spdlog::info("handover: every event answered; the successor reads now");
    } catch (const ChannelError& e) {
      spdlog::error("handover to the successor failed: {}; the supervisor lets it take over", e.what());
    }
    stopping_ = true;
    loop_.stop();
  });
}

void FanotifyWorker::receive_hand_over(UniqueFd peer_fd) {
  if (serving_) return;
  auto peer = std::make_shared<UniqueFd>(std::move(peer_fd));
  auto watch = std::make_shared<asio::posix::stream_descriptor>(watch_fd(loop_, peer->get()));
  watch->async_wait(asio::posix::stream_descriptor::wait_read, [this, peer, watch](boost::system::error_code ec) {
    if (ec || serving_) return;
    try {
      auto hello = receive_message(peer->get(), PEER_TIMEOUT);
      negotiate_or_throw(expect<proto::msg::Hello>(hello, "hello"), "predecessor");
      send(peer->get(), proto::make_hello("worker", ::getpid()));
      auto done = receive_message(peer->get(), PEER_TIMEOUT);
      (void)expect<proto::msg::ObjectsDone>(done, "objects-done");
    } catch (const std::exception& e) {
      // The supervisor sends "takeover" once the predecessor is reaped.
      spdlog::error("handover from the predecessor failed: {}", e.what());
      return;
    }
    start_serving("handed over by the predecessor");
  });
}

// ---- adoption by a new supervisor (adoption_listener.h) ----

void FanotifyWorker::listen_for_supervisor() {
  if (!adoption_)
    adoption_ = AdoptionListener::start(loop_, config_.state_dir,
                                        [this](UniqueFd conn, pid_t pid) { finish_adoption(std::move(conn), pid); });
}

// The peer's hello is waiting (or it closed): answer it. What the new
// supervisor gets back is what its predecessor handed us: every cache file
// with its writer fd, then the group and the record.
void FanotifyWorker::finish_adoption(UniqueFd conn, pid_t peer_pid) {
  try {
    const char* busy = stopping_ ? "stopping" : server_->handing_over() ? "handing over to an upgrade's successor" : nullptr;
    if (!answer_adopter(conn.get(), peer_pid, busy, supervisor_gone_)) return;
    const auto& files = files_.files();
    for (std::size_t at = 0; at < files.size();) {
      const std::size_t n = std::min(files.size() - at, proto::MAX_FDS_PER_MESSAGE);
      proto::msg::CacheFiles batch;
      std::vector<int> fds;
      for (std::size_t i = at; i < at + n; ++i) {
        batch.files.push_back(entries_[files[i].index]);
        fds.push_back(files[i].writer.get());
      }
      send(conn.get(), batch, fds);
      at += n;
    }
    const int fds[] = {group_.get(), record_fd_.get()};
    send(conn.get(),
         proto::msg::AdoptFanotify{.pid = ::getpid(),
                                   .generation = generation_,
                                   .version = std::string(proto::VERSION),
                                   .serving = serving_},
         fds);
  } catch (const ChannelError& e) {
    spdlog::warn("adoption by pid={} failed: {}", peer_pid, e.what());
    return;
  }
  spdlog::info("adopted by a new supervisor pid={}: handed back the fanotify group, the record and {} cache files",
               peer_pid, files_.files().size());
  channel_ = std::move(conn);
  (void)sys::set_nonblocking(channel_.get());
  supervisor_gone_ = false;
  watch_channel();
}

}  // namespace ondemand::worker
