// Real servers for the registry client tests, all on 127.0.0.1 with free
// ports: Debian's docker-registry (the CNCF distribution registry) started
// with a temp config, a raw HTTP test server for fault injection and blob
// storage behind redirects, and a token issuer that signs RS256 JWTs the
// registry verifies. Nothing here talks to a non-loopback address.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/unique_fd.h"

namespace ondemand::test {

std::uint16_t free_port();
std::string sha256_hex(std::string_view data);
std::string sha256_digest(std::string_view data);  // "sha256:<hex>"
// Runs a shell command; throws with its output on a non-zero exit.
std::string run_command(const std::string& command);

// A child process with stdout/stderr in `log`; SIGTERM then SIGKILL on
// destruction.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::filesystem::path& log);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

struct SimpleResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // lower-cased names
  std::string body;
};
// One plain libcurl exchange for test setup (pushes), no redirects followed.
SimpleResponse simple_request(const std::string& method, const std::string& url,
                              const std::vector<std::string>& headers = {}, std::string_view body = {},
                              const std::string& ca_file = "");

// docker-registry with filesystem storage in a temp dir.
struct RegistryConfig {
  enum class Auth { none, htpasswd, token } auth = Auth::none;
  std::string htpasswd_file;
  std::string token_realm, token_service, token_issuer, token_rootcert;
  std::string tls_cert, tls_key;  // https when set
};

class DockerRegistry {
 public:
  DockerRegistry(const std::filesystem::path& dir, const RegistryConfig& config);
  std::string host() const;  // "127.0.0.1:PORT"
  std::string base_url() const;
  // Pushes through the registry's upload API (POST uploads/, PUT ?digest=);
  // returns the digest. `auth_header` is a full header line or "".
  std::string push_blob(const std::string& repository, std::string_view content,
                        const std::string& auth_header = "", const std::string& ca_file = "");

 private:
  std::uint16_t port_;
  bool tls_;
  std::unique_ptr<Child> child_;
};

// ---- raw HTTP server ----

struct SeenRequest {
  std::string method, target;
  std::map<std::string, std::string> headers;  // lower-cased names
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

class Connection {
 public:
  explicit Connection(int fd, const std::atomic<bool>& stopping) : fd_(fd), stopping_(stopping) {}
  bool send(std::string_view data);
  void close() { closed_ = true; }
  bool closed() const { return closed_; }
  // Sleeps up to `d`, returning early when the server stops.
  void stall(std::chrono::milliseconds d);

 private:
  int fd_;
  const std::atomic<bool>& stopping_;
  bool closed_ = false;
};

// Serves each connection on its own thread, keep-alive, requests without
// bodies (GET/HEAD). The handler writes the whole raw response.
class TestHttpServer {
 public:
  using Handler = std::function<void(const SeenRequest&, Connection&)>;
  explicit TestHttpServer(Handler handler);
  ~TestHttpServer();
  std::uint16_t port() const { return port_; }
  std::string url() const;
  std::size_t requests() const { return requests_.load(); }

 private:
  void accept_loop();
  void serve(UniqueFd fd);

  Handler handler_;
  UniqueFd listen_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> requests_{0};
  std::mutex mutex_;
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

std::string http_response(int status, const std::vector<std::string>& headers, std::string_view body,
                          bool head = false);

// Answers a blob GET/HEAD like a registry: Range honoured with 206.
void serve_blob(const SeenRequest& rq, Connection& conn, std::string_view content);

// ---- token issuer ----

// An RSA key with a self-signed certificate (the registry's rootcertbundle)
// and an HTTP endpoint GET /token?service=&scope= that grants what is asked
// (or refuses without the right basic credentials).
class TokenIssuer {
 public:
  TokenIssuer(const std::filesystem::path& dir, std::string service, std::string issuer);
  ~TokenIssuer();
  std::string realm() const;
  const std::string& cert_file() const { return cert_; }
  const std::string& service() const { return service_; }
  const std::string& issuer() const { return issuer_; }
  // A signed JWT granting `actions` on repository `name`.
  std::string mint(const std::string& name, const std::vector<std::string>& actions,
                   std::int64_t expires_in, bool bad_signature = false) const;

  std::size_t token_requests() const { return token_requests_.load(); }
  std::atomic<int> expires_in{300};
  std::atomic<int> delay_ms{0};
  std::atomic<int> bad_tokens_left{0};  // serve this many wrongly signed tokens first
  std::string required_basic;           // "user:password" or "" for anonymous
  std::atomic<bool> saw_authorization_on_token{false};

 private:
  std::string service_, issuer_, cert_, key_;
  void* pkey_ = nullptr;  // EVP_PKEY*
  std::string kid_;
  std::atomic<std::size_t> token_requests_{0};
  std::unique_ptr<TestHttpServer> server_;
};

}  // namespace ondemand::test
