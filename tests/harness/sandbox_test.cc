// The worker's sandbox as the kernel sees it: /proc/<pid>/status of the
// real worker the real supervisor spawned (common/sandbox.h, issue 11).
#include <pwd.h>

#include <fstream>
#include <map>
#include <string>

#include <catch2/catch.hpp>

#include "tests/harness/harness.h"

using namespace ondemand::harness;

namespace {

// "Name:\tvalue" lines of /proc/<pid>/status.
std::map<std::string, std::string> proc_status(pid_t pid) {
  std::map<std::string, std::string> out;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    auto value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    out[line.substr(0, colon)] = value;
  }
  return out;
}

void check_sandboxed(pid_t pid, const char* role) {
  const auto st = proc_status(pid);
  INFO(role << " pid=" << pid);
  const passwd* nobody = ::getpwnam("nobody");
  REQUIRE(nobody != nullptr);
  const auto uid = std::to_string(nobody->pw_uid);
  const auto gid = std::to_string(nobody->pw_gid);
  // Real, effective, saved and file-system ids: no way back to root.
  CHECK(st.at("Uid") == uid + "\t" + uid + "\t" + uid + "\t" + uid);
  CHECK(st.at("Gid") == gid + "\t" + gid + "\t" + gid + "\t" + gid);
  CHECK(st.at("Groups").empty());
  CHECK(st.at("CapEff") == "0000000000000000");
  CHECK(st.at("CapPrm") == "0000000000000000");
  CHECK(st.at("CapInh") == "0000000000000000");
  CHECK(st.at("CapBnd") == "0000000000000000");
  CHECK(st.at("CapAmb") == "0000000000000000");
  CHECK(st.at("NoNewPrivs") == "1");
}

}  // namespace

TEST_CASE("the worker and its spare run as worker_user with no capabilities and no_new_privs",
          "[harness][sandbox]") {
  SupervisorOptions options;
  options.config = {{"worker_user", "nobody"}};
  SupervisorProcess sv(options);
  auto serving = sv.wait_serving();
  REQUIRE(serving);
  check_sandboxed(*serving, "serving worker");
  auto spare = sv.wait_spare();
  REQUIRE(spare);
  check_sandboxed(*spare, "spare worker");
  // Unprivileged, it still serves: attaches the shared memory it was
  // handed, answers the device and listens on state_dir/worker.sock.
  CHECK(sv.device().open_missing(1) == -2);
  CHECK(std::filesystem::exists(sv.state_dir() / "worker.sock"));
  CHECK(sv.log().find("culler off") != std::string::npos);
}

TEST_CASE("sandbox_drop_privileges false keeps the worker root", "[harness][sandbox]") {
  SupervisorOptions options;
  options.config = {{"sandbox_drop_privileges", false}};
  SupervisorProcess sv(options);
  auto serving = sv.wait_serving();
  REQUIRE(serving);
  const auto st = proc_status(*serving);
  CHECK(st.at("Uid").starts_with("0\t"));
  CHECK(st.at("NoNewPrivs") == "0");
}
