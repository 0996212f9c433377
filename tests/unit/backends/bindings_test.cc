#include "backends/bindings/bindings.h"
#include "backends/bindings/bound_backend.h"

#include <sys/stat.h>

#include <cstring>
#include <fstream>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <openssl/evp.h>

#include "tests/unit/test_util.h"

namespace ondemand::bindings {
namespace {

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

const std::string DIGEST = "sha256:" + std::string(64, 'a');

std::string error_of(std::string_view text) {
  auto r = parse_bindings(text);
  REQUIRE(std::holds_alternative<std::string>(r));
  return std::get<std::string>(r);
}

void write(const std::filesystem::path& p, std::string_view text) {
  std::ofstream out(p, std::ios::trunc);
  out << text;
}

TEST_CASE("bindings round-trip through serialize and parse", "[bindings]") {
  Bindings b;
  b["image-a"] = {"127.0.0.1:5000", "test/app", DIGEST, 4096};
  b["image-b"] = {"registry.example", "library/busybox", "sha256:" + std::string(64, '0'), std::nullopt};
  auto parsed = parse_bindings(serialize_bindings(b));
  REQUIRE(std::holds_alternative<Bindings>(parsed));
  CHECK(std::get<Bindings>(parsed) == b);
  auto empty = parse_bindings(serialize_bindings({}));
  REQUIRE(std::holds_alternative<Bindings>(empty));
  CHECK(std::get<Bindings>(empty).empty());
}

TEST_CASE("bad bindings files are errors naming the binding and the field", "[bindings]") {
  CHECK_THAT(error_of(""), Catch::Contains("not valid JSON"));
  CHECK_THAT(error_of(R"({"version": 1, "bindings": {"a": {"backend": "registry", "regis)"),
             Catch::Contains("torn or corrupt"));
  CHECK_THAT(error_of("[]"), Catch::Contains("not a JSON object"));
  CHECK_THAT(error_of(R"({"version": 2, "bindings": {}})"), Catch::Contains("version"));
  CHECK_THAT(error_of(R"({"version": 1})"), Catch::Contains("bindings"));
  const auto one = [](std::string_view id, std::string_view fields) {
    return fmt::format(R"({{"version": 1, "bindings": {{"{}": {{{}}}}}}})", id, fields);
  };
  const std::string ok_fields = R"("backend": "registry", "registry": "h:5000", "repository": "r/x", "digest": ")" +
                                DIGEST + "\"";
  CHECK(std::holds_alternative<Bindings>(parse_bindings(one("good", ok_fields))));
  CHECK_THAT(error_of(one("x", R"("backend": "registry")")),
             Catch::Contains("binding \"x\"") && Catch::Contains("registry") && Catch::Contains("missing"));
  CHECK_THAT(error_of(one("x", ok_fields + R"(, "size": -1)")), Catch::Contains("\"size\""));
  CHECK_THAT(error_of(one("x", ok_fields + R"(, "size": 0)")), Catch::Contains("size"));
  auto other_backend = ok_fields;
  other_backend.replace(other_backend.find("\"registry\","), 11, "\"local\",");
  CHECK_THAT(error_of(one("x", other_backend)), Catch::Contains("backend"));
  CHECK_THAT(error_of(one("..", ok_fields)), Catch::Contains("binding \"..\"") && Catch::Contains("id"));
  CHECK_THAT(error_of(one("a/b", ok_fields)), Catch::Contains("id"));
  auto upper = ok_fields;
  upper.replace(upper.find("r/x"), 3, "R/X");
  CHECK_THAT(error_of(one("x", upper)), Catch::Contains("repository"));
  auto short_digest = ok_fields;
  short_digest.replace(short_digest.find(DIGEST), DIGEST.size(), "sha256:abc");
  CHECK_THAT(error_of(one("x", short_digest)), Catch::Contains("digest"));
  CHECK_THAT(error_of(one("x", R"("backend": "registry", "registry": "h/../x", "repository": "r", "digest": ")" +
                                   DIGEST + "\"")),
             Catch::Contains("registry"));
}

TEST_CASE("bindings files: missing is empty, torn is an error naming the file, writes are atomic",
          "[bindings]") {
  test::TempDir dir;
  const auto file = dir.path() / "bindings.json";
  auto missing = load_bindings_file(file);
  REQUIRE(std::holds_alternative<Bindings>(missing));
  CHECK(std::get<Bindings>(missing).empty());

  Bindings b;
  b["img"] = {"127.0.0.1:5000", "test/app", DIGEST, std::nullopt};
  const auto text = serialize_bindings(b);
  REQUIRE(write_file_atomic(file, text, 0600).empty());
  struct stat st {};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  CHECK_FALSE(std::filesystem::exists(file.string() + ".tmp"));
  auto loaded = load_bindings_file(file);
  REQUIRE(std::holds_alternative<Bindings>(loaded));
  CHECK(std::get<Bindings>(loaded) == b);

  // Every proper prefix is a torn file: reported, never a partial result.
  for (std::size_t cut : {std::size_t{0}, text.size() / 3, text.size() / 2, text.size() - 3}) {
    INFO(cut);
    write(file, text.substr(0, cut));
    auto torn = load_bindings_file(file);
    REQUIRE(std::holds_alternative<std::string>(torn));
    CHECK_THAT(std::get<std::string>(torn), Catch::Contains(file.string()));
  }
  CHECK_THAT(write_file_atomic(dir.path() / "no-such-dir" / "f", "x", 0600), Catch::Contains("no-such-dir"));
}

