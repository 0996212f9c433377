#include "tests/unit/backends/registry/fixture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backends/registry/auth.h"

extern char** environ;

namespace ondemand::test {
namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == '\n' || s.back() == ' ')) s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

std::string base64url(std::string_view data) {
  auto s = registry::base64_encode(data);
  for (auto& c : s) {
    if (c == '+') c = '-';
    else if (c == '/') c = '_';
  }
  while (!s.empty() && s.back() == '=') s.pop_back();
  return s;
}

std::string base32_nopad(const unsigned char* data, std::size_t len) {
  static constexpr char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  std::string out;
  std::uint64_t buffer = 0;
  int bits = 0;
  for (std::size_t i = 0; i < len; ++i) {
    buffer = (buffer << 8) | data[i];
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(buffer >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += ALPHABET[(buffer << (5 - bits)) & 31];
  return out;
}

std::string query_param(const std::string& target, const std::string& name) {
  const auto q = target.find('?');
  if (q == std::string::npos) return {};
  std::stringstream ss(target.substr(q + 1));
  std::string part;
  while (std::getline(ss, part, '&')) {
    if (part.rfind(name + "=", 0) == 0) {
      std::string v = part.substr(name.size() + 1), out;
      for (std::size_t i = 0; i < v.size(); ++i) {
        if (v[i] == '%' && i + 2 < v.size()) {
          out += static_cast<char>(std::stoi(v.substr(i + 1, 2), nullptr, 16));
          i += 2;
        } else {
          out += v[i] == '+' ? ' ' : v[i];
        }
      }
      return out;
    }
  }
  return {};
}

std::size_t collect(char* data, std::size_t size, std::size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

std::size_t collect_header(char* data, std::size_t size, std::size_t n, void* user) {
  auto& headers = *static_cast<std::map<std::string, std::string>*>(user);
  std::string line(data, size * n);
  const auto colon = line.find(':');
  if (colon != std::string::npos) headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
  return size * n;
}

}  // namespace

std::uint16_t free_port() {
  UniqueFd fd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) throw std::runtime_error("bind");
  socklen_t len = sizeof addr;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  std::string out;
  for (unsigned i = 0; i < len; ++i) out += fmt::format("{:02x}", md[i]);
  return out;
}

std::string sha256_digest(std::string_view data) { return "sha256:" + sha256_hex(data); }

std::string run_command(const std::string& command) {
  std::string output;
  FILE* p = ::popen(("( " + command + " ) 2>&1").c_str(), "r");
  if (!p) throw std::runtime_error("popen " + command);
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) output.append(buf, n);
  const int status = ::pclose(p);
  if (status != 0) throw std::runtime_error(fmt::format("'{}' failed: {}", command, output));
  return output;
}

Child::Child(const std::vector<std::string>& argv, const std::filesystem::path& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int rc = ::posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("posix_spawn " + argv[0]);
}

Child::~Child() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 200; ++i) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
}

