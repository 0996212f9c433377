#include "supervisor/adopt.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/channel.h"
#include "common/sys.h"
#include "common/unix_socket.h"
#include "proto/handoff.h"
#include "supervisor/worker_process.h"

namespace ondemand::supervisor {
using namespace std::chrono_literals;

std::optional<AdoptedWorker> try_adopt(const std::filesystem::path& state_dir) {
  const auto path = state_dir / "worker.sock";
  // Bounded: a worker alive but not accepting must not stop us starting.
  auto conn = connect_seqpacket(path, 5s);
  if (!conn.fd) {
    if (conn.err != ENOENT && conn.err != ECONNREFUSED) spdlog::warn("{}; starting without adoption", conn.error);
    return std::nullopt;
  }
  auto fd = std::move(conn.fd);
  try {
    send_json(fd.get(), proto::make_hello("supervisor", ::getpid()));
    auto first = receive_message(fd.get(), 5s);
    if (first.message.type == "refused")
      throw AdoptError(fmt::format("a worker is running on {} and refuses adoption: {}", path.string(),
                                   first.message.body.value("why", std::string("?"))));
    if (first.message.type != "hello") throw ChannelError("expected hello, got " + first.message.type);
    auto adopt = receive_message(fd.get(), 5s);
    if (adopt.message.type != "adopt" || adopt.fds.size() != 1)
      throw ChannelError("expected \"adopt\" with the device fd, got " + adopt.message.type);
    const auto& a = adopt.message.body;
    AdoptedWorker w;
    w.pid = a.value("pid", -1);
    w.generation = a.value("generation", std::uint64_t{0});
    w.rdev = static_cast<dev_t>(a.value("rdev", std::uint64_t{0}));
    w.version = a.value("version", std::string("?"));
    w.serving = a.value("serving", false);
    w.device = std::move(adopt.fds[0]);
    struct stat st{};
    if (::fstat(w.device.get(), &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != w.rdev)
      throw ChannelError("the adopted worker's fd is not the announced /dev/cachefiles");
    w.pidfd = open_pidfd(w.pid);
    w.channel = std::move(fd);
    return w;
  } catch (const AdoptError&) {
    throw;
  } catch (const ChannelError& e) {
    throw AdoptError(fmt::format("adopting the worker behind {} failed: {}", path.string(), e.what()));
  } catch (const nlohmann::json::exception& e) {
    // A worker's adopt message with wrong field types (not a runtime_error).
    // A live worker answered: binding afresh would make two readers.
    throw AdoptError(fmt::format("adopting the worker behind {} failed: malformed reply: {}", path.string(), e.what()));
  } catch (const std::runtime_error& e) {
    throw AdoptError(fmt::format("adopting the worker behind {} failed: {}", path.string(), e.what()));
  }
}

}  // namespace ondemand::supervisor
