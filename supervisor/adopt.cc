#include "supervisor/adopt.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <variant>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "common/sys.h"
#include "common/unix_socket.h"
#include "proto/channel.h"
#include "supervisor/worker_process.h"

namespace ondemand::supervisor {
using namespace std::chrono_literals;

namespace {

// fanotify's group fd is an anonymous inode named "[fanotify]" (fs/anon_inodes.c).
bool is_fanotify_group(int fd) {
  char target[64] = {};
  const auto link = fmt::format("/proc/self/fd/{}", fd);
  const auto n = ::readlink(link.c_str(), target, sizeof target - 1);
  return n > 0 && std::string_view(target, static_cast<std::size_t>(n)) == "anon_inode:[fanotify]";
}

// How long a worker in the middle of a handover may keep answering "busy"
// before we give up (an upgrade drains within 5 s; its successor then
// answers).
constexpr auto BUSY_DEADLINE = 20s;

struct Busy {
  std::string why;
  std::chrono::milliseconds retry;
};

// One attempt: an adopted worker, nullopt when nobody listens, or Busy.
std::variant<std::optional<AdoptedWorker>, Busy> attempt(const std::filesystem::path& path) {
  // Bounded: a worker alive but not accepting must not stop us starting.
  auto conn = connect_seqpacket(path, 5s);
  if (!conn.fd) {
    if (conn.err != ENOENT && conn.err != ECONNREFUSED) spdlog::warn("{}; starting without adoption", conn.error);
    return std::optional<AdoptedWorker>{};
  }
  auto fd = std::move(conn.fd);
  send(fd.get(), proto::make_hello("supervisor", ::getpid()));
  auto first = receive_message(fd.get(), 5s);
  if (const auto* refused = std::get_if<proto::msg::Refused>(&first.message))
    throw AdoptError(
        fmt::format("a worker is running on {} and refuses adoption: {}", path.string(), refused->why));
  if (const auto* busy = std::get_if<proto::msg::Busy>(&first.message))
    return Busy{busy->why, std::chrono::milliseconds(std::clamp<std::uint64_t>(busy->retry_ms, 10, 1000))};
  if (!std::holds_alternative<proto::msg::Hello>(first.message))
    throw ChannelError(fmt::format("expected hello, got \"{}\"", proto::type_of(first.message)));
  AdoptedWorker w;
  AdoptedFanotify files;
  for (;;) {
    auto adopt = receive_message(fd.get(), 5s);
    // A fanotify worker first hands back its cache files, in batches.
    if (auto* batch = std::get_if<proto::msg::CacheFiles>(&adopt.message)) {
      for (std::size_t i = 0; i < batch->files.size(); ++i) {  // decode() matched fds to entries
        files.entries.push_back(std::move(batch->files[i]));
        files.writers.push_back(std::move(adopt.fds[i]));
      }
      continue;
    }
    if (const auto* a = std::get_if<proto::msg::AdoptFanotify>(&adopt.message)) {
      w.pid = static_cast<pid_t>(a->pid);
      w.generation = a->generation;
      w.version = a->version;
      w.serving = a->serving;
      files.group = std::move(adopt.fds[0]);
      files.record = std::move(adopt.fds[1]);
      // Checked for what they are, not trusted: the supervisor holds them
      // from now on (FanotifyCache::adopt checks the record and the files).
      if (a->pid <= 0 || !is_fanotify_group(files.group.get()))
        throw ChannelError("the adopted worker's group fd is not a fanotify group");
      w.fanotify = std::move(files);
      break;
    }
    const auto* a = std::get_if<proto::msg::Adopt>(&adopt.message);
    if (!a)
      throw ChannelError(fmt::format("expected \"adopt\" with the device fd, got \"{}\"", proto::type_of(adopt.message)));
    if (!files.entries.empty()) throw ChannelError("a cachefiles \"adopt\" after cache files");
    w.pid = static_cast<pid_t>(a->pid);
    w.generation = a->generation;
    w.rdev = static_cast<dev_t>(a->rdev);
    w.version = a->version;
    w.serving = a->serving;
    w.device = std::move(adopt.fds[0]);  // decode() checked there is exactly one
    struct stat st{};
    if (a->pid <= 0 || ::fstat(w.device.get(), &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != w.rdev)
      throw ChannelError("the adopted worker's fd is not the announced /dev/cachefiles");
    break;
  }
  w.pidfd = open_pidfd(w.pid);
  w.channel = std::move(fd);
  return std::optional<AdoptedWorker>{std::move(w)};
}

}  // namespace

std::optional<AdoptedWorker> try_adopt(const std::filesystem::path& state_dir) {
  const auto path = state_dir / std::string(proto::WORKER_SOCKET_NAME);
  const auto give_up = std::chrono::steady_clock::now() + BUSY_DEADLINE;
  try {
    for (;;) {
      auto result = attempt(path);
      if (auto* adopted = std::get_if<std::optional<AdoptedWorker>>(&result)) return std::move(*adopted);
      const auto& busy = std::get<Busy>(result);
      // A live worker answered: binding afresh would make two readers.
      if (std::chrono::steady_clock::now() + busy.retry > give_up)
        throw AdoptError(fmt::format("the worker behind {} stayed busy for {} s: {}", path.string(),
                                     std::chrono::duration_cast<std::chrono::seconds>(BUSY_DEADLINE).count(),
                                     busy.why));
      spdlog::info("the worker behind {} is busy ({}); asking again in {} ms", path.string(), busy.why,
                   busy.retry.count());
      std::this_thread::sleep_for(busy.retry);
    }
  } catch (const AdoptError&) {
    throw;
  } catch (const std::runtime_error& e) {
    // ChannelError (a malformed or unexpected answer included: decoding is
    // total) or open_pidfd's failure. A live worker answered: binding
    // afresh would make two readers.
    throw AdoptError(fmt::format("adopting the worker behind {} failed: {}", path.string(), e.what()));
  }
}

}  // namespace ondemand::supervisor
