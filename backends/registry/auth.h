// Registry authentication pieces: WWW-Authenticate parsing, the basic
// credentials file (re-read when it changes), and the bearer token cache
// with one fetch at a time per realm/service/scope.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "backends/registry/error.h"
#include "backends/registry/http.h"

namespace ondemand::registry {

struct Challenge {
  std::string scheme;  // lower-cased: "basic", "bearer"
  std::map<std::string, std::string> params;  // names lower-cased: realm, service, scope

  std::string param(const std::string& name) const {
    auto it = params.find(name);
    return it == params.end() ? std::string() : it->second;
  }
};

// Parses the first challenge of a WWW-Authenticate value: `Bearer
// realm="...",service="...",scope="repository:a/b:pull,push"` (quoted values
// may hold commas and escaped quotes). nullopt when it is not one.
std::optional<Challenge> parse_challenge(std::string_view header);

std::string base64_encode(std::string_view data);

// Percent-encodes a query value (RFC 3986 unreserved characters kept).
std::string query_escape(std::string_view value);

struct BasicCredentials {
  std::string username;
  std::string password;
  std::string header() const;  // "Authorization: Basic ..."
};

// A JSON file {"username": "...", "password": "..."} that must be a regular
// file with no group/other permission bits (0600 or stricter). It is
// stat'ed on every use and re-read when its mtime, size or inode changes, so
// a rotated password (written in place or renamed over) is picked up without
// a restart. Errors name the file, never its content.
class CredentialsFile {
 public:
  explicit CredentialsFile(std::filesystem::path path);
  // The current credentials, or an error (kind permission/invalid).
  std::optional<BasicCredentials> get(Error& error);
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::mutex mutex_;
  struct Stamp {
    ino_t ino = 0;
    off_t size = -1;
    std::int64_t mtime_ns = -1;
    bool operator==(const Stamp&) const = default;
  } stamp_;
  std::optional<BasicCredentials> cached_;
};

struct Token {
  std::string value;
  Clock::time_point expires;     // not used at or after this
  Clock::time_point refresh_at;  // a refresh starts from here (jittered)
};

// Parses a token endpoint response: {"token" | "access_token", "expires_in"
// (default 60 s as the distribution spec says)}. The refresh point is drawn
// at 70..85% of the lifetime so a fleet does not refresh in step.
std::optional<Token> parse_token_response(std::string_view body, Clock::time_point now);

// Tokens by "realm|service|scope". At most one fetch per key is in flight:
// callers that find no usable token wait for it (bounded by their deadline)
// and share its result, success or failure. A token past its refresh point
// but not expired is still handed out while one caller refreshes it, so a
// refresh never fails or delays the other reads in flight.
class TokenCache {
 public:
  using Fetch = std::function<std::optional<Token>(Error& error)>;

  // The token to send, or nullopt with `error` set.
  std::optional<std::string> get(const std::string& key, const Fetch& fetch,
                                 Clock::time_point deadline, Error& error);
  // A request with `token` got a 401: forget it, unless a newer one already
  // replaced it (then the next get() returns the newer one, no new fetch).
  void invalidate(const std::string& key, const std::string& token);

  std::uint64_t fetches() const;

 private:
  struct Entry {
    std::optional<Token> token;
    bool fetching = false;
    std::uint64_t generation = 0;  // bumped when a fetch ends
    Error last_error;
  };
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, Entry> entries_;
  std::uint64_t fetches_ = 0;
};

}  // namespace ondemand::registry
