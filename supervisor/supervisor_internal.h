// What the files of class Supervisor (supervisor.h) share, and nothing else
// includes.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

namespace ondemand::supervisor {

// The whole file; throws ConfigError naming it.
std::string read_config_text(const std::filesystem::path& file);
double ms_since(std::chrono::steady_clock::time_point t);
// ondemand-worker beside our own binary: worker_binary's default.
std::filesystem::path default_worker_binary();

}  // namespace ondemand::supervisor
