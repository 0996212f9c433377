#include "backends/local.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <future>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/unit/test_util.h"
#include "proto/blob_id.h"

namespace ondemand::worker {
namespace {

using namespace std::chrono_literals;

std::string read_blob(Blob& blob, std::uint64_t off, std::size_t len, int* err_out = nullptr) {
  std::vector<std::byte> buf(len, std::byte{0xAA});  // stale bytes must be overwritten
  const auto error = blob.read(off, buf, NO_DEADLINE);
  if (err_out) *err_out = error ? error->err : 0;
  return std::string(reinterpret_cast<const char*>(buf.data()), buf.size());
}

// open() by blob id alone (no domain), with the errno the kernel reply gets.
struct Opened {
  std::shared_ptr<Blob> blob;
  int err = 0;
  std::optional<BackendError> error;
};
Opened open_id(LocalBackend& backend, std::string_view id, std::string domain = "") {
  auto r = backend.open(proto::BlobRef{std::move(domain), std::string(id)}, NO_DEADLINE);
  return {r.blob, r.error ? r.error->err : 0, r.error};
}

}  // namespace

TEST_CASE("LocalBackend opens an existing blob and reports its size", "[worker][local]") {
  test::TempDir dir;
  const auto content = test::pattern_bytes(10000);
  dir.write("blob1", content);
  LocalBackend backend(dir.path());
  auto opened = open_id(backend, "blob1");
  REQUIRE(opened.blob);
  CHECK(opened.err == 0);
  CHECK(opened.blob->size() == 10000);
  CHECK_THAT(backend.describe(), Catch::Contains(dir.path().string()));
}

TEST_CASE("LocalBackend: a missing blob is ENOENT", "[worker][local]") {
  test::TempDir dir;
  LocalBackend backend(dir.path());
  auto opened = open_id(backend, "missing");
  CHECK_FALSE(opened.blob);
  CHECK(opened.err == ENOENT);
}

TEST_CASE("LocalBackend refuses symlinks, inside or outside blob_dir, with EINVAL", "[worker][local]") {
  test::TempDir dir;
  test::TempDir outside;
  dir.write("real", "inside data");
  const auto secret = outside.write("secret", "outside data");
  std::filesystem::create_symlink(secret, dir.path() / "escape");
  std::filesystem::create_symlink("real", dir.path() / "alias");
  std::filesystem::create_symlink("/etc/passwd", dir.path() / "passwd");
  LocalBackend backend(dir.path());
  for (auto id : {"escape", "alias", "passwd"}) {
    INFO("id: " << id);
    auto opened = open_id(backend, id);
    CHECK_FALSE(opened.blob);
    CHECK(opened.err == EINVAL);
  }
  CHECK(open_id(backend, "real").blob);  // the target itself is fine
}

TEST_CASE("LocalBackend refuses a directory and ids that fail validation with EINVAL", "[worker][local]") {
  test::TempDir dir;
  std::filesystem::create_directory(dir.path() / "subdir");
  // A file two levels down that "subdir/file" would reach if ids were not checked.
  std::filesystem::create_directory(dir.path() / "a");
  dir.write("a/b", "nested");
  LocalBackend backend(dir.path());
  for (std::string id : {std::string("subdir"), std::string("a/b"), std::string("../") +
                         dir.path().filename().string() + "/a/b", std::string(".."),
                         std::string("a\0b", 3)}) {
    INFO("id: " << escape_id(id));
    auto opened = open_id(backend, id);
    CHECK_FALSE(opened.blob);
    CHECK(opened.err == EINVAL);
  }
}

TEST_CASE("LocalBackend refuses a FIFO in blob_dir with EINVAL without blocking", "[worker][local]") {
  test::TempDir dir;
  const auto fifo = dir.path() / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  LocalBackend backend(dir.path());
  auto result = std::async(std::launch::async, [&] { return open_id(backend, "fifo"); });
  if (result.wait_for(5s) != std::future_status::ready) {
    // Unblock the open(2) (a writer appears) so the test can end, then fail.
    UniqueFd writer{::open(fifo.c_str(), O_WRONLY | O_CLOEXEC)};
    result.wait();
    FAIL("open of a FIFO blocked an I/O thread");
  }
  auto opened = result.get();
  CHECK_FALSE(opened.blob);
  CHECK(opened.err == EINVAL);
}

TEST_CASE("LocalBackend: constructing on a missing directory throws naming it", "[worker][local]") {
  test::TempDir dir;
  const auto missing = dir.path() / "nope";
  CHECK_THROWS_WITH(LocalBackend(missing), Catch::Contains(missing.string()));
  dir.write("file", "x");
  CHECK_THROWS_AS(LocalBackend(dir.path() / "file"), std::runtime_error);
}

TEST_CASE("LocalBlob::read returns exactly the requested range", "[worker][local]") {
  test::TempDir dir;
  const auto content = test::pattern_bytes(3 * 4096 + 123);
  dir.write("blob", content);
  LocalBackend backend(dir.path());
  auto blob = open_id(backend, "blob").blob;
  REQUIRE(blob);
  int err = -1;
  CHECK(read_blob(*blob, 0, 4096, &err) == content.substr(0, 4096));
  CHECK(err == 0);
  CHECK(read_blob(*blob, 4095, 2, &err) == content.substr(4095, 2));
  CHECK(read_blob(*blob, 5000, 7000, &err) == content.substr(5000, 7000));
  CHECK(read_blob(*blob, 0, content.size()) == content);
}

TEST_CASE("LocalBlob::read zero-fills past the end of the blob", "[worker][local]") {
  test::TempDir dir;
  const auto content = test::pattern_bytes(1000);
  dir.write("blob", content);
  LocalBackend backend(dir.path());
  auto blob = open_id(backend, "blob").blob;
  REQUIRE(blob);
  int err = -1;
  const auto tail = read_blob(*blob, 900, 4096 - 900, &err);
  CHECK(err == 0);
  CHECK(tail.substr(0, 100) == content.substr(900));
  CHECK(tail.substr(100) == std::string(4096 - 1000, '\0'));

  const auto beyond = read_blob(*blob, 5000, 64, &err);
  CHECK(err == 0);
  CHECK(beyond == std::string(64, '\0'));
}

TEST_CASE("LocalBlob::read of a blob truncated after open is EIO, not zeros", "[worker][local]") {
  test::TempDir dir;
  const auto p = dir.write("blob", test::pattern_bytes(8192));
  LocalBackend backend(dir.path());
  auto blob = open_id(backend, "blob").blob;
  REQUIRE(blob);
  REQUIRE(blob->size() == 8192);
  std::filesystem::resize_file(p, 100);
  int err = 0;
  read_blob(*blob, 0, 8192, &err);
  CHECK(err == EIO);
}

// Under systemd's RestrictSUIDSGID= (set by the shipped unit) openat2 fails
// with ENOSYS: every OPEN was refused in the real-systemd VM test. The
// fallback must open blobs and still refuse every symlink. Runs in a child
// under a seccomp filter that answers openat2 with ENOSYS, as systemd's does.
TEST_CASE("LocalBackend without openat2 (seccomp ENOSYS) opens blobs and still refuses symlinks",
          "[worker][local]") {
  test::TempDir dir;
  test::TempDir outside;
  dir.write("real", "inside data");
  const auto secret = outside.write("secret", "outside data");
  std::filesystem::create_symlink(secret, dir.path() / "escape");
  std::filesystem::create_symlink("real", dir.path() / "alias");
  LocalBackend backend(dir.path());
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
      ::_exit(10);
    if (::syscall(SYS_openat2, AT_FDCWD, "/", nullptr, 0) >= 0 || errno != ENOSYS) ::_exit(11);  // the filter works
    auto real = open_id(backend, "real");
    if (!real.blob || real.blob->size() != 11) ::_exit(12);
    for (auto id : {"escape", "alias"})
      if (open_id(backend, id).blob) ::_exit(13);
    if (open_id(backend, "missing").err != ENOENT) ::_exit(14);
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);  // 12: the blob did not open; 13: a symlink did
}

}  // namespace ondemand::worker

namespace ondemand::worker {

TEST_CASE("LocalBackend: the domain does not change the path; errors carry a kind and a message",
          "[worker][local]") {
  test::TempDir dir;
  dir.write("blob1", "abc");
  LocalBackend backend(dir.path());
  auto in_domain = open_id(backend, "blob1", "some-domain");
  REQUIRE(in_domain.blob);
  CHECK(in_domain.blob->size() == 3);
  auto missing = open_id(backend, "missing", "some-domain");
  REQUIRE(missing.error);
  CHECK(missing.error->kind == BackendError::Kind::NOT_FOUND);
  CHECK_THAT(missing.error->message, Catch::Contains("missing"));
  std::filesystem::create_symlink("blob1", dir.path() / "alias");
  auto link = open_id(backend, "alias");
  REQUIRE(link.error);
  CHECK(link.error->kind == BackendError::Kind::INVALID);
}

}  // namespace ondemand::worker
