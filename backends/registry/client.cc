#include "backends/registry/client.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <random>
#include <regex>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace ondemand::registry {
namespace {

constexpr std::size_t MAX_ERROR_BODY = 64 * 1024;

bool is_redirect(long status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

std::string header_or(const Headers& headers, const std::string& name) {
  auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  std::uint64_t v = 0;
  if (s.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

Clock::duration jittered(std::chrono::milliseconds backoff) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  // "Equal jitter": at least half the backoff, so retries never spin.
  const auto half = backoff.count() / 2;
  std::uniform_int_distribution<long long> pick(0, std::max<long long>(half, 0));
  return std::chrono::milliseconds(half + pick(rng));
}

// Receives one GET of a blob range and decides whether it is the range.
class RangeSink final : public BodySink {
 public:
  RangeSink(std::uint64_t off, std::span<std::byte> out, std::uint64_t size_hint)
      : off_(off), out_(out), size_hint_(size_hint) {}

  void reset() {
    mode_ = Mode::none;
    got_ = 0;
    stream_pos_ = 0;
    problem_.clear();
  }

  bool begin(long status, const Headers& headers) override {
    const auto len = out_.size();
    if (status == 206) {
      const auto value = header_or(headers, "content-range");
      const auto range = parse_content_range(value);
      if (!range || range->first != off_ || range->last != off_ + len - 1) {
        problem_ = fmt::format("206 with Content-Range '{}' instead of bytes {}-{}", value, off_,
                               off_ + len - 1);
        return false;
      }
      mode_ = Mode::ranged;
      return true;
    }
    if (status == 200) {
      // The server ignored Range. Only a body known to be the whole blob
      // can be cut down to the slice.
      const auto length = parse_u64(header_or(headers, "content-length"));
      if (size_hint_ == 0 || !length || *length != size_hint_) {
        problem_ = fmt::format("200 instead of 206: the server ignored Range and the body ({} bytes) "
                               "is not known to be the whole blob",
                               length ? std::to_string(*length) : "unknown");
        return false;
      }
      mode_ = Mode::whole;
      return true;
    }
    mode_ = Mode::discard;
    return true;
  }

  bool write(std::span<const char> data) override {
    switch (mode_) {
      case Mode::ranged:
        if (got_ + data.size() > out_.size()) {
          problem_ = fmt::format("206 body longer than the {} bytes asked", out_.size());
          return false;
        }
        std::memcpy(out_.data() + got_, data.data(), data.size());
        got_ += data.size();
        return true;
      case Mode::whole: {
        const std::uint64_t start = stream_pos_, end = stream_pos_ + data.size();
        stream_pos_ = end;
        const std::uint64_t want_end = off_ + out_.size();
        const std::uint64_t from = std::max(start, off_), to = std::min(end, want_end);
        if (from < to) {
          std::memcpy(out_.data() + (from - off_), data.data() + (from - start), to - from);
          got_ += to - from;
        }
        return stream_pos_ < want_end;  // stop the transfer right after the slice
      }
      case Mode::discard:
        got_ += data.size();
        return got_ < MAX_ERROR_BODY;
      case Mode::none: return false;
    }
    return false;
  }

  bool complete() const { return (mode_ == Mode::ranged || mode_ == Mode::whole) && got_ == out_.size(); }
  bool cut_from_whole() const { return mode_ == Mode::whole; }
  const std::string& problem() const { return problem_; }
  std::uint64_t got() const { return got_; }

 private:
  enum class Mode { none, ranged, whole, discard };
  std::uint64_t off_;
  std::span<std::byte> out_;
  std::uint64_t size_hint_;
  Mode mode_ = Mode::none;
  std::uint64_t got_ = 0;
  std::uint64_t stream_pos_ = 0;
  std::string problem_;
};

// What one attempt (one request plus its redirects and auth round trip)
// concluded.
struct Outcome {
  enum class Action { done, retry, retry_now, fail } action = Action::fail;
  Error error;
  std::optional<Clock::duration> retry_after;
  std::uint64_t size = 0;  // HEAD
};

Outcome fail(ErrorKind kind, std::string message) { return {Outcome::Action::fail, {kind, std::move(message)}}; }
Outcome retry(ErrorKind kind, std::string message) { return {Outcome::Action::retry, {kind, std::move(message)}}; }

}  // namespace

std::optional<ContentRange> parse_content_range(std::string_view v) {
  if (!v.starts_with("bytes ")) return std::nullopt;
  v.remove_prefix(6);
  const auto dash = v.find('-'), slash = v.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || dash > slash) return std::nullopt;
  auto first = parse_u64(v.substr(0, dash));
  auto last = parse_u64(v.substr(dash + 1, slash - dash - 1));
  if (!first || !last || *last < *first) return std::nullopt;
  ContentRange r{*first, *last, std::nullopt};
  const auto total = v.substr(slash + 1);
  if (total != "*") {
    r.total = parse_u64(total);
    if (!r.total || *r.total <= *last) return std::nullopt;
  }
  return r;
}

std::string validate_repository(std::string_view repository) {
  static const std::regex NAME(
      "[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*");
  if (repository.empty() || repository.size() > 255) return "repository name must be 1..255 bytes";
  if (!std::regex_match(repository.begin(), repository.end(), NAME))
    return "repository name must be lower-case path components of [a-z0-9._-]";
  return {};
}

std::string validate_digest(std::string_view digest) {
  auto hex_ok = [](std::string_view hex, std::size_t len) {
    return hex.size() == len &&
           std::all_of(hex.begin(), hex.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
  };
  if (digest.starts_with("sha256:") && hex_ok(digest.substr(7), 64)) return {};
  if (digest.starts_with("sha512:") && hex_ok(digest.substr(7), 128)) return {};
  return "digest must be sha256:<64 hex> or sha512:<128 hex>";
}

// A coalesced fetch: the first reader of a range fetches, later readers of
// the same range wait for it and copy its bytes.
struct RegistryClient::Flight {
  std::condition_variable done_cv;
  bool done = false;
  std::size_t followers = 0;
  Error error;
  std::vector<std::byte> data;
};

// One attempt: the request, the redirects it is answered with, and at most
// one authentication round trip.
class RegistryClient::Exchange {
 public:
  Exchange(RegistryClient& client, const BlobRef& blob, Clock::time_point deadline)
      : c_(client), blob_(blob), deadline_(deadline), blob_key_(blob.repository + "@" + blob.digest) {}

  Outcome run(const std::string& method, std::optional<std::pair<std::uint64_t, std::uint64_t>> range,
              RangeSink* sink);

 private:
  std::optional<std::string> auth_header(Error& error);
  std::optional<Token> fetch_token(const Challenge& challenge, Error& error);
  bool scheme_allowed(const std::string& url) const {
    return url.starts_with("https://") || (c_.options_.insecure_http && url.starts_with("http://"));
  }
  std::string where() const {
    return fmt::format("registry {} repository {} digest {}", c_.options_.registry, blob_.repository,
                       blob_.digest);
  }

  RegistryClient& c_;
  const BlobRef& blob_;
  Clock::time_point deadline_;
  std::string blob_key_;
  std::string sent_token_;
  std::string token_key_;
};

Outcome RegistryClient::Exchange::run(const std::string& method,
                                      std::optional<std::pair<std::uint64_t, std::uint64_t>> range,
                                      RangeSink* sink) {
  const std::string origin_url = c_.origin_url(blob_);
  std::optional<std::string> remembered;
  if (method == "GET") remembered = c_.remembered_redirect(blob_key_);
  std::string url = remembered ? *remembered : origin_url;
  bool on_remembered = remembered.has_value();
  bool answered_challenge = false;
  bool replaced_token = false;
  // A remembered redirect that fails in any way is forgotten and the read
  // goes back to the registry at once: signed URLs expire.
  auto drop_remembered = [&](const std::string& why) {
    c_.drop_redirect(blob_key_);
    spdlog::info("{}: remembered redirect dropped: {}", where(), why);
    return Outcome{Outcome::Action::retry_now, {ErrorKind::unavailable, why}};
  };

  for (int hop = 0; hop <= c_.options_.max_redirects + 1; ++hop) {
    HttpRequest rq;
    rq.method = method;
    rq.url = url;
    rq.deadline = deadline_;
    rq.connect_timeout = c_.options_.connect_timeout;
    rq.stall_timeout = c_.options_.stall_timeout;
    rq.ca_file = c_.options_.ca_file;
    const bool same_origin = url_origin(url) == c_.origin_;
    // Credentials go to the registry only, never to a host it redirects to.
    if (same_origin) {
      Error auth_error;
      auto header = auth_header(auth_error);
      if (auth_error) {
        if (auth_error.kind == ErrorKind::timeout || auth_error.kind == ErrorKind::unavailable)
          return {Outcome::Action::retry, auth_error};
        return {Outcome::Action::fail, auth_error};
      }
      if (header) rq.headers.push_back(*header);
    }
    if (range) rq.headers.push_back(fmt::format("Range: bytes={}-{}", range->first, range->second));
    if (sink) sink->reset();
    rq.sink = sink;
    const auto resp = c_.http_.perform(rq);

    if (resp.transport != Transport::ok && resp.transport != Transport::aborted_by_sink) {
      if (on_remembered) return drop_remembered(resp.transport_message);
      const auto msg = fmt::format("{}: {}", where(), resp.transport_message);
      switch (resp.transport) {
        case Transport::tls_failed: return fail(ErrorKind::permission, "TLS failed: " + msg);
        case Transport::deadline: return fail(ErrorKind::timeout, msg);
        case Transport::stalled: return retry(ErrorKind::timeout, msg);
        default: return retry(ErrorKind::unavailable, msg);
      }
    }
    const long status = resp.status;
    if (is_redirect(status)) {
      const auto location = header_or(resp.headers, "location");
      auto next = location.empty() ? std::string() : resolve_url(url, location);
      if (next.empty()) return fail(ErrorKind::protocol, fmt::format("{}: redirect {} without a usable Location", where(), status));
      if (!scheme_allowed(next))
        return fail(ErrorKind::permission,
                    fmt::format("{}: redirect to a non-https URL refused (insecure_http is off)", where()));
      ++c_.redirects_followed_;
      url = std::move(next);
      continue;
    }
    if (status == 401 && same_origin) {
      auto challenge = parse_challenge(header_or(resp.headers, "www-authenticate"));
      const bool known = challenge && (challenge->scheme == "bearer" || challenge->scheme == "basic");
      // A token the registry no longer accepts (expired early, revoked) is
      // replaced once; a second refusal, or refused basic credentials, is
      // the credentials' fault.
      const bool retry_token = known && challenge->scheme == "bearer" && !sent_token_.empty() && !replaced_token;
      if (!known || (answered_challenge && !retry_token))
        return fail(ErrorKind::permission,
                    fmt::format("registry {} refused access to repository {} (401): check the credentials",
                                c_.options_.registry, blob_.repository));
      if (!sent_token_.empty()) {
        c_.tokens_.invalidate(token_key_, sent_token_);
        replaced_token = true;
      }
      {
        std::lock_guard lock(c_.mutex_);
        c_.challenges_[blob_.repository] = *challenge;
      }
      answered_challenge = true;
      continue;
    }
    if (on_remembered && status != 200 && status != 206)
      return drop_remembered(fmt::format("status {}", status));
    if (status == 404)
      return fail(ErrorKind::not_found, fmt::format("blob {} not found in registry {} repository {}",
                                                    blob_.digest, c_.options_.registry, blob_.repository));
    if (status == 401 || status == 403)
      return fail(ErrorKind::permission, fmt::format("registry {} denied access to repository {} ({})",
                                                     c_.options_.registry, blob_.repository, status));
    if (status == 429) {
      Outcome o = retry(ErrorKind::unavailable, fmt::format("{}: rate limited (429)", where()));
      if (auto secs = parse_u64(header_or(resp.headers, "retry-after")))
        o.retry_after = std::chrono::seconds(std::min<std::uint64_t>(*secs, 3600));
      return o;
    }
    if (status >= 500) return retry(ErrorKind::unavailable, fmt::format("{}: status {}", where(), status));
    if (method == "HEAD") {
      if (status != 200) return fail(ErrorKind::protocol, fmt::format("{}: HEAD answered {}", where(), status));
      if (resp.content_length < 0)
        return fail(ErrorKind::protocol, fmt::format("{}: HEAD without Content-Length", where()));
      const auto digest = header_or(resp.headers, "docker-content-digest");
      if (!digest.empty() && digest != blob_.digest)
        return fail(ErrorKind::protocol, fmt::format("{}: registry says the blob is {}", where(), digest));
      Outcome o{Outcome::Action::done};
      o.size = static_cast<std::uint64_t>(resp.content_length);
      return o;
    }
    if (status == 416) return fail(ErrorKind::invalid, fmt::format("{}: range not satisfiable (416)", where()));
    if (status != 200 && status != 206)
      return fail(ErrorKind::protocol, fmt::format("{}: unexpected status {}", where(), status));
    if (!sink->complete()) {
      const auto why = !sink->problem().empty()
                           ? sink->problem()
                           : fmt::format("short body: {} of {} bytes", sink->got(), range->second - range->first + 1);
      if (on_remembered) return drop_remembered(why);
      return fail(ErrorKind::protocol, fmt::format("{}: {}", where(), why));
    }
    if (sink->cut_from_whole())
      spdlog::warn("{}: server ignored Range; slice cut from the whole body", where());
    if (url != origin_url && !on_remembered) c_.remember_redirect(blob_key_, url);
    return {Outcome::Action::done};
  }
  return fail(ErrorKind::protocol, fmt::format("{}: more than {} redirects", where(), c_.options_.max_redirects));
}

std::optional<std::string> RegistryClient::Exchange::auth_header(Error& error) {
  std::optional<Challenge> challenge;
  {
    std::lock_guard lock(c_.mutex_);
    auto it = c_.challenges_.find(blob_.repository);
    if (it != c_.challenges_.end()) challenge = it->second;
  }
  if (!challenge) return std::nullopt;  // anonymous until the registry asks
  if (challenge->scheme == "basic") {
    if (!c_.credentials_) {
      error = {ErrorKind::permission,
               fmt::format("registry {} asks for basic credentials and none are configured", c_.options_.registry)};
      return std::nullopt;
    }
    auto creds = c_.credentials_->get(error);
    if (!creds) return std::nullopt;
    return creds->header();
  }
  auto scope = challenge->param("scope");
  if (scope.empty()) scope = fmt::format("repository:{}:pull", blob_.repository);
  token_key_ = challenge->param("realm") + "|" + challenge->param("service") + "|" + scope;
  challenge->params["scope"] = scope;
  auto token = c_.tokens_.get(token_key_, [&](Error& e) { return fetch_token(*challenge, e); }, deadline_, error);
  if (!token) return std::nullopt;
  sent_token_ = *token;
  return "Authorization: Bearer " + *token;
}

std::optional<Token> RegistryClient::Exchange::fetch_token(const Challenge& challenge, Error& error) {
  const auto realm = challenge.param("realm");
  if (realm.empty() || !scheme_allowed(realm)) {
    error = {ErrorKind::permission,
             fmt::format("registry {}: token realm missing or not https (insecure_http is off)", c_.options_.registry)};
    return std::nullopt;
  }
  std::string url = realm + (realm.find('?') == std::string::npos ? "?" : "&");
  if (auto service = challenge.param("service"); !service.empty()) url += "service=" + query_escape(service) + "&";
  url += "scope=" + query_escape(challenge.param("scope"));
  HttpRequest rq;
  rq.url = url;
  rq.deadline = deadline_;
  rq.connect_timeout = c_.options_.connect_timeout;
  rq.stall_timeout = c_.options_.stall_timeout;
  rq.ca_file = c_.options_.ca_file;
  if (c_.credentials_) {
    auto creds = c_.credentials_->get(error);
    if (!creds) return std::nullopt;
    rq.headers.push_back(creds->header());
  }
  const auto resp = c_.http_.perform(rq);
  if (resp.transport != Transport::ok) {
    error = {resp.transport == Transport::deadline ? ErrorKind::timeout : ErrorKind::unavailable,
             fmt::format("token endpoint of registry {}: {}", c_.options_.registry, resp.transport_message)};
    return std::nullopt;
  }
  if (resp.status == 401 || resp.status == 403) {
    error = {ErrorKind::permission, fmt::format("token endpoint of registry {} refused the credentials ({})",
                                                c_.options_.registry, resp.status)};
    return std::nullopt;
  }
  if (resp.status != 200) {
    error = {resp.status >= 500 || resp.status == 429 ? ErrorKind::unavailable : ErrorKind::protocol,
             fmt::format("token endpoint of registry {} answered {}", c_.options_.registry, resp.status)};
    return std::nullopt;
  }
  auto token = parse_token_response(resp.body, Clock::now());
  if (!token)
    error = {ErrorKind::protocol, fmt::format("token endpoint of registry {} sent no token", c_.options_.registry)};
  else
    spdlog::debug("registry={} token fetched for scope {}", c_.options_.registry, challenge.param("scope"));
  return token;
}

std::string registry_base_url(const std::string& registry, bool insecure_http) {
  if (registry.empty() || registry.find_first_of("/@?# ") != std::string::npos) return {};
  const auto url = fmt::format("{}://{}/", insecure_http ? "http" : "https", registry);
  return url_origin(url).empty() ? std::string() : url;
}

RegistryClient::RegistryClient(RegistryOptions options) : options_(std::move(options)) {
  const auto& host = options_.registry;
  scheme_ = options_.insecure_http ? "http" : "https";
  origin_ = url_origin(registry_base_url(host, options_.insecure_http));
  if (origin_.empty()) throw std::invalid_argument(fmt::format("registry '{}' must be host[:port]", host));
  if (!options_.ca_file.empty() && !std::filesystem::is_regular_file(options_.ca_file))
    throw std::invalid_argument(fmt::format("registry {}: ca_file {} is not a readable file", host, options_.ca_file));
  if (!options_.credentials_file.empty())
    credentials_ = std::make_unique<CredentialsFile>(options_.credentials_file);
}

RegistryClient::~RegistryClient() = default;

std::string RegistryClient::origin_url(const BlobRef& blob) const {
  return fmt::format("{}://{}/v2/{}/blobs/{}", scheme_, options_.registry, blob.repository, blob.digest);
}

std::optional<std::string> RegistryClient::remembered_redirect(const std::string& blob_key) {
  std::lock_guard lock(mutex_);
  auto it = redirects_.find(blob_key);
  if (it == redirects_.end()) return std::nullopt;
  return it->second;
}

void RegistryClient::remember_redirect(const std::string& blob_key, const std::string& url) {
  std::lock_guard lock(mutex_);
  redirects_[blob_key] = url;
}

void RegistryClient::drop_redirect(const std::string& blob_key) {
  std::lock_guard lock(mutex_);
  if (redirects_.erase(blob_key)) ++redirects_dropped_;
}

namespace {

// Runs attempts until one is conclusive or the deadline passes.
template <typename Attempt>
Error with_retries(const RegistryOptions& options, const std::string& what, Clock::time_point deadline,
                   std::atomic<std::uint64_t>& retries, Attempt&& attempt, Outcome* final_outcome = nullptr) {
  auto backoff = options.backoff_initial;
  int attempts = 0;
  for (;;) {
    Outcome o = attempt();
    ++attempts;
    if (o.action == Outcome::Action::done) {
      if (final_outcome) *final_outcome = o;
      return {};
    }
    if (o.action == Outcome::Action::fail) {
      spdlog::warn("{}: {} ({})", what, o.error.message, kind_name(o.error.kind));
      return o.error;
    }
    const auto now = Clock::now();
    auto wait = o.action == Outcome::Action::retry_now ? Clock::duration::zero() : jittered(backoff);
    if (o.retry_after) {
      if (now + *o.retry_after >= deadline) {
        Error e{ErrorKind::timeout,
                fmt::format("{} (Retry-After {} s is past the request deadline)", o.error.message,
                            std::chrono::duration_cast<std::chrono::seconds>(*o.retry_after).count())};
        spdlog::warn("{}: {}", what, e.message);
        return e;
      }
      wait = std::max(wait, *o.retry_after);
    }
    if (now + wait >= deadline) {
      Error e{ErrorKind::timeout,
              fmt::format("deadline passed after {} attempts; last: {}", attempts, o.error.message)};
      spdlog::warn("{}: {}", what, e.message);
      return e;
    }
    spdlog::debug("{}: attempt {} failed, retrying: {}", what, attempts, o.error.message);
    ++retries;
    std::this_thread::sleep_for(wait);
    if (o.action != Outcome::Action::retry_now) backoff = std::min(backoff * 2, options.backoff_max);
  }
}

}  // namespace

SizeResult RegistryClient::blob_size(const BlobRef& blob, Clock::time_point deadline) {
  if (auto why = validate_repository(blob.repository); !why.empty())
    return {0, {ErrorKind::invalid, fmt::format("repository '{}': {}", blob.repository, why)}};
  if (auto why = validate_digest(blob.digest); !why.empty())
    return {0, {ErrorKind::invalid, fmt::format("digest '{}': {}", blob.digest, why)}};
  Outcome done;
  const auto what = fmt::format("registry={} repository={} digest={} HEAD", options_.registry, blob.repository, blob.digest);
  auto err = with_retries(options_, what, deadline, retries_, [&] {
    Exchange exchange(*this, blob, deadline);
    return exchange.run("HEAD", std::nullopt, nullptr);
  }, &done);
  return {done.size, err};
}

Error RegistryClient::fetch_range(const BlobRef& blob, std::uint64_t off, std::span<std::byte> out,
                                  Clock::time_point deadline, std::uint64_t size_hint) {
  RangeSink sink(off, out, size_hint);
  const auto what = fmt::format("registry={} repository={} digest={} range={}+{}", options_.registry,
                                blob.repository, blob.digest, off, out.size());
  return with_retries(options_, what, deadline, retries_, [&] {
    Exchange exchange(*this, blob, deadline);
    return exchange.run("GET", std::make_pair(off, off + out.size() - 1), &sink);
  });
}

Error RegistryClient::read(const BlobRef& blob, std::uint64_t off, std::span<std::byte> out,
                           Clock::time_point deadline, std::uint64_t size_hint) {
  if (auto why = validate_repository(blob.repository); !why.empty())
    return {ErrorKind::invalid, fmt::format("repository '{}': {}", blob.repository, why)};
  if (auto why = validate_digest(blob.digest); !why.empty())
    return {ErrorKind::invalid, fmt::format("digest '{}': {}", blob.digest, why)};
  if (out.empty()) return {};
  const auto key = fmt::format("{}@{}:{}+{}", blob.repository, blob.digest, off, out.size());
  std::shared_ptr<Flight> flight;
  std::unique_lock lock(mutex_);
  if (auto it = flights_.find(key); it != flights_.end()) {
    flight = it->second;
    ++flight->followers;
    ++coalesced_;
    if (!flight->done_cv.wait_until(lock, deadline, [&] { return flight->done; }))
      return {ErrorKind::timeout, fmt::format("registry {} repository {} digest {}: deadline passed waiting "
                                              "for a coalesced fetch", options_.registry, blob.repository, blob.digest)};
    if (flight->error) return flight->error;
    std::memcpy(out.data(), flight->data.data(), out.size());
    return {};
  }
  flight = std::make_shared<Flight>();
  flights_.emplace(key, flight);
  lock.unlock();

  Error err = fetch_range(blob, off, out, deadline, size_hint);

  lock.lock();
  flights_.erase(key);
  const bool shared = flight->followers > 0;
  lock.unlock();
  // No follower can join once the flight is erased, and none reads `data`
  // before `done`: the copy needs no lock.
  if (shared && !err) flight->data.assign(out.begin(), out.end());
  lock.lock();
  flight->error = err;
  flight->done = true;
  flight->done_cv.notify_all();
  return err;
}

ClientStats RegistryClient::stats() const {
  ClientStats s;
  s.http_requests = http_.requests();
  s.token_fetches = tokens_.fetches();
  s.coalesced_reads = coalesced_.load();
  s.retries = retries_.load();
  s.redirects_followed = redirects_followed_.load();
  s.redirects_dropped = redirects_dropped_.load();
  return s;
}

}  // namespace ondemand::registry
