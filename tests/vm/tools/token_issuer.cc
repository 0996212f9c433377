// vt-token-issuer: the registry test fixture's JWT issuer (RS256, libtrust
// key id; tests/unit/backends/registry/fixture.h) as a program, for the
// docker-registry a VM scenario runs with `auth: token`.
//
//   vt-token-issuer DIR SERVICE ISSUER USER:PASSWORD EXPIRES_IN_S
//
// Writes DIR/issuer.crt (the registry's rootcertbundle) and DIR/issuer.env
// ("REALM=<url>"), then serves GET /token for clients that send
// USER:PASSWORD as basic credentials, until SIGTERM. Five times a second it
// writes "<token requests served> <bad tokens still to serve>" to
// DIR/requests. SIGUSR1: one more token it serves is wrongly signed, so the
// registry refuses it (401) as it would an expired or revoked token: a
// forced expiry.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "tests/unit/backends/registry/fixture.h"

namespace {
volatile sig_atomic_t stop = 0;
volatile sig_atomic_t expire = 0;
}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: vt-token-issuer DIR SERVICE ISSUER USER:PASSWORD EXPIRES_IN_S\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  struct sigaction sa {};
  sa.sa_handler = [](int) { stop = 1; };
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sa.sa_handler = [](int) { expire = 1; };
  sigaction(SIGUSR1, &sa, nullptr);
  try {
    ondemand::test::TokenIssuer issuer(dir, argv[2], argv[3]);
    issuer.required_basic = argv[4];
    issuer.expires_in = std::atoi(argv[5]);
    std::ofstream(dir / "issuer.env.tmp") << "REALM=" << issuer.realm() << "\n";
    std::filesystem::rename(dir / "issuer.env.tmp", dir / "issuer.env");
    while (!stop) {
      if (expire) {
        expire = 0;
        issuer.bad_tokens_left.fetch_add(1);
      }
      std::ofstream(dir / "requests.tmp") << issuer.token_requests() << " " << issuer.bad_tokens_left.load() << "\n";
      std::filesystem::rename(dir / "requests.tmp", dir / "requests");
      ::usleep(200'000);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vt-token-issuer: %s\n", e.what());
    return 1;
  }
  return 0;
}
