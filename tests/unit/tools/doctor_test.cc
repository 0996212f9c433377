// ondemandctl doctor: each missing piece of kernel support or setup is a
// named FAIL with what to do, and a host that has everything passes.
#include <catch2/catch.hpp>

#include "tests/unit/test_util.h"
#include "tools/ctl/doctor.h"

namespace ondemand::ctl {
namespace {

const DoctorCheck* find(const std::vector<DoctorCheck>& checks, std::string_view name) {
  for (const auto& c : checks)
    if (c.name == name) return &c;
  return nullptr;
}

DoctorInputs good_inputs(const test::TempDir& dir) {
  DoctorInputs in;
  in.kernel_config =
      "CONFIG_CACHEFILES=m\nCONFIG_CACHEFILES_ONDEMAND=y\nCONFIG_EROFS_FS=y\nCONFIG_EROFS_FS_ONDEMAND=y\n"
      "CONFIG_FANOTIFY_ACCESS_PERMISSIONS=y\n";
  in.kernel_config_source = "test";
  in.kernel_release = "6.12.0-test";
  in.device = "/dev/null";  // a character device
  in.cache_dir = dir.path();
  in.shm_dir = "/dev/shm";
  in.root = true;
  return in;
}

}  // namespace

TEST_CASE("doctor passes a host that has on-demand support", "[tools][doctor]") {
  test::TempDir dir;  // the unit tests' temp dir is on the host's ext4 here
  auto in = good_inputs(dir);
  const auto checks = run_doctor(in);
  INFO(format_doctor(checks));
  // cache_dir's file system depends on where TMPDIR is; everything else is OK.
  for (const auto& c : checks)
    if (c.name != "cache_dir") CHECK(c.status == DoctorCheck::OK);
}

TEST_CASE("doctor names each missing kernel option and piece of setup", "[tools][doctor]") {
  test::TempDir dir;
  auto in = good_inputs(dir);
  in.kernel_config = "CONFIG_CACHEFILES=m\n# CONFIG_CACHEFILES_ONDEMAND is not set\nCONFIG_EROFS_FS=y\n";
  in.device = dir.path() / "no-such-device";
  in.cache_dir = "/dev/shm";  // tmpfs: cachefiles refuses it
  in.root = false;
  const auto checks = run_doctor(in);
  INFO(format_doctor(checks));
  CHECK(doctor_exit_code(checks) == 1);
  REQUIRE(find(checks, "CONFIG_CACHEFILES_ONDEMAND"));
  CHECK(find(checks, "CONFIG_CACHEFILES_ONDEMAND")->status == DoctorCheck::FAIL);
  CHECK(find(checks, "CONFIG_EROFS_FS_ONDEMAND")->status == DoctorCheck::FAIL);
  CHECK(find(checks, "CONFIG_CACHEFILES")->status == DoctorCheck::OK);
  CHECK(find(checks, (dir.path() / "no-such-device").string())->status == DoctorCheck::FAIL);
  CHECK_THAT(find(checks, "cache_dir")->detail, Catch::Contains("tmpfs"));
  CHECK(find(checks, "cache_dir")->status == DoctorCheck::FAIL);
  CHECK(find(checks, "privilege")->status == DoctorCheck::FAIL);
}

TEST_CASE("doctor warns, not fails, when the kernel config cannot be read", "[tools][doctor]") {
  test::TempDir dir;
  auto in = good_inputs(dir);
  in.kernel_config.reset();
  const auto checks = run_doctor(in);
  REQUIRE(find(checks, "kernel config"));
  CHECK(find(checks, "kernel config")->status == DoctorCheck::WARN);
  CHECK(find(checks, "CONFIG_CACHEFILES_ONDEMAND") == nullptr);
}

}  // namespace ondemand::ctl
