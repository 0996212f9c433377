#include "frontends/cachefiles/cachefiles_device.h"

#include <linux/cachefiles.h>

#include <array>

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include "common/sys.h"

namespace ondemand::worker {
namespace asio = boost::asio;

namespace {
// Messages handled per drain before yielding to other handlers (timers,
// completions), so a flood of requests cannot starve the heartbeat.
constexpr int DRAIN_BATCH = 128;
}  // namespace

CachefilesDevice::CachefilesDevice(asio::io_context& loop, UniqueFd device,
                                   proto::WorkerCounters& counters)
    : loop_(loop), device_(loop, device.release()), counters_(counters) {
  // O_NONBLOCK is on the open file description shared with the supervisor;
  // it never reads, so that is harmless.
  device_.non_blocking(true);
}

void CachefilesDevice::start(Engine& engine) {
  engine_ = &engine;
  drain();  // requests may be pending already (restore, or a predecessor stopped)
}

void CachefilesDevice::on_capacity() {
  if (paused_ && !stopped_ && engine_->has_capacity()) {
    paused_ = false;
    asio::post(loop_, [this] { drain(); });
  }
}

void CachefilesDevice::resume_reading() {
  stopped_ = false;
  paused_ = false;
  asio::post(loop_, [this] { drain(); });
}

void CachefilesDevice::stop_reading() {
  stopped_ = true;
  boost::system::error_code ignored;
  device_.cancel(ignored);
}

void CachefilesDevice::arm() {
  if (stopped_ || armed_) return;
  armed_ = true;
  device_.async_wait(asio::posix::stream_descriptor::wait_read,
                     [this](boost::system::error_code ec) {
                       armed_ = false;
                       if (ec == asio::error::operation_aborted) return;
                       if (ec) spdlog::error("waiting on /dev/cachefiles: {}", ec.message());
                       drain();
                     });
}

void CachefilesDevice::drain() {
  alignas(8) std::array<std::byte, proto::KERNEL_MSG_MAX_SIZE> buf;
  for (int i = 0; i < DRAIN_BATCH; ++i) {
    if (stopped_) return;
    if (!engine_->has_capacity()) {
      paused_ = true;
      return;
    }
    auto r = sys::read(device_.native_handle(), buf.data(), buf.size());
    if (r.ok() && r.rc == 0) return arm();
    if (!r.ok()) {
      if (r.err == EAGAIN) return arm();
      counters_.bad_messages.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("read from /dev/cachefiles failed for one message: {}",
                   sys::errno_name(r.err));
      continue;
    }
    dispatch(std::span(buf.data(), static_cast<std::size_t>(r.rc)));
  }
  asio::post(loop_, [this] { drain(); });
}

void CachefilesDevice::dispatch(std::span<const std::byte> bytes) {
  auto parsed = proto::parse_kernel_msg(bytes);
  if (auto* error = std::get_if<proto::ParseError>(&parsed)) return reject(*error);
  auto& request = std::get<proto::KernelRequest>(parsed);
  UniqueFd anon_fd;
  if (auto* open = std::get_if<proto::OpenRequest>(&request)) anon_fd.reset(open->anon_fd);
  engine_->handle(std::move(request), std::move(anon_fd));
}

void CachefilesDevice::reject(const proto::ParseError& error) {
  UniqueFd leaked{error.leaked_fd};  // closes the OPEN's fd whatever happens
  counters_.bad_messages.fetch_add(1, std::memory_order_relaxed);
  spdlog::error("unparsable kernel message msg_id={} opcode={}: {}", error.msg_id, error.opcode,
                proto::to_string(error.kind));
  // Still give the one reply we can, so nobody sleeps on it: an OPEN is
  // refused. (A READ cannot be completed without knowing its object.)
  if (error.opcode == CACHEFILES_OP_OPEN && error.kind != proto::ParseErrorKind::TRUNCATED_HEADER)
    copen(error.msg_id, -EINVAL);
}

int CachefilesDevice::copen(std::uint32_t msg_id, std::int64_t size_or_negative_errno) {
  auto r = sys::write_command(device_.native_handle(), proto::format_copen(msg_id, size_or_negative_errno));
  return r.ok() ? 0 : r.err;
}

int CachefilesDevice::read_complete(int anon_fd, std::uint32_t msg_id) {
  auto r = sys::ioctl(anon_fd, CACHEFILES_IOC_READ_COMPLETE, msg_id);
  return r.ok() ? 0 : r.err;
}

int CachefilesDevice::restore() {
  auto r = sys::write_command(device_.native_handle(), proto::RESTORE_COMMAND);
  return r.ok() ? 0 : r.err;
}

}  // namespace ondemand::worker
