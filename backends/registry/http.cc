#include "backends/registry/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <charconv>
#include <mutex>
#include <stdexcept>

namespace ondemand::registry {
namespace {

constexpr std::size_t MAX_KEPT_BODY = 1 << 20;
constexpr std::size_t MAX_IDLE_PER_ORIGIN = 8;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

// State of one curl_easy_perform, reached from libcurl's callbacks.
struct Transfer {
  const HttpRequest& request;
  HttpResponse& response;
  CURL* handle;
  Clock::time_point last_progress = Clock::now();
  curl_off_t last_dlnow = 0;
  bool stalled = false;
  bool past_deadline = false;
  bool begun = false;
  bool sink_stopped = false;

  bool begin() {
    begun = true;
    curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &response.status);
    if (request.sink && !request.sink->begin(response.status, response.headers)) {
      sink_stopped = true;
      return false;
    }
    return true;
  }
};

std::size_t on_header(char* data, std::size_t size, std::size_t n, void* user) {
  auto& t = *static_cast<Transfer*>(user);
  const std::size_t len = size * n;
  std::string_view line(data, len);
  t.last_progress = Clock::now();
  // A new status line (after a 1xx) starts a new header set.
  if (line.starts_with("HTTP/")) {
    t.response.headers.clear();
    return len;
  }
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) return len;
  auto name = lower(std::string(trim(line.substr(0, colon))));
  t.response.headers.emplace(std::move(name), std::string(trim(line.substr(colon + 1))));
  return len;
}

constexpr long RECEIVE_BUFFER_BYTES = 1L << 20;

std::size_t on_body(char* data, std::size_t size, std::size_t n, void* user) {
  auto& t = *static_cast<Transfer*>(user);
  const std::size_t len = size * n;
  t.last_progress = Clock::now();
  if (!t.begun && !t.begin()) return 0;
  if (t.request.sink) {
    if (!t.request.sink->write({data, len})) {
      t.sink_stopped = true;
      return 0;
    }
    return len;
  }
  if (t.response.body.size() + len > MAX_KEPT_BODY) return 0;
  t.response.body.append(data, len);
  return len;
}

// Called often while bytes flow, about once a second when idle: enough to
// turn a stalled server into an error instead of a reader that hangs.
int on_progress(void* user, curl_off_t, curl_off_t dlnow, curl_off_t, curl_off_t) {
  auto& t = *static_cast<Transfer*>(user);
  const auto now = Clock::now();
  if (dlnow != t.last_dlnow) {
    t.last_dlnow = dlnow;
    t.last_progress = now;
  }
  if (now >= t.request.deadline) {
    t.past_deadline = true;
    return 1;
  }
  if (now - t.last_progress >= t.request.stall_timeout) {
    t.stalled = true;
    return 1;
  }
  return 0;
}

Transport classify(CURLcode rc, const Transfer& t) {
  switch (rc) {
    case CURLE_OK: return Transport::ok;
    case CURLE_WRITE_ERROR: return t.sink_stopped ? Transport::aborted_by_sink : Transport::other;
    case CURLE_ABORTED_BY_CALLBACK: return t.past_deadline ? Transport::deadline : Transport::stalled;
    case CURLE_OPERATION_TIMEDOUT: {
      if (Clock::now() >= t.request.deadline) return Transport::deadline;
      curl_off_t connected = 0;
      curl_easy_getinfo(t.handle, CURLINFO_CONNECT_TIME_T, &connected);
      return connected == 0 ? Transport::connect_failed : Transport::stalled;
    }
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return Transport::connect_failed;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CONNECT_ERROR: return Transport::tls_failed;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: return Transport::broken;
    default: return Transport::other;
  }
}

}  // namespace

// Idle easy handles per origin (each keeps its live connection), and one
// share handle so DNS answers and TLS sessions are shared across handles.
struct HttpClient::Pool {
  std::mutex mutex;
  std::map<std::string, std::vector<CURL*>> idle;
  CURLSH* share = nullptr;
  std::array<std::mutex, CURL_LOCK_DATA_LAST> share_locks;
  std::atomic<std::uint64_t> requests{0};

  static void lock(CURL*, curl_lock_data data, curl_lock_access, void* user) {
    static_cast<Pool*>(user)->share_locks[data].lock();
  }
  static void unlock(CURL*, curl_lock_data data, void* user) {
    static_cast<Pool*>(user)->share_locks[data].unlock();
  }

  Pool() {
    share = curl_share_init();
    if (!share) throw std::runtime_error("curl_share_init failed");
    curl_share_setopt(share, CURLSHOPT_LOCKFUNC, &Pool::lock);
    curl_share_setopt(share, CURLSHOPT_UNLOCKFUNC, &Pool::unlock);
    curl_share_setopt(share, CURLSHOPT_USERDATA, this);
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  }
  ~Pool() {
    for (auto& [origin, handles] : idle)
      for (CURL* h : handles) curl_easy_cleanup(h);
    curl_share_cleanup(share);
  }

