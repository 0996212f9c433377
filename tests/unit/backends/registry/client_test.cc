// The registry client against real servers on loopback: Debian's
// docker-registry (anonymous, htpasswd, token auth with JWTs it verifies,
// https with a test CA) and in-test HTTP servers that misbehave on purpose.
#include "backends/registry/client.h"

#include <sys/stat.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <future>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "backends/registry/registry_backend.h"
#include "tests/unit/backends/registry/fixture.h"
#include "tests/unit/test_util.h"

namespace ondemand::registry {
namespace {

using namespace std::chrono_literals;
using test::Connection;
using test::SeenRequest;

Clock::time_point in(std::chrono::milliseconds d) { return Clock::now() + d; }

std::string read_str(RegistryClient& client, const BlobRef& blob, std::uint64_t off, std::size_t len,
                     Error* error_out = nullptr, std::chrono::milliseconds deadline = 10s,
                     std::uint64_t size_hint = 0) {
  std::vector<std::byte> buf(len, std::byte{0xAA});
  auto err = client.read(blob, off, buf, in(deadline), size_hint);
  if (error_out) *error_out = err;
  if (err) return "<error: " + err.message + ">";
  return {reinterpret_cast<const char*>(buf.data()), buf.size()};
}

RegistryOptions plain(const std::string& host) {
  RegistryOptions o;
  o.registry = host;
  o.insecure_http = true;
  o.connect_timeout = 1000ms;
  o.stall_timeout = 1000ms;
  o.backoff_initial = 20ms;
  o.backoff_max = 200ms;
  return o;
}

std::filesystem::path write_credentials(const test::TempDir& dir, const std::string& user,
                                        const std::string& password, mode_t mode = 0600,
                                        const std::string& name = "creds.json") {
  const auto path = dir.path() / name;
  const auto tmp = dir.path() / (name + ".tmp");
  std::ofstream(tmp) << nlohmann::json{{"username", user}, {"password", password}}.dump();
  ::chmod(tmp.c_str(), mode);
  std::filesystem::rename(tmp, path);  // a rotation: new inode
  return path;
}

// A registry front in the test process: serves `content` for any blob path
// (Range honoured) unless the next fault in the script says otherwise.
struct FaultFront {
  enum class Fault { none, status503, status429, drop_mid_body, stall, ignore_range, short_body,
                     wrong_range, hold };
  std::mutex mutex;
  std::vector<Fault> script;  // consumed front to back, one per GET
  int retry_after_s = 1;
  std::string content;
  std::atomic<int> gets{0};
  std::atomic<bool> release{false};
  test::TestHttpServer server;

  explicit FaultFront(std::string blob)
      : content(std::move(blob)), server([this](const SeenRequest& rq, Connection& c) { handle(rq, c); }) {}
  std::string host() const { return fmt::format("127.0.0.1:{}", server.port()); }

  void handle(const SeenRequest& rq, Connection& conn) {
    if (rq.method != "GET") {
      test::serve_blob(rq, conn, content);
      return;
    }
    ++gets;
    Fault fault = Fault::none;
    {
      std::lock_guard lock(mutex);
      if (!script.empty()) {
        fault = script.front();
        script.erase(script.begin());
      }
    }
    switch (fault) {
      case Fault::none: test::serve_blob(rq, conn, content); return;
      case Fault::status503: conn.send(test::http_response(503, {}, "busy")); return;
      case Fault::status429:
        conn.send(test::http_response(429, {fmt::format("Retry-After: {}", retry_after_s)}, "slow down"));
        return;
      case Fault::drop_mid_body: {
        // Promise the whole range, send half of it, hang up.
        std::uint64_t first = 0, last = 0;
        std::sscanf(rq.header("range").c_str(), "bytes=%lu-%lu", &first, &last);
        const auto body = std::string_view(content).substr(first, last - first + 1);
        conn.send(fmt::format("HTTP/1.1 206 X\r\nContent-Range: bytes {}-{}/{}\r\nContent-Length: {}\r\n\r\n",
                              first, last, content.size(), body.size()));
        conn.send(body.substr(0, body.size() / 2));
        conn.close();
        return;
      }
      case Fault::stall:
        conn.send("HTTP/1.1 206 X\r\n");  // connected, then nothing
        conn.stall(30s);
        conn.close();
        return;
      case Fault::ignore_range: conn.send(test::http_response(200, {}, content)); return;
      case Fault::short_body: {
        // A consistent but short answer: the right Content-Range, fewer bytes.
        std::uint64_t first = 0, last = 0;
        std::sscanf(rq.header("range").c_str(), "bytes=%lu-%lu", &first, &last);
        const auto body = std::string_view(content).substr(first, (last - first + 1) / 2);
        conn.send(test::http_response(
            206, {fmt::format("Content-Range: bytes {}-{}/{}", first, last, content.size())}, body));
        return;
      }
      case Fault::wrong_range: {
        conn.send(test::http_response(
            206, {fmt::format("Content-Range: bytes 0-9/{}", content.size())}, content.substr(0, 10)));
        return;
      }
      case Fault::hold:
        while (!release) conn.stall(10ms);
        test::serve_blob(rq, conn, content);
        return;
    }
  }
};

// Everything logged while it lives, at every level: the secret greps.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto logger = std::make_shared<spdlog::logger>(
        "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(out_));
    logger->set_level(spdlog::level::trace);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() const { return out_.str(); }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream out_;
};

const std::string SOME_DIGEST = test::sha256_digest("anything");

}  // namespace

