#include "common/systemd.h"

#include <fcntl.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include <spdlog/spdlog.h>

#include "common/sys.h"

namespace ondemand::systemd {

bool notify(std::string_view state, std::span<const int> fds) {
  const std::string text(state);
  const int rc = ::sd_pid_notify_with_fds(0, /*unset_environment=*/0, text.c_str(), fds.data(),
                                          static_cast<unsigned>(fds.size()));
  if (rc < 0) {
    spdlog::warn("sd_notify \"{}\": {}", state, sys::errno_name(-rc));
    return false;
  }
  return rc > 0;  // 0: not under systemd ($NOTIFY_SOCKET unset)
}

std::optional<UniqueFd> take_listen_fd(std::string_view name) {
  char** names = nullptr;
  // Checks LISTEN_PID, sets FD_CLOEXEC on the passed fds, unsets the variables.
  const int n = ::sd_listen_fds_with_names(/*unset_environment=*/1, &names);
  if (n < 0) {
    spdlog::warn("LISTEN_FDS: {}", sys::errno_name(-n));
    return std::nullopt;
  }
  std::optional<UniqueFd> found;
  for (int i = 0; i < n; ++i) {
    UniqueFd fd{SD_LISTEN_FDS_START + i};
    ::fcntl(fd.get(), F_SETFD, FD_CLOEXEC);
    if (!found && names && names[i] && name == names[i]) found = std::move(fd);  // others close here
  }
  if (names) {
    for (int i = 0; names[i]; ++i) std::free(names[i]);
    std::free(names);
  }
  return found;
}

namespace {

struct Bus {
  sd_bus* bus = nullptr;
  ~Bus() { sd_bus_flush_close_unref(bus); }
};
struct Message {
  sd_bus_message* m = nullptr;
  ~Message() { sd_bus_message_unref(m); }
};
struct Error {
  sd_bus_error e = SD_BUS_ERROR_NULL;
  ~Error() { sd_bus_error_free(&e); }
  std::string text(int rc) const { return e.message ? e.message : sys::errno_name(-rc); }
};

constexpr const char* SYSTEMD = "org.freedesktop.systemd1";

}  // namespace

std::optional<std::string> own_job_type(std::chrono::milliseconds timeout) {
  if (!std::getenv("NOTIFY_SOCKET") && !std::getenv("INVOCATION_ID")) return std::nullopt;  // not a unit
  Bus b;
  int rc = sd_bus_new(&b.bus);
  if (rc >= 0) rc = sd_bus_set_address(b.bus, "unix:path=/run/systemd/private");
  if (rc >= 0) rc = sd_bus_set_method_call_timeout(b.bus, static_cast<std::uint64_t>(timeout.count()) * 1000);
  if (rc >= 0) rc = sd_bus_start(b.bus);
  if (rc < 0) {
    spdlog::warn("asking systemd for our job: cannot reach /run/systemd/private: {}", sys::errno_name(-rc));
    return std::nullopt;
  }
  Error err;
  Message reply;
  rc = sd_bus_call_method(b.bus, SYSTEMD, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                          "GetUnitByPID", &err.e, &reply.m, "u", static_cast<std::uint32_t>(::getpid()));
  const char* unit_path = nullptr;
  if (rc >= 0) rc = sd_bus_message_read(reply.m, "o", &unit_path);
  if (rc < 0) {
    spdlog::warn("asking systemd for our unit: {}", err.text(rc));
    return std::nullopt;
  }
  Message job;
  rc = sd_bus_get_property(b.bus, SYSTEMD, unit_path, "org.freedesktop.systemd1.Unit", "Job", &err.e, &job.m,
                           "(uo)");
  std::uint32_t job_id = 0;
  const char* job_path = nullptr;
  if (rc >= 0) rc = sd_bus_message_read(job.m, "(uo)", &job_id, &job_path);
  if (rc < 0) {
    spdlog::warn("asking systemd for our unit's job: {}", err.text(rc));
    return std::nullopt;
  }
  if (job_id == 0) return std::string();
  char* type = nullptr;
  rc = sd_bus_get_property_string(b.bus, SYSTEMD, job_path, "org.freedesktop.systemd1.Job", "JobType", &err.e,
                                  &type);
  if (rc < 0) {
    spdlog::warn("asking systemd for job {}'s type: {}", job_id, err.text(rc));
    return std::nullopt;
  }
  std::string out = type;
  std::free(type);
  return out;
}

}  // namespace ondemand::systemd
