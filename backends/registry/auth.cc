#include "backends/registry/auth.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cctype>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/sys.h"

namespace ondemand::registry {
namespace {

constexpr std::size_t MAX_CREDENTIALS_FILE = 64 * 1024;

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("!#$%&'*+-.^_`|~").find(c) !=
                                                            std::string_view::npos;
}

double uniform(double lo, double hi) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

}  // namespace

std::optional<Challenge> parse_challenge(std::string_view h) {
  std::size_t i = 0;
  auto skip_ws = [&] {
    while (i < h.size() && (h[i] == ' ' || h[i] == '\t')) ++i;
  };
  skip_ws();
  const auto scheme_start = i;
  while (i < h.size() && is_token_char(h[i])) ++i;
  if (i == scheme_start) return std::nullopt;
  Challenge c;
  c.scheme = lower(h.substr(scheme_start, i - scheme_start));
  for (;;) {
    skip_ws();
    while (i < h.size() && h[i] == ',') {
      ++i;
      skip_ws();
    }
    if (i >= h.size()) break;
    const auto name_start = i;
    while (i < h.size() && is_token_char(h[i])) ++i;
    if (i == name_start) return std::nullopt;
    auto name = lower(h.substr(name_start, i - name_start));
    skip_ws();
    // A second challenge ("Basic realm=..., Bearer ..."): we answer the first.
    if (i >= h.size() || h[i] != '=') break;
    ++i;
    skip_ws();
    std::string value;
    if (i < h.size() && h[i] == '"') {
      ++i;
      bool closed = false;
      while (i < h.size()) {
        char ch = h[i++];
        if (ch == '\\' && i < h.size()) {
          value.push_back(h[i++]);
        } else if (ch == '"') {
          closed = true;
          break;
        } else {
          value.push_back(ch);
        }
      }
      if (!closed) return std::nullopt;
    } else {
      while (i < h.size() && h[i] != ',' && h[i] != ' ' && h[i] != '\t') value.push_back(h[i++]);
    }
    c.params[std::move(name)] = std::move(value);
  }
  return c;
}