TEST_CASE("parse_challenge reads bearer and basic challenges", "[registry]") {
  auto c = parse_challenge(
      R"(Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push")");
  REQUIRE(c);
  CHECK(c->scheme == "bearer");
  CHECK(c->param("realm") == "https://auth.example/token");
  CHECK(c->param("service") == "registry.example");
  CHECK(c->param("scope") == "repository:a/b:pull,push");
  auto b = parse_challenge(R"(Basic realm="x\"y")");
  REQUIRE(b);
  CHECK(b->scheme == "basic");
  CHECK(b->param("realm") == "x\"y");
  CHECK_FALSE(parse_challenge(""));
  CHECK_FALSE(parse_challenge(R"(Bearer realm="unterminated)"));
}

TEST_CASE("parse_content_range accepts only well-formed ranges", "[registry]") {
  auto r = parse_content_range("bytes 10-19/100");
  REQUIRE(r);
  CHECK(r->first == 10);
  CHECK(r->last == 19);
  CHECK(r->total == 100u);
  CHECK(parse_content_range("bytes 0-0/*"));
  CHECK_FALSE(parse_content_range("bytes 19-10/100"));
  CHECK_FALSE(parse_content_range("bytes 10-19/15"));
  CHECK_FALSE(parse_content_range("items 0-1/2"));
  CHECK_FALSE(parse_content_range("bytes 1-x/2"));
}

TEST_CASE("repository and digest are validated before anything is sent", "[registry]") {
  CHECK(validate_repository("library/busybox").empty());
  CHECK(validate_repository("a/b-c/d_e.f").empty());
  CHECK_FALSE(validate_repository("Upper").empty());
  CHECK_FALSE(validate_repository("../etc").empty());
  CHECK_FALSE(validate_repository("").empty());
  CHECK(validate_digest(SOME_DIGEST).empty());
  CHECK_FALSE(validate_digest("sha256:abc").empty());
  CHECK_FALSE(validate_digest("md5:00").empty());
  RegistryClient client(plain("127.0.0.1:1"));
  auto r = client.blob_size({"UPPER", SOME_DIGEST}, in(1s));
  CHECK(r.error.kind == ErrorKind::invalid);
  CHECK_THAT(r.error.message, Catch::Contains("UPPER"));
}

TEST_CASE("anonymous: HEAD gives the size, ranged reads give the exact bytes", "[registry]") {
  test::TempDir dir;
  test::DockerRegistry registry(dir.path(), {});
  const auto content = test::pattern_bytes(3 * 1024 * 1024 + 17);
  const auto digest = registry.push_blob("test/plain", content);
  RegistryClient client(plain(registry.host()));
  const BlobRef blob{"test/plain", digest};

  auto size = client.blob_size(blob, in(5s));
  REQUIRE_FALSE(size.error);
  CHECK(size.size == content.size());

  struct Case { std::uint64_t off; std::size_t len; };
  for (auto [off, len] : {Case{0, 1}, Case{0, 4096}, Case{1, 4095}, Case{4096, 1 << 20},
                          Case{12345, 777}, Case{content.size() - 1, 1},
                          Case{content.size() - 5000, 5000}, Case{0, content.size()}}) {
    INFO("off=" << off << " len=" << len);
    CHECK(read_str(client, blob, off, len) == content.substr(off, len));
  }
}

TEST_CASE("a wrong digest is NOT_FOUND naming the digest", "[registry]") {
  test::TempDir dir;
  test::DockerRegistry registry(dir.path(), {});
  registry.push_blob("test/plain", "some bytes");
  RegistryClient client(plain(registry.host()));
  const BlobRef missing{"test/plain", SOME_DIGEST};
  auto size = client.blob_size(missing, in(5s));
  CHECK(size.error.kind == ErrorKind::not_found);
  CHECK_THAT(size.error.message, Catch::Contains(SOME_DIGEST));
  Error err;
  read_str(client, missing, 0, 10, &err);
  CHECK(err.kind == ErrorKind::not_found);
  CHECK_THAT(err.message, Catch::Contains(SOME_DIGEST));
  CHECK(to_errno(err.kind) == ENOENT);
}

TEST_CASE("an unreachable registry is an error within the deadline, never a hang", "[registry]") {
  RegistryClient client(plain(fmt::format("127.0.0.1:{}", test::free_port())));
  const auto start = Clock::now();
  Error err;
  read_str(client, {"test/plain", SOME_DIGEST}, 0, 10, &err, 1500ms);
  const auto took = Clock::now() - start;
  CHECK(err.kind == ErrorKind::timeout);
  CHECK_THAT(err.message, Catch::Contains("127.0.0.1"));
  CHECK(took < 1500ms + 3s);  // bounded by the deadline (slack for a loaded machine)
  CHECK(client.stats().retries > 0);
}

TEST_CASE("basic auth against htpasswd; bad or rotated credentials; 0600 enforced", "[registry]") {
  test::TempDir dir;
  const auto htpasswd = dir.path() / "htpasswd";
  test::run_command(fmt::format("htpasswd -Bbn alice s3cret-pw > {}", htpasswd.string()));
  test::RegistryConfig config;
  config.auth = test::RegistryConfig::Auth::htpasswd;
  config.htpasswd_file = htpasswd.string();
  test::DockerRegistry registry(dir.path(), config);
  const auto content = test::pattern_bytes(100000, 3);
  const auto digest = registry.push_blob("test/basic", content,
                                         "Authorization: Basic " + base64_encode("alice:s3cret-pw"));
  const BlobRef blob{"test/basic", digest};
  LogCapture log;

  SECTION("anonymous is refused with PERMISSION naming the registry") {
    RegistryClient client(plain(registry.host()));
    Error err;
    read_str(client, blob, 0, 10, &err);
    CHECK(err.kind == ErrorKind::permission);
    CHECK_THAT(err.message, Catch::Contains(registry.host()));
  }
  SECTION("right credentials read; a wrong password is PERMISSION; a rotated file is picked up") {
    auto options = plain(registry.host());
    options.credentials_file = write_credentials(dir, "alice", "wrong-pw");
    RegistryClient client(options);
    Error err;
    read_str(client, blob, 0, 10, &err);
    CHECK(err.kind == ErrorKind::permission);
    CHECK_THAT(err.message, Catch::Contains(registry.host()));
    CHECK_THAT(err.message, !Catch::Contains("wrong-pw"));

    write_credentials(dir, "alice", "s3cret-pw");
    CHECK(read_str(client, blob, 500, 1000) == content.substr(500, 1000));
    auto size = client.blob_size(blob, in(5s));
    CHECK(size.size == content.size());
    // Logged: the refusal, naming the registry; never a password.
    CHECK_THAT(log.text(), Catch::Contains(registry.host()));
    for (const auto* secret : {"s3cret-pw", "wrong-pw"}) CHECK_THAT(log.text(), !Catch::Contains(secret));
    CHECK_THAT(log.text(), !Catch::Contains(base64_encode("alice:s3cret-pw")));
    CHECK_THAT(log.text(), !Catch::Contains(base64_encode("alice:wrong-pw")));
  }
  SECTION("a credentials file readable by others is refused, naming the file") {
    auto options = plain(registry.host());
    options.credentials_file = write_credentials(dir, "alice", "s3cret-pw", 0644);
    RegistryClient client(options);
    Error err;
    read_str(client, blob, 0, 10, &err);
    CHECK(err.kind == ErrorKind::permission);
    CHECK_THAT(err.message, Catch::Contains("creds.json") && Catch::Contains("0644"));
  }
}

TEST_CASE("token auth: JWTs from our issuer, accepted by docker-registry", "[registry]") {
  test::TempDir dir;
  test::TokenIssuer issuer(dir.path(), "unit-registry", "unit-issuer");
  test::RegistryConfig config;
  config.auth = test::RegistryConfig::Auth::token;
  config.token_realm = issuer.realm();
  config.token_service = issuer.service();
  config.token_issuer = issuer.issuer();
  config.token_rootcert = issuer.cert_file();
  test::DockerRegistry registry(dir.path(), config);
  const auto content = test::pattern_bytes(2 * 1024 * 1024, 5);
  const auto digest = registry.push_blob(
      "test/token", content, "Authorization: Bearer " + issuer.mint("test/token", {"pull", "push"}, 300));
  const BlobRef blob{"test/token", digest};
  const auto fetches_at_start = issuer.token_requests();

  SECTION("32 concurrent reads share one token fetch") {
    issuer.delay_ms = 300;  // every reader arrives while the fetch is in flight
    RegistryClient client(plain(registry.host()));
    std::vector<std::future<bool>> reads;
    for (int i = 0; i < 32; ++i)
      reads.push_back(std::async(std::launch::async, [&, i] {
        const std::uint64_t off = static_cast<std::uint64_t>(i) * 4096;
        return read_str(client, blob, off, 4096) == content.substr(off, 4096);
      }));
    int ok = 0;
    for (auto& r : reads) ok += r.get() ? 1 : 0;
    CHECK(ok == 32);
    CHECK(issuer.token_requests() - fetches_at_start == 1);
    CHECK(client.stats().token_fetches == 1);
  }
  SECTION("a token the registry rejects (401) is replaced once, the read succeeds") {
    issuer.bad_tokens_left = 1;
    RegistryClient client(plain(registry.host()));
    CHECK(read_str(client, blob, 100, 100) == content.substr(100, 100));
    CHECK(issuer.token_requests() - fetches_at_start == 2);
  }
  SECTION("a token is refreshed ahead of its expiry without failing reads") {
    issuer.expires_in = 2;  // refresh point at 1.4..1.7 s
    RegistryClient client(plain(registry.host()));
    CHECK(read_str(client, blob, 0, 10) == content.substr(0, 10));
    CHECK(issuer.token_requests() - fetches_at_start == 1);
    std::this_thread::sleep_for(1800ms);
    std::vector<std::future<bool>> reads;
    for (int i = 0; i < 8; ++i)
      reads.push_back(std::async(std::launch::async, [&, i] {
        return read_str(client, blob, i * 1000, 1000) == content.substr(i * 1000, 1000);
      }));
    for (auto& r : reads) CHECK(r.get());
    CHECK(issuer.token_requests() - fetches_at_start == 2);
  }
  SECTION("basic credentials go to the token endpoint; bad ones are PERMISSION naming the registry") {
    LogCapture log;
    issuer.required_basic = "bob:tok3n-pw";
    auto options = plain(registry.host());
    options.credentials_file = write_credentials(dir, "bob", "not-it");
    RegistryClient client(options);
    Error err;
    read_str(client, blob, 0, 10, &err);
    CHECK(err.kind == ErrorKind::permission);
    CHECK_THAT(err.message, Catch::Contains(registry.host()));
    write_credentials(dir, "bob", "tok3n-pw");
    CHECK(read_str(client, blob, 0, 10) == content.substr(0, 10));
    CHECK(issuer.saw_authorization_on_token);
    CHECK_THAT(log.text(), Catch::Contains(registry.host()));
    CHECK_THAT(log.text(), !Catch::Contains("tok3n-pw") && !Catch::Contains("not-it"));
    CHECK_THAT(log.text(), !Catch::Contains(base64_encode("bob:tok3n-pw")));
    CHECK_THAT(log.text(), !Catch::Contains("eyJ"));  // every JWT starts so
  }
}

TEST_CASE("https: verified against the configured CA; refused without it", "[registry]") {
  test::TempDir dir;
  const auto d = dir.path().string();
  test::run_command(fmt::format(
      "cd {0} && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=unit-ca"
      " && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1"
      " && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext"
      " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2"
      " -extfile san.ext",
      d));
  test::RegistryConfig config;
  config.tls_cert = d + "/server.crt";
  config.tls_key = d + "/server.key";
  test::DockerRegistry registry(dir.path(), config);
  const auto content = test::pattern_bytes(50000, 9);
  // Push over the same TLS: the fixture's simple_request does not verify.
  RegistryOptions options;
  options.registry = registry.host();
  options.ca_file = d + "/ca.crt";
  options.stall_timeout = 1000ms;

  SECTION("with the CA") {
    const auto digest = registry.push_blob("test/tls", content, "", options.ca_file);
    RegistryClient client(options);
    CHECK(read_str(client, {"test/tls", digest}, 1000, 2000) == content.substr(1000, 2000));
  }
  SECTION("without the CA: a TLS error, never a fallback to http") {
    options.ca_file.clear();
    RegistryClient client(options);
    Error err;
    read_str(client, {"test/tls", SOME_DIGEST}, 0, 10, &err, 3s);
    CHECK(err.kind == ErrorKind::permission);
    CHECK_THAT(err.message, Catch::Contains("TLS"));
  }
}

TEST_CASE("fault front: each fault gives the right bytes or a clear error in time", "[registry]") {
  const auto content = test::pattern_bytes(256 * 1024, 11);
  FaultFront front(content);
  RegistryClient client(plain(front.host()));
  const BlobRef blob{"test/faults", test::sha256_digest(content)};
  using F = FaultFront::Fault;
  auto with_script = [&](std::vector<F> s) {
    std::lock_guard lock(front.mutex);
    front.script = std::move(s);
  };
  const std::uint64_t off = 8192;
  const std::size_t len = 65536;
  const auto want = content.substr(off, len);

  SECTION("503 then 200") {
    with_script({F::status503, F::status503});
    CHECK(read_str(client, blob, off, len) == want);
    CHECK(front.gets == 3);
  }
  SECTION("429 with Retry-After is honoured") {
    with_script({F::status429});
    CHECK(read_str(client, blob, off, len) == want);
    CHECK(front.gets == 2);
  }
  SECTION("429 whose Retry-After is past the deadline fails at once, saying so") {
    front.retry_after_s = 100;
    with_script({F::status429});
    Error err;
    read_str(client, blob, off, len, &err, 2s);
    CHECK(err.kind == ErrorKind::timeout);
    CHECK_THAT(err.message, Catch::Contains("Retry-After"));
    CHECK(front.gets == 1);
  }
  SECTION("a connection dropped mid-body is retried") {
    with_script({F::drop_mid_body});
    CHECK(read_str(client, blob, off, len) == want);
    CHECK(front.gets == 2);
  }
  SECTION("a stalled response is a timeout, then retried") {
    with_script({F::stall});
    CHECK(read_str(client, blob, off, len) == want);
    CHECK(front.gets == 2);
  }
  SECTION("a server that always stalls fails at the deadline, never hangs") {
    with_script(std::vector<F>(50, F::stall));
    Error err;
    const auto start = Clock::now();
    read_str(client, blob, off, len, &err, 2500ms);
    CHECK(err.kind == ErrorKind::timeout);
    CHECK_THAT(err.message, Catch::Contains(blob.digest));
    CHECK(Clock::now() - start < 2500ms + 3s);
  }
  SECTION("a 200 that ignores Range: the slice is cut out when the blob size is known") {
    with_script({F::ignore_range});
    CHECK(read_str(client, blob, off, len, nullptr, 10s, content.size()) == want);
    CHECK(front.gets == 1);
  }
  SECTION("a 200 that ignores Range with the size unknown is a PROTOCOL error") {
    with_script({F::ignore_range});
    Error err;
    read_str(client, blob, off, len, &err);
    CHECK(err.kind == ErrorKind::protocol);
    CHECK_THAT(err.message, Catch::Contains("ignored Range"));
  }
  SECTION("a short body is never returned as the range") {
    with_script({F::short_body});
    Error err;
    read_str(client, blob, off, len, &err);
    CHECK(err.kind == ErrorKind::protocol);
    CHECK_THAT(err.message, Catch::Contains("short body"));
  }
  SECTION("a 206 for another range is a PROTOCOL error") {
    with_script({F::wrong_range});
    Error err;
    read_str(client, blob, off, len, &err);
    CHECK(err.kind == ErrorKind::protocol);
    CHECK_THAT(err.message, Catch::Contains("Content-Range"));
  }
  SECTION("concurrent reads of one range are one fetch") {
    with_script({F::hold});
    std::vector<std::future<std::string>> reads;
    for (int i = 0; i < 8; ++i)
      reads.push_back(std::async(std::launch::async, [&] { return read_str(client, blob, off, len); }));
    // The first fetch is held until every other reader has joined it.
    CHECK(test::eventually([&] { return client.stats().coalesced_reads == 7; }));
    front.release = true;
    for (auto& r : reads) CHECK(r.get() == want);
    CHECK(front.gets == 1);
  }
}

TEST_CASE("redirects: followed by hand, no credentials to the other host, remembered, dropped on failure",
          "[registry]") {
  const auto content = test::pattern_bytes(300000, 13);
  const auto digest = test::sha256_digest(content);
  std::atomic<int> storage_refusals{0};
  std::atomic<bool> storage_saw_authorization{false};
  std::atomic<int> signature{1};
  test::TestHttpServer storage([&](const SeenRequest& rq, Connection& conn) {
    if (!rq.header("authorization").empty()) storage_saw_authorization = true;
    // A signed URL that expired: only the latest signature is good.
    if (rq.target.find(fmt::format("sig={}", signature.load())) == std::string::npos) {
      ++storage_refusals;
      conn.send(test::http_response(403, {}, "expired"));
      return;
    }
    test::serve_blob(rq, conn, content);
  });
  std::atomic<int> registry_gets{0};
  test::TestHttpServer front([&](const SeenRequest& rq, Connection& conn) {
    if (rq.header("authorization") != "Basic " + base64_encode("carol:redir-pw")) {
      conn.send(test::http_response(401, {R"(WWW-Authenticate: Basic realm="unit")"}, ""));
      return;
    }
    ++registry_gets;
    conn.send(test::http_response(
        307, {fmt::format("Location: {}/storage/blob?sig={}", storage.url(), signature.load())}, ""));
  });
  test::TempDir dir;
  auto options = plain(fmt::format("127.0.0.1:{}", front.port()));
  options.credentials_file = write_credentials(dir, "carol", "redir-pw");
  RegistryClient client(options);
  const BlobRef blob{"test/redirect", digest};

  CHECK(read_str(client, blob, 0, 1000) == content.substr(0, 1000));
  CHECK(registry_gets == 1);
  CHECK_FALSE(storage_saw_authorization);
  // Remembered: the next read goes straight to storage.
  CHECK(read_str(client, blob, 1000, 1000) == content.substr(1000, 1000));
  CHECK(registry_gets == 1);
  // The signed URL expires: the remembered target is dropped, the registry
  // hands out a fresh one, the read still succeeds.
  signature = 2;
  CHECK(read_str(client, blob, content.size() - 1, 1) == content.substr(content.size() - 1));
  CHECK(registry_gets == 2);
  CHECK(storage_refusals == 1);
  CHECK(client.stats().redirects_dropped == 1);
  CHECK_FALSE(storage_saw_authorization);
}

TEST_CASE("RegistryBackend: bound ids open with the registry's size, unbound ids are ENOENT", "[registry]") {
  test::TempDir dir;
  test::DockerRegistry registry(dir.path(), {});
  const auto content = test::pattern_bytes(40000, 17);
  const auto digest = registry.push_blob("test/backend", content);
  auto client = std::make_shared<RegistryClient>(plain(registry.host()));
  RegistryBackend backend(client, [&](std::string_view id) -> std::optional<RegistrySource> {
    if (id == "img") return RegistrySource{{"test/backend", digest}, 0};
    if (id == "gone") return RegistrySource{{"test/backend", SOME_DIGEST}, 0};
    return std::nullopt;
  }, 5s);
  auto opened = backend.open({"", "img"}, worker::NO_DEADLINE);
  REQUIRE(opened.blob);
  CHECK(opened.blob->size() == content.size());
  std::vector<std::byte> buf(8192, std::byte{0xAA});
  REQUIRE_FALSE(opened.blob->read(36864, buf, worker::NO_DEADLINE));  // crosses the end: tail is zeros
  const std::string got(reinterpret_cast<const char*>(buf.data()), buf.size());
  CHECK(got.substr(0, content.size() - 36864) == content.substr(36864));
  CHECK(got.substr(content.size() - 36864) == std::string(8192 - (content.size() - 36864), '\0'));
  CHECK(backend.open({"", "nope"}, worker::NO_DEADLINE).error->err == ENOENT);
  CHECK(backend.open({"", "gone"}, worker::NO_DEADLINE).error->err == ENOENT);
  CHECK_THAT(backend.describe(), Catch::Contains(registry.host()));
}

}  // namespace ondemand::registry
