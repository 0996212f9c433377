// Rolling upgrade, both sides: the outgoing worker drains and sends its
// object table (each object's anonymous fd, id, blob id and domain) to the
// successor over the socketpair the supervisor gave them; the incoming one
// imports it and serves without restore. proto/channel.h has the
// conversation.
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "common/fd_passing.h"
#include "common/sys.h"
#include "common/unix_socket.h"
#include "common/watch_fd.h"
#include "worker/worker.h"
#include "worker/worker_internal.h"

namespace ondemand::worker {
namespace asio = boost::asio;

// ---- upgrade: outgoing side ----

void Worker::hand_over(UniqueFd peer, std::chrono::milliseconds drain) {
  if (greeting_ || handing_over_ || stopping_) return;
  // Greet the successor first and keep serving until it answers: it answers
  // from its event loop, i.e. only once it is set up and sandboxed, and
  // every millisecond of its start spent with nobody reading the device is
  // a reader's stall. The wire order is unchanged (A's hello, then B's).
  handover_peer_ = std::move(peer);
  greeting_ = true;
  try {
    peer_watch_ = std::make_unique<asio::posix::stream_descriptor>(watch_fd(loop_, handover_peer_.get()));
    send(handover_peer_.get(), proto::make_hello("worker", ::getpid()));
  } catch (const std::exception& e) {  // ChannelError, or no fd left to watch with
    return call_off_handover(fmt::format("greeting the successor failed: {}", e.what()));
  }
  spdlog::info("handover: greeted the successor; serving until it answers");
  greeting_deadline_.expires_after(PEER_TIMEOUT);
  greeting_deadline_.async_wait([this](boost::system::error_code ec) {
    if (!ec && greeting_) call_off_handover("the successor did not answer our hello in time");
  });
  peer_watch_->async_wait(asio::posix::stream_descriptor::wait_read, [this, drain](boost::system::error_code ec) {
    if (ec || !greeting_) return;
    if (stopping_) return call_off_handover("stopping");  // asked to stop while greeting
    try {
      auto hello = receive_message(handover_peer_.get(), PEER_TIMEOUT);
      negotiate_or_throw(expect<proto::msg::Hello>(hello, "hello"), "successor");
    } catch (const ChannelError& e) {
      return call_off_handover(fmt::format("the successor's hello: {}", e.what()));
    }
    greeting_ = false;
    greeting_deadline_.cancel();
    peer_watch_.reset();
    stop_reading_for_handover(drain);
  });
}

// The successor is ready: from here on nobody reads the device until it
// does, so this stretch is what readers feel.
void Worker::stop_reading_for_handover(std::chrono::milliseconds drain) {
  spdlog::info("handover: stopping reads, draining {} in-flight requests (bound {} ms)", frontend_->inflight(),
               drain.count());
  handing_over_ = true;
  frontend_->stop_reading();
  culler_->stop();
  // The listener stays: a new supervisor that connects now is told "busy"
  // until the successor's socket replaces ours at the path (or we resume).
  // No deadline of our own: the supervisor kills us if we do not finish in
  // time and lets the successor restore.
  if (frontend_->inflight() == 0) send_objects();
}

// The successor died or cannot take over before we stopped reading: serve
// on. If it lives, the supervisor's drain bound decides (it kills us and
// the successor restores); if it died, the supervisor's Resume finds us
// reading already.
void Worker::call_off_handover(const std::string& why) {
  spdlog::error("handover called off, serving on: {}", why);
  greeting_ = false;
  greeting_deadline_.cancel();
  peer_watch_.reset();
  handover_peer_.reset();
}

void Worker::send_objects() {
  if (!handing_over_ || !handover_peer_) return;
  const int peer = handover_peer_.get();
  auto objects = frontend_->export_objects();
  try {
    // Batches that fit one datagram each, by fd count and by size: a table
    // of long blob ids must never make a message the successor cannot read.
    std::vector<proto::msg::ObjectEntry> entries;
    entries.reserve(objects.size());
    for (const auto& o : objects) entries.push_back({o->object_id, o->ref.blob_id, o->ref.domain});
    const auto batches = proto::split_objects(entries);
    if (!batches) throw ChannelError("an object entry does not fit one datagram");
    std::size_t i = 0;
    for (const std::size_t n : *batches) {
      proto::msg::Objects batch;
      std::vector<int> fds;
      for (std::size_t j = i; j < i + n; ++j) {
        batch.objects.push_back(std::move(entries[j]));
        fds.push_back(objects[j]->fd.get());
      }
      send(peer, batch, fds);
      i += n;
    }
    // We stopped reading for good (no Resume is heeded from here on): let
    // the successor take the serving lock the moment it has the table,
    // not once we have exited.
    serving_lock_.reset();
    send(peer, proto::msg::ObjectsDone{objects.size()});
    spdlog::info("handover: sent {} objects to the successor in {} messages", objects.size(), batches->size());
    send(channel_.get(), proto::msg::HandedOver{objects.size()});
  } catch (const ChannelError& e) {
    // Our copies of the fds close when we exit; the successor restores.
    spdlog::error("handover to the successor failed: {}", e.what());
  }
  objects.clear();  // close our copies now: the successor owns the objects
  handover_peer_.reset();
  stopping_ = true;
  loop_.stop();
}

// ---- upgrade: incoming side ----

void Worker::receive_objects(UniqueFd peer_fd) {
  if (reading_) {
    spdlog::warn("handover-peer while already serving: ignored");
    return;
  }
  // Blocking but bounded: in standby nothing else needs this thread, and the
  // outgoing worker's drain (between our hello and its table) is bounded by
  // the supervisor's kill. We answer its hello only from here, i.e. once we
  // are set up and sandboxed: that is when it stops reading.
  auto peer = std::make_shared<UniqueFd>(std::move(peer_fd));
  auto watch = std::make_shared<asio::posix::stream_descriptor>(watch_fd(loop_, peer->get()));
  watch->async_wait(asio::posix::stream_descriptor::wait_read, [this, peer, watch](boost::system::error_code ec) {
    if (ec || reading_) return;
    std::size_t imported = 0, received_total = 0;
    try {
      auto hello = receive_message(peer->get(), PEER_TIMEOUT);
      negotiate_or_throw(expect<proto::msg::Hello>(hello, "hello"), "predecessor");
      send(peer->get(), proto::make_hello("worker", ::getpid()));
      for (;;) {
        auto msg = receive_message(peer->get(), PEER_TIMEOUT);
        if (std::holds_alternative<proto::msg::ObjectsDone>(msg.message)) break;
        const auto& batch = expect<proto::msg::Objects>(msg, "objects");
        for (std::size_t i = 0; i < batch.objects.size(); ++i) {  // decode() matched fds to entries
          ++received_total;
          const auto& entry = batch.objects[i];
          if (frontend_->import_object(entry.object_id, proto::BlobRef{entry.domain, entry.blob_id},
                                       std::move(msg.fds[i])))
            ++imported;
        }
      }
    } catch (const std::exception& e) {
      // Partial is fine: what we hold stays open; the rest closed with the
      // predecessor. The supervisor sends "takeover" once it is reaped.
      spdlog::error("handover from the predecessor incomplete after {} objects: {}", received_total, e.what());
      return;
    }
    spdlog::info("handover: received {} objects ({} imported); serving without restore", received_total, imported);
    start_reading(/*restore=*/false);
  });
}

}  // namespace ondemand::worker
