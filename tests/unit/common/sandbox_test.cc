#include "common/sandbox.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>

#include <catch2/catch.hpp>

#include "common/serving_lock.h"
#include "tests/unit/test_util.h"

namespace ondemand {
namespace {

constexpr uid_t NOBODY = 65534;

TEST_CASE("access_problem names the first path component the worker user cannot pass", "[common][sandbox]") {
  test::TempDir tmp;
  const auto blobs = tmp.path() / "outer" / "blobs";
  std::filesystem::create_directories(blobs);
  std::ofstream(blobs / "b") << "x";
  REQUIRE(::chmod(tmp.path().c_str(), 0755) == 0);
  REQUIRE(::chmod((tmp.path() / "outer").c_str(), 0755) == 0);
  REQUIRE(::chmod(blobs.c_str(), 0755) == 0);
  CHECK(access_problem(blobs, NOBODY, NOBODY).empty());

  REQUIRE(::chmod((tmp.path() / "outer").c_str(), 0700) == 0);
  auto why = access_problem(blobs, NOBODY, NOBODY);
  CHECK_THAT(why, Catch::Contains((tmp.path() / "outer").string()) && Catch::Contains("search it") &&
                      Catch::Contains("0700"));
  // The owner passes; so does the group when it has the bits.
  CHECK(access_problem(blobs, 0, 0).empty());
  REQUIRE(::chmod((tmp.path() / "outer").c_str(), 0710) == 0);
  CHECK(access_problem(blobs, NOBODY, 0).empty());
  CHECK_FALSE(access_problem(blobs, NOBODY, NOBODY).empty());

  REQUIRE(::chmod((tmp.path() / "outer").c_str(), 0755) == 0);
  REQUIRE(::chmod(blobs.c_str(), 0711) == 0);  // searchable, not listable
  CHECK_THAT(access_problem(blobs, NOBODY, NOBODY), Catch::Contains("list and search it"));
  REQUIRE(::chmod((blobs / "b").c_str(), 0600) == 0);
  CHECK_THAT(access_problem(blobs / "b", NOBODY, NOBODY), Catch::Contains("read it"));
  CHECK_THAT(access_problem(tmp.path() / "missing", NOBODY, NOBODY), Catch::Contains("ENOENT"));
}

TEST_CASE("open_state_dir_to_worker: root:<group> 01775", "[common][sandbox]") {
  test::TempDir tmp;
  CHECK(open_state_dir_to_worker(tmp.path(), NOBODY, NOBODY).empty());
  struct stat st{};
  REQUIRE(::stat(tmp.path().c_str(), &st) == 0);
  CHECK(st.st_uid == 0);
  CHECK(st.st_gid == NOBODY);
  CHECK((st.st_mode & 07777) == 01775);
  CHECK_THROWS_WITH(open_state_dir_to_worker(tmp.path() / "missing", NOBODY, NOBODY), Catch::Contains("missing"));
}

// As the worker's user: can it take serving.lock in `dir`? (a child process
// that drops to NOBODY, as spawn does; exit 0 when it got the lock)
bool worker_user_takes_serving_lock(const std::filesystem::path& dir) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setresgid(NOBODY, NOBODY, NOBODY) < 0 || ::setresuid(NOBODY, NOBODY, NOBODY) < 0) ::_exit(2);
    ::_exit(take_serving_lock(dir, std::chrono::milliseconds(0)).fd ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// What systemd's RuntimeDirectory= leaves at each start of the unit: every
// file under state_dir chowned to root, the worker's included. Before the
// fix a restarted unit's worker failed on serving.lock with EACCES forever
// (vm_systemd, "cannot open /run/ondemand/serving.lock: EACCES").
TEST_CASE("open_state_dir_to_worker gives serving.lock and worker.sock back after systemd chowned them",
          "[common][sandbox]") {
  test::TempDir tmp;
  const auto dir = tmp.path();
  CHECK(open_state_dir_to_worker(dir, NOBODY, NOBODY).empty());
  REQUIRE(worker_user_takes_serving_lock(dir));  // creates it as NOBODY, 0600
  const int sock = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const auto sock_path = (dir / "worker.sock").string();
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock_path.c_str());
  REQUIRE(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  ::close(sock);
  std::ofstream(dir / "control.sock.stand-in") << "x";  // the supervisor's: stays root's
  // systemd, at the unit's next start:
  for (const auto* name : {"serving.lock", "worker.sock", "control.sock.stand-in"})
    REQUIRE(::lchown((dir / name).c_str(), 0, 0) == 0);
  REQUIRE(::chown(dir.c_str(), 0, 0) == 0);
  REQUIRE(::chmod(dir.c_str(), 0755) == 0);
  CHECK_FALSE(worker_user_takes_serving_lock(dir));

  const auto given = open_state_dir_to_worker(dir, NOBODY, NOBODY);
  CHECK(given == std::vector<std::string>{"serving.lock", "worker.sock"});
  struct stat st{};
  for (const auto* name : {"serving.lock", "worker.sock"}) {
    REQUIRE(::lstat((dir / name).c_str(), &st) == 0);
    CHECK(st.st_uid == NOBODY);
    CHECK(st.st_gid == NOBODY);
  }
  REQUIRE(::lstat((dir / "control.sock.stand-in").c_str(), &st) == 0);
  CHECK(st.st_uid == 0);
  CHECK(worker_user_takes_serving_lock(dir));
  CHECK(open_state_dir_to_worker(dir, NOBODY, NOBODY).empty());  // nothing left to give back
}

TEST_CASE("open_state_dir_to_worker leaves a symlink planted under a worker file's name alone",
          "[common][sandbox]") {
  test::TempDir tmp;
  std::ofstream(tmp.path() / "target") << "x";
  std::filesystem::create_symlink(tmp.path() / "target", tmp.path() / "serving.lock");
  CHECK(open_state_dir_to_worker(tmp.path(), NOBODY, NOBODY).empty());
  struct stat st{};
  REQUIRE(::stat((tmp.path() / "target").c_str(), &st) == 0);
  CHECK(st.st_uid == 0);
}

}  // namespace
}  // namespace ondemand