std::string base64_encode(std::string_view data) {
  static constexpr char ALPHABET[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    const std::uint32_t v = (static_cast<std::uint8_t>(data[i]) << 16) |
                            (static_cast<std::uint8_t>(data[i + 1]) << 8) |
                            static_cast<std::uint8_t>(data[i + 2]);
    out += ALPHABET[(v >> 18) & 63];
    out += ALPHABET[(v >> 12) & 63];
    out += ALPHABET[(v >> 6) & 63];
    out += ALPHABET[v & 63];
  }
  if (i + 1 == data.size()) {
    const std::uint32_t v = static_cast<std::uint8_t>(data[i]) << 16;
    out += ALPHABET[(v >> 18) & 63];
    out += ALPHABET[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == data.size()) {
    const std::uint32_t v = (static_cast<std::uint8_t>(data[i]) << 16) |
                            (static_cast<std::uint8_t>(data[i + 1]) << 8);
    out += ALPHABET[(v >> 18) & 63];
    out += ALPHABET[(v >> 12) & 63];
    out += ALPHABET[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string query_escape(std::string_view value) {
  std::string out;
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~')
      out.push_back(static_cast<char>(c));
    else
      out += fmt::format("%{:02X}", c);
  }
  return out;
}

std::string BasicCredentials::header() const {
  return "Authorization: Basic " + base64_encode(username + ":" + password);
}

CredentialsFile::CredentialsFile(std::filesystem::path path) : path_(std::move(path)) {}

std::optional<BasicCredentials> CredentialsFile::get(Error& error) {
  std::lock_guard lock(mutex_);
  struct stat st{};
  if (::stat(path_.c_str(), &st) < 0) {
    const int err = errno;
    error = {ErrorKind::permission,
             fmt::format("credentials file {}: {}", path_.string(), sys::errno_name(err))};
    return std::nullopt;
  }
  const Stamp now{st.st_ino, st.st_size,
                  static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
  if (cached_ && now == stamp_) return cached_;

  auto opened = sys::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (!opened.fd) {
    error = {ErrorKind::permission,
             fmt::format("credentials file {}: {}", path_.string(), sys::errno_name(opened.err))};
    return std::nullopt;
  }
  if (::fstat(opened.fd.get(), &st) < 0 || !S_ISREG(st.st_mode)) {
    error = {ErrorKind::invalid, fmt::format("credentials file {} is not a regular file", path_.string())};
    return std::nullopt;
  }
  if ((st.st_mode & 077) != 0) {
    error = {ErrorKind::permission,
             fmt::format("credentials file {} has mode {:04o}: it must not be readable by group or "
                         "others (chmod 600)",
                         path_.string(), st.st_mode & 07777)};
    return std::nullopt;
  }
  if (static_cast<std::size_t>(st.st_size) > MAX_CREDENTIALS_FILE) {
    error = {ErrorKind::invalid, fmt::format("credentials file {} is too large", path_.string())};
    return std::nullopt;
  }
  std::string text(static_cast<std::size_t>(st.st_size), '\0');
  auto r = sys::pread_full(opened.fd.get(), text.data(), text.size(), 0);
  if (!r.ok()) {
    error = {ErrorKind::permission,
             fmt::format("credentials file {}: {}", path_.string(), sys::errno_name(r.err))};
    return std::nullopt;
  }
  text.resize(static_cast<std::size_t>(r.rc));
  const auto doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    error = {ErrorKind::invalid, fmt::format("credentials file {} is not a JSON object", path_.string())};
    return std::nullopt;
  }
  BasicCredentials creds;
  for (auto& [key, value] : doc.items()) {
    if (!value.is_string()) {
      error = {ErrorKind::invalid,
               fmt::format("credentials file {}: key {} must be a string", path_.string(), key)};
      return std::nullopt;
    }
    if (key == "username") {
      creds.username = value.get<std::string>();
    } else if (key == "password") {
      creds.password = value.get<std::string>();
    } else {
      error = {ErrorKind::invalid,
               fmt::format("credentials file {}: unknown key {}", path_.string(), key)};
      return std::nullopt;
    }
  }
  if (creds.username.empty() || creds.username.find(':') != std::string::npos) {
    error = {ErrorKind::invalid,
             fmt::format("credentials file {}: username missing or contains ':'", path_.string())};
    return std::nullopt;
  }
  stamp_ = {st.st_ino, st.st_size,
            static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
  cached_ = std::move(creds);
  return cached_;
}

std::optional<Token> parse_token_response(std::string_view body, Clock::time_point now) {
  const auto doc = nlohmann::json::parse(body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return std::nullopt;
  std::string value;
  for (const char* key : {"token", "access_token"}) {
    auto it = doc.find(key);
    if (it != doc.end() && it->is_string() && !it->get<std::string>().empty()) {
      value = it->get<std::string>();
      break;
    }
  }
  if (value.empty()) return std::nullopt;
  std::int64_t expires_in = 60;
  if (auto it = doc.find("expires_in"); it != doc.end() && it->is_number_integer())
    expires_in = std::max<std::int64_t>(1, it->get<std::int64_t>());
  const auto lifetime = std::chrono::seconds(expires_in);
  const auto refresh = std::chrono::duration_cast<Clock::duration>(lifetime * uniform(0.70, 0.85));
  return Token{std::move(value), now + lifetime, now + refresh};
}

std::optional<std::string> TokenCache::get(const std::string& key, const Fetch& fetch,
                                           Clock::time_point deadline, Error& error) {
  std::unique_lock lock(mutex_);
  auto& e = entries_[key];
  for (;;) {
    const auto now = Clock::now();
    const bool usable = e.token && now < e.token->expires;
    if (usable && (now < e.token->refresh_at || e.fetching)) return e.token->value;
    if (!e.fetching) break;
    const auto seen = e.generation;
    if (!changed_.wait_until(lock, deadline, [&] { return e.generation != seen; })) {
      error = {ErrorKind::timeout, "deadline passed waiting for a registry token"};
      return std::nullopt;
    }
    if (e.last_error && !(e.token && Clock::now() < e.token->expires)) {
      error = e.last_error;
      return std::nullopt;
    }
  }
  // This caller fetches; everyone else waits for (or keeps using) the old one.
  e.fetching = true;
  ++fetches_;
  lock.unlock();
  Error fetch_error;
  auto token = fetch(fetch_error);
  lock.lock();
  e.fetching = false;
  ++e.generation;
  e.last_error = fetch_error;
  if (token) e.token = std::move(token);
  changed_.notify_all();
  if (e.token && Clock::now() < e.token->expires) return e.token->value;
  error = fetch_error ? fetch_error : Error{ErrorKind::permission, "token endpoint gave no token"};
  return std::nullopt;
}

void TokenCache::invalidate(const std::string& key, const std::string& token) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(key);
  if (it != entries_.end() && it->second.token && it->second.token->value == token)
    it->second.token.reset();
}

std::uint64_t TokenCache::fetches() const {
  std::lock_guard lock(mutex_);
  return fetches_;
}

}  // namespace ondemand::registry
