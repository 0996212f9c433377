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
                                   proto::WorkerCounters& counters, ReadErrorOptions read_errors)
    : loop_(loop), device_(loop, device.release()), counters_(counters), read_errors_(read_errors),
      backoff_(loop) {
  // O_NONBLOCK is on the open file description shared with the supervisor;
  // it never reads, so that is harmless.
  device_.non_blocking(true);
}

void CachefilesDevice::start(RequestSink& sink) {
  sink_ = &sink;
  drain();  // requests may be pending already (restore, or a predecessor stopped)
}

void CachefilesDevice::on_capacity() {
  if (paused_ && !stopped_ && sink_->has_capacity()) {
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
  backoff_.cancel();
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
    if (!sink_->has_capacity()) {
      paused_ = true;
      return;
    }
    auto r = sys::read(device_.native_handle(), buf.data(), buf.size());
    if (!r.ok() && r.err != EAGAIN) {
      if (!read_failed(r.err)) return;
      continue;
    }
    read_errors_.on_success();
    if (!r.ok() || r.rc == 0) return arm();
    dispatch(std::span(buf.data(), static_cast<std::size_t>(r.rc)));
  }
  asio::post(loop_, [this] { drain(); });
}

bool CachefilesDevice::read_failed(int err) {
  counters_.bad_messages.fetch_add(1, std::memory_order_relaxed);
  const auto action = read_errors_.on_error(ReadErrors::Clock::now());
  if (action.log)
    spdlog::warn("read from /dev/cachefiles failed: {} ({} in a row; {} more not logged since the last line)",
                 sys::errno_name(err), read_errors_.streak(), action.unlogged);
  if (action.give_up) {
    spdlog::critical("read from /dev/cachefiles has failed {} times in a row, nothing else for {} ms: {}; giving up",
                     read_errors_.streak(),
                     read_errors_.options().give_up_after.count(),
                     sys::errno_name(err));
    stopped_ = true;
    if (on_fatal_) on_fatal_(err);
    return false;
  }
  if (action.wait.count() == 0) return true;
  backoff_.expires_after(action.wait);
  backoff_.async_wait([this](boost::system::error_code ec) {
    if (!ec) drain();
  });
  return false;
}

void CachefilesDevice::dispatch(std::span<const std::byte> bytes) {
  auto parsed = proto::parse_kernel_msg(bytes);
  if (auto* error = std::get_if<proto::ParseError>(&parsed)) return reject(*error);
  auto& request = std::get<proto::KernelRequest>(parsed);
  UniqueFd anon_fd;
  if (auto* open = std::get_if<proto::OpenRequest>(&request)) anon_fd.reset(open->anon_fd);
  sink_->handle(std::move(request), std::move(anon_fd));
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