  CURL* take(const std::string& origin) {
    {
      std::lock_guard lock(mutex);
      auto it = idle.find(origin);
      if (it != idle.end() && !it->second.empty()) {
        CURL* h = it->second.back();
        it->second.pop_back();
        return h;
      }
    }
    CURL* h = curl_easy_init();
    if (!h) throw std::runtime_error("curl_easy_init failed");
    return h;
  }

  // A handle whose transfer broke is closed rather than pooled: its
  // connection is in an unknown state.
  void give(const std::string& origin, CURL* h, bool reusable) {
    curl_easy_reset(h);
    if (reusable) {
      std::lock_guard lock(mutex);
      auto& handles = idle[origin];
      if (handles.size() < MAX_IDLE_PER_ORIGIN) {
        handles.push_back(h);
        return;
      }
    }
    curl_easy_cleanup(h);
  }
};

namespace {

// curl_global_init is not thread-safe; every entry point goes through here.
void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

HttpClient::HttpClient() {
  global_init();
  pool_ = std::make_unique<Pool>();
}

HttpClient::~HttpClient() = default;

std::uint64_t HttpClient::requests() const { return pool_->requests.load(); }

HttpResponse HttpClient::perform(const HttpRequest& request) {
  HttpResponse response;
  const auto now = Clock::now();
  if (now >= request.deadline) {
    response.transport = Transport::deadline;
    response.transport_message = "deadline passed before the request was sent";
    return response;
  }
  const auto remaining =
      std::chrono::duration_cast<std::chrono::milliseconds>(request.deadline - now).count() + 1;
  const auto origin = url_origin(request.url);
  CURL* h = pool_->take(origin);
  pool_->requests.fetch_add(1, std::memory_order_relaxed);
  Transfer transfer{request, response, h};

  curl_slist* headers = nullptr;
  for (const auto& line : request.headers) headers = curl_slist_append(headers, line.c_str());
  char errbuf[CURL_ERROR_SIZE] = {};

  curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(h, CURLOPT_SHARE, pool_->share);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!request.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, request.ca_file.c_str());
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(std::min<long long>(request.connect_timeout.count(), remaining)));
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(remaining));
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  // Receive in large pieces: a blob range is megabytes, and libcurl's 16 KiB
  // default costs a recv and a callback per 16 KiB.
  curl_easy_setopt(h, CURLOPT_BUFFERSIZE, RECEIVE_BUFFER_BYTES);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  if (request.method == "HEAD") curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &transfer);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &on_progress);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, &transfer);

  const CURLcode rc = curl_easy_perform(h);
  if (rc == CURLE_OK && !transfer.begun && !transfer.begin()) transfer.sink_stopped = true;
  if (rc != CURLE_OK || response.status == 0)
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response.status);
  curl_off_t length = -1;
  if (curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length) == CURLE_OK)
    response.content_length = length;
  response.transport = classify(rc, transfer);
  if (rc != CURLE_OK) {
    response.transport_message = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (transfer.stalled) response.transport_message = "stalled: no bytes for the stall timeout";
  }
  curl_slist_free_all(headers);
  pool_->give(origin, h, rc == CURLE_OK);
  return response;
}

namespace {

struct Url {
  CURLU* u = curl_url();
  ~Url() { curl_url_cleanup(u); }
  std::string get(CURLUPart part, unsigned flags = 0) const {
    char* out = nullptr;
    if (curl_url_get(u, part, &out, flags) != CURLUE_OK) return {};
    std::string s(out);
    curl_free(out);
    return s;
  }
};

}  // namespace

std::string url_origin(const std::string& url) {
  Url u;
  if (curl_url_set(u.u, CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) return {};
  return lower(u.get(CURLUPART_SCHEME) + "://" + u.get(CURLUPART_HOST) + ":" +
               u.get(CURLUPART_PORT, CURLU_DEFAULT_PORT));
}

std::uint16_t url_port(const std::string& url) {
  Url u;
  if (curl_url_set(u.u, CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) return 0;
  const auto port = u.get(CURLUPART_PORT, CURLU_DEFAULT_PORT);
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value > 65535) return 0;
  return static_cast<std::uint16_t>(value);
}

CaStore default_ca_store() {
  global_init();
  CaStore store;
  CURL* h = curl_easy_init();
  if (!h) return store;
  char* text = nullptr;
  if (curl_easy_getinfo(h, CURLINFO_CAINFO, &text) == CURLE_OK && text) store.file = text;
  text = nullptr;
  if (curl_easy_getinfo(h, CURLINFO_CAPATH, &text) == CURLE_OK && text) store.dir = text;
  curl_easy_cleanup(h);
  return store;
}

std::string resolve_url(const std::string& base, const std::string& location) {
  Url u;
  if (curl_url_set(u.u, CURLUPART_URL, base.c_str(), 0) != CURLUE_OK) return {};
  if (curl_url_set(u.u, CURLUPART_URL, location.c_str(), 0) != CURLUE_OK) return {};
  return u.get(CURLUPART_URL);
}

}  // namespace ondemand::registry