SimpleResponse simple_request(const std::string& method, const std::string& url,
                              const std::vector<std::string>& headers, std::string_view body,
                              const std::string& ca_file) {
  SimpleResponse r;
  CURL* h = curl_easy_init();
  curl_slist* list = nullptr;
  for (const auto& line : headers) list = curl_slist_append(list, line.c_str());
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &collect);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &collect_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &r.headers);
  if (!ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, ca_file.c_str());
  if (method == "HEAD") curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  if (method == "PUT" || method == "POST") {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  const auto rc = curl_easy_perform(h);
  if (rc == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(h);
  return r;
}

// ---- docker-registry ----

DockerRegistry::DockerRegistry(const std::filesystem::path& dir, const RegistryConfig& config)
    : port_(free_port()), tls_(!config.tls_cert.empty()) {
  std::filesystem::create_directories(dir / "storage");
  std::string yml = fmt::format(
      "version: 0.1\n"
      "log:\n  level: error\n  accesslog:\n    disabled: true\n"
      "storage:\n  filesystem:\n    rootdirectory: {}\n"
      "http:\n  addr: 127.0.0.1:{}\n  secret: unit-test-secret\n",
      (dir / "storage").string(), port_);
  if (tls_) yml += fmt::format("  tls:\n    certificate: {}\n    key: {}\n", config.tls_cert, config.tls_key);
  if (config.auth == RegistryConfig::Auth::htpasswd)
    yml += fmt::format("auth:\n  htpasswd:\n    realm: unit-test\n    path: {}\n", config.htpasswd_file);
  if (config.auth == RegistryConfig::Auth::token)
    yml += fmt::format(
        "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
        config.token_realm, config.token_service, config.token_issuer, config.token_rootcert);
  const auto cfg = dir / "config.yml";
  std::ofstream(cfg) << yml;
  child_ = std::make_unique<Child>(std::vector<std::string>{"/usr/bin/docker-registry", "serve", cfg.string()},
                                   dir / "registry.log");
  // Ready once /v2/ answers at all (200 or 401).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  for (;;) {
    CURL* h = curl_easy_init();
    std::string sink;
    curl_easy_setopt(h, CURLOPT_URL, (base_url() + "/v2/").c_str());
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);  // readiness probe only
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    const auto rc = curl_easy_perform(h);
    curl_easy_cleanup(h);
    if (rc == CURLE_OK) return;
    if (std::chrono::steady_clock::now() > deadline) {
      std::ifstream in(dir / "registry.log");
      std::stringstream log;
      log << in.rdbuf();
      throw std::runtime_error("docker-registry did not start: " + log.str());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string DockerRegistry::host() const { return fmt::format("127.0.0.1:{}", port_); }
std::string DockerRegistry::base_url() const { return fmt::format("{}://{}", tls_ ? "https" : "http", host()); }

std::string DockerRegistry::push_blob(const std::string& repository, std::string_view content,
                                      const std::string& auth_header, const std::string& ca_file) {
  std::vector<std::string> headers;
  if (!auth_header.empty()) headers.push_back(auth_header);
  const auto digest = sha256_digest(content);
  auto started = simple_request("POST", base_url() + "/v2/" + repository + "/blobs/uploads/", headers, "", ca_file);
  if (started.status != 202)
    throw std::runtime_error(fmt::format("upload start: status {} {}", started.status, started.body));
  auto location = started.headers["location"];
  if (location.rfind("http", 0) != 0) location = base_url() + location;
  location += (location.find('?') == std::string::npos ? "?" : "&");
  location += "digest=" + registry::query_escape(digest);
  headers.push_back("Content-Type: application/octet-stream");
  auto done = simple_request("PUT", location, headers, content, ca_file);
  if (done.status != 201) throw std::runtime_error(fmt::format("upload put: status {} {}", done.status, done.body));
  return digest;
}

// ---- raw HTTP server ----

bool Connection::send(std::string_view data) {
  while (!data.empty()) {
    const auto n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      closed_ = true;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

void Connection::stall(std::chrono::milliseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (!stopping_ && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

TestHttpServer::TestHttpServer(Handler handler) : handler_(std::move(handler)) {
  listen_ = UniqueFd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 || ::listen(listen_.get(), 128) < 0)
    throw std::runtime_error("test server: bind/listen failed");
  socklen_t len = sizeof addr;
  ::getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

TestHttpServer::~TestHttpServer() {
  stopping_ = true;
  acceptor_.join();
  std::lock_guard lock(mutex_);
  for (auto& t : threads_) t.join();
}

std::string TestHttpServer::url() const { return fmt::format("http://127.0.0.1:{}", port_); }

void TestHttpServer::accept_loop() {
  while (!stopping_) {
    pollfd p{listen_.get(), POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) continue;
    UniqueFd fd{::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC)};
    if (!fd) continue;
    std::lock_guard lock(mutex_);
    threads_.emplace_back([this, f = std::move(fd)]() mutable { serve(std::move(f)); });
  }
}

void TestHttpServer::serve(UniqueFd fd) {
  std::string buffer;
  Connection conn(fd.get(), stopping_);
  while (!stopping_ && !conn.closed()) {
    const auto end = buffer.find("\r\n\r\n");
    if (end == std::string::npos) {
      pollfd p{fd.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      char chunk[4096];
      const auto n = ::recv(fd.get(), chunk, sizeof chunk, 0);
      if (n <= 0) return;
      buffer.append(chunk, static_cast<std::size_t>(n));
      continue;
    }
    std::stringstream head(buffer.substr(0, end));
    buffer.erase(0, end + 4);
    SeenRequest rq;
    std::string line;
    std::getline(head, line);
    std::stringstream first(line);
    first >> rq.method >> rq.target;
    while (std::getline(head, line)) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) rq.headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
    }
    ++requests_;
    handler_(rq, conn);
  }
}

std::string http_response(int status, const std::vector<std::string>& headers, std::string_view body, bool head) {
  std::string out = fmt::format("HTTP/1.1 {} X\r\n", status);
  bool has_length = false;
  for (const auto& h : headers) {
    out += h + "\r\n";
    if (lower(h).rfind("content-length:", 0) == 0) has_length = true;
  }
  if (!has_length) out += fmt::format("Content-Length: {}\r\n", body.size());
  out += "\r\n";
  if (!head) out += body;
  return out;
}

void serve_blob(const SeenRequest& rq, Connection& conn, std::string_view content) {
  const bool head = rq.method == "HEAD";
  const auto range = rq.header("range");
  std::uint64_t first = 0, last = 0;
  if (!head && std::sscanf(range.c_str(), "bytes=%lu-%lu", &first, &last) == 2 && last >= first &&
      first < content.size()) {
    last = std::min<std::uint64_t>(last, content.size() - 1);
    conn.send(http_response(206,
                            {fmt::format("Content-Range: bytes {}-{}/{}", first, last, content.size())},
                            content.substr(first, last - first + 1)));
    return;
  }
  conn.send(http_response(200, {}, content, head));
  if (head) (void)0;
}

// ---- token issuer ----

TokenIssuer::TokenIssuer(const std::filesystem::path& dir, std::string service, std::string issuer)
    : service_(std::move(service)), issuer_(std::move(issuer)) {
  cert_ = (dir / "issuer.crt").string();
  key_ = (dir / "issuer.key").string();
  run_command(fmt::format("openssl req -x509 -newkey rsa:2048 -nodes -keyout {} -out {} -days 2 -subj /CN=unit-issuer",
                          key_, cert_));
  FILE* f = std::fopen(key_.c_str(), "r");
  pkey_ = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  if (!pkey_) throw std::runtime_error("cannot load issuer key");
  // libtrust's key id, which docker-registry matches against the JWT `kid`:
  // SHA-256 of the DER public key, first 240 bits, base32, groups of four.
  unsigned char* der = nullptr;
  const int der_len = i2d_PUBKEY(static_cast<EVP_PKEY*>(pkey_), &der);
  unsigned char md[32];
  unsigned int md_len = 0;
  EVP_Digest(der, static_cast<std::size_t>(der_len), md, &md_len, EVP_sha256(), nullptr);
  OPENSSL_free(der);
  const auto b32 = base32_nopad(md, 30);
  for (std::size_t i = 0; i < b32.size(); i += 4) {
    if (i) kid_ += ':';
    kid_ += b32.substr(i, 4);
  }
  server_ = std::make_unique<TestHttpServer>([this](const SeenRequest& rq, Connection& conn) {
    if (rq.target.rfind("/token", 0) != 0) {
      conn.send(http_response(404, {}, ""));
      return;
    }
    ++token_requests_;
    if (!rq.header("authorization").empty()) saw_authorization_on_token = true;
    if (delay_ms > 0) conn.stall(std::chrono::milliseconds(delay_ms.load()));
    if (!required_basic.empty() && rq.header("authorization") != "Basic " + registry::base64_encode(required_basic)) {
      conn.send(http_response(401, {}, R"({"details":"bad credentials"})"));
      return;
    }
    const auto scope = query_param(rq.target, "scope");  // repository:NAME:ACTIONS
    std::string name;
    std::vector<std::string> actions;
    if (auto a = scope.find(':'), b = scope.rfind(':'); a != std::string::npos && b > a) {
      name = scope.substr(a + 1, b - a - 1);
      std::stringstream ss(scope.substr(b + 1));
      std::string action;
      while (std::getline(ss, action, ',')) actions.push_back(action);
    }
    // Never below 0, so that a later bad_tokens_left += 1 means one more.
    int left = bad_tokens_left.load();
    bool bad = false;
    while (left > 0 && !(bad = bad_tokens_left.compare_exchange_weak(left, left - 1))) {
    }
    const auto token = mint(name, actions, expires_in, bad);
    conn.send(http_response(200, {"Content-Type: application/json"},
                            nlohmann::json{{"token", token}, {"expires_in", expires_in.load()}}.dump()));
  });
}

TokenIssuer::~TokenIssuer() {
  server_.reset();
  EVP_PKEY_free(static_cast<EVP_PKEY*>(pkey_));
}

std::string TokenIssuer::realm() const { return server_->url() + "/token"; }

std::string TokenIssuer::mint(const std::string& name, const std::vector<std::string>& actions,
                              std::int64_t expires_in_s, bool bad_signature) const {
  const auto now = static_cast<std::int64_t>(std::time(nullptr));
  unsigned char jti[8];
  RAND_bytes(jti, sizeof jti);
  const nlohmann::json header{{"typ", "JWT"}, {"alg", "RS256"}, {"kid", kid_}};
  const nlohmann::json claims{
      {"iss", issuer_}, {"sub", "unit-user"}, {"aud", service_}, {"exp", now + expires_in_s},
      {"nbf", now - 10}, {"iat", now}, {"jti", sha256_hex({reinterpret_cast<char*>(jti), sizeof jti})},
      {"access", nlohmann::json::array({{{"type", "repository"}, {"name", name}, {"actions", actions}}})}};
  const auto signing_input = base64url(header.dump()) + "." + base64url(claims.dump());
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, static_cast<EVP_PKEY*>(pkey_));
  std::size_t sig_len = 0;
  EVP_DigestSign(ctx, nullptr, &sig_len, reinterpret_cast<const unsigned char*>(signing_input.data()),
                 signing_input.size());
  std::string sig(sig_len, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &sig_len,
                 reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size());
  EVP_MD_CTX_free(ctx);
  sig.resize(sig_len);
  if (bad_signature) sig[sig.size() / 2] ^= 0x55;
  return signing_input + "." + base64url(sig);
}

}  // namespace ondemand::test