// A blob of given bytes in memory.
class MemBlob final : public worker::Blob {
 public:
  explicit MemBlob(std::string bytes) : bytes_(std::move(bytes)) {}
  std::uint64_t size() const override { return bytes_.size(); }
  std::size_t read_unit() const override { return 7 << 20; }
  std::optional<worker::BackendError> read(std::uint64_t off, std::span<std::byte> out, worker::Deadline) override {
    std::memset(out.data(), 0, out.size());
    if (off < bytes_.size()) std::memcpy(out.data(), bytes_.data() + off, std::min(out.size(), bytes_.size() - off));
    return std::nullopt;
  }

 private:
  std::string bytes_;
};

std::optional<worker::BackendError> read_at(worker::Blob& blob, std::uint64_t off, std::size_t len) {
  std::vector<std::byte> buf(len);
  return blob.read(off, buf, worker::NO_DEADLINE);
}

TEST_CASE("verifying_blob: a whole sequential read checks the digest; a mismatch fails every later read",
          "[bindings]") {
  const auto content = test::pattern_bytes(3 * 65536 + 100);
  const auto right = "sha256:" + sha256_hex(content);
  auto good = verifying_blob(std::make_shared<MemBlob>(content), right, "blob id good");
  CHECK(good->read_unit() == (7u << 20));  // the registry's unit reaches the engine
  for (std::uint64_t off = 0; off < content.size(); off += 65536) CHECK_FALSE(read_at(*good, off, 65536));
  CHECK_FALSE(read_at(*good, 0, 10));

  auto tampered = content;
  tampered[70000] ^= 1;
  auto bad = verifying_blob(std::make_shared<MemBlob>(tampered), right, "blob id bad (registry=r)");
  std::optional<worker::BackendError> last;
  for (std::uint64_t off = 0; off < content.size(); off += 65536) last = read_at(*bad, off, 65536);
  REQUIRE(last);
  CHECK(last->err == EIO);
  CHECK(last->kind == worker::BackendError::Kind::INTEGRITY);
  CHECK_THAT(last->message, Catch::Contains("blob id bad"));
  auto again = read_at(*bad, 0, 4096);
  REQUIRE(again);
  CHECK(again->err == EIO);
}

class CountingFallback final : public worker::Backend {
 public:
  worker::OpenResult open(const proto::BlobRef& ref, worker::Deadline) override {
    ++opens;
    last = ref.blob_id;
    return {std::make_shared<MemBlob>("local"), std::nullopt};
  }
  std::string describe() const override { return "fake-local"; }
  int opens = 0;
  std::string last;
};

TEST_CASE("BoundBackend: unbound ids go to blob_dir, a new binding is seen without a restart", "[bindings]") {
  test::TempDir dir;
  Config config;
  config.state_dir = dir.path();
  config.data_dir = dir.path() / "data";
  auto fallback = std::make_unique<CountingFallback>();
  auto* local = fallback.get();
  BoundBackend backend(std::move(fallback), config);
  proto::BlobRef ref;
  ref.blob_id = "img";
  auto opened = backend.open(ref, worker::NO_DEADLINE);
  REQUIRE(opened.blob);
  CHECK(local->opens == 1);

  Bindings b;
  b["img"] = {"127.0.0.1:1", "test/app", DIGEST, std::nullopt};
  REQUIRE(write_file_atomic(worker_bindings_path(dir.path()), serialize_bindings(b), 0640).empty());
  REQUIRE(backend.lookup("img"));
  // Bound to a registry the config does not name: EIO naming the binding,
  // not blob_dir's bytes.
  opened = backend.open(ref, worker::NO_DEADLINE);
  CHECK_FALSE(opened.blob);
  REQUIRE(opened.error);
  CHECK(opened.error->err == EIO);
  CHECK_THAT(opened.error->message, Catch::Contains("binding \"img\"") && Catch::Contains("127.0.0.1:1"));
  CHECK(local->opens == 1);

  // A corrupted copy keeps the last good bindings.
  write(worker_bindings_path(dir.path()), "{\"version\": 1, \"bind");
  CHECK(backend.lookup("img"));
  REQUIRE(write_file_atomic(worker_bindings_path(dir.path()), serialize_bindings({}), 0640).empty());
  CHECK_FALSE(backend.lookup("img"));
  CHECK(backend.open(ref, worker::NO_DEADLINE).blob);
  CHECK(local->opens == 2);
}

}  // namespace
}  // namespace ondemand::bindings
