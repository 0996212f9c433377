// `ondemandctl doctor`: can this host run the daemon natively? Each check
// names what it looked at and what to do. Pure over its inputs (paths and
// texts), so tests run it against temp directories.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace ondemand::ctl {

struct DoctorCheck {
  enum Status { OK, WARN, FAIL } status;
  std::string name;
  std::string detail;
};

struct DoctorInputs {
  // The running kernel's config (/boot/config-$(uname -r) or
  // /proc/config.gz, decompressed); nullopt when neither could be read.
  std::optional<std::string> kernel_config;
  std::string kernel_config_source;
  std::string kernel_release;                     // uname -r
  std::filesystem::path device = "/dev/cachefiles";
  std::optional<std::filesystem::path> cache_dir;  // from --config, if one was readable
  std::filesystem::path shm_dir = "/dev/shm";
  bool root = false;
};

// The inputs of this host.
DoctorInputs doctor_inputs_of_this_host(std::optional<std::filesystem::path> cache_dir);

std::vector<DoctorCheck> run_doctor(const DoctorInputs& in);

// Aligned "ok/WARN/FAIL  name  detail" lines.
std::string format_doctor(const std::vector<DoctorCheck>& checks);

// 0 when nothing failed, else 1.
int doctor_exit_code(const std::vector<DoctorCheck>& checks);

}  // namespace ondemand::ctl
