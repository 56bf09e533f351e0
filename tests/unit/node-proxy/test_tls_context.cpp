// The node-proxy's TLS contexts, driven by real OpenSSL clients in the same
// process over BIO pairs: certificate choice by SNI (exact, wildcard,
// default) and by the key types the client can verify, ALPN, the protocol
// floor, renegotiation, and node-tagged resumption (session IDs and
// tickets decode to the node's tag and resume, also on a context the SNI
// switched to, and after a ticket key rotation).
#include "tls_context.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <catch2/catch.hpp>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "node_tag.h"
#include "session_tagging.h"
#include "tests/helpers/temp_dir.h"
#include "tests/helpers/test_pki.h"

using namespace edgepin;
using namespace edgepin::nodeproxy;

// GCC 12 warns about members left out of designated initializers, which is
// what the option structs below are made for (GCC PR 96868).
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace {

constexpr nodetag::Tag kTag = 7;
constexpr int kMaxPumpSteps = 64;

// Certificates, in configuration order (index = certificate id).
enum Cert : size_t { kDefaultEcdsa, kSiteEcdsa, kSiteRsa, kWildRsa, kDefaultRsa, kCertCount };

struct Pki {
  test::TempDir dir{"edgepin-tls-context-"};
  std::vector<test::PemFiles> files;

  Pki() {
    test::TestPki pki(dir.path());
    auto issue = [&](const std::string& name, const std::string& cn, std::vector<std::string> dns,
                     test::KeyType type) {
      files.push_back(
          pki.issue(name, {.common_name = cn, .dns_names = std::move(dns), .key_type = type}));
    };
    issue("default-ecdsa", "default.test", {"default.test"}, test::KeyType::EcdsaP256);
    issue("site-ecdsa", "site.test", {"site.test", "www.site.test"}, test::KeyType::EcdsaP256);
    issue("site-rsa", "site.test", {"site.test", "www.site.test"}, test::KeyType::Rsa2048);
    issue("wild-rsa", "*.wild.test", {"*.wild.test"}, test::KeyType::Rsa2048);
    issue("default-rsa", "default.test", {"default.test"}, test::KeyType::Rsa2048);
  }
};

const Pki& pki() {
  static const Pki p;
  return p;
}

config::TlsConfig tls_config() {
  config::TlsConfig c;
  for (const auto& f : pki().files) c.certificates.push_back({f.chain, f.key});
  c.default_certificate = kDefaultEcdsa;
  return c;
}

std::string ssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += (out.empty() ? "" : "; ") + std::string(buf);
  }
  return out;
}

struct ClientOptions {
  int min_version = TLS1_2_VERSION;
  int max_version = TLS1_3_VERSION;
  std::string sni;
  std::string sigalgs;  // SSL_set1_sigalgs_list; empty: OpenSSL's default
  std::string ciphers;  // TLS 1.2 cipher list; empty: OpenSSL's default
  std::vector<std::string> alpn;
  bool tickets = true;
  bool legacy = false;  // security level 0, so the client itself offers TLS 1.0/1.1
  SSL_SESSION* resume = nullptr;
};

// One client connection to the node's contexts over a BIO pair.
struct Connection {
  SslCtxPtr client_ctx;
  SslPtr client;
  SslPtr server;
  bool ok = false;
  std::string client_error;
  std::string server_error;
  int server_reason = 0;  // ERR_GET_REASON of the server's first error

  bool pump_handshake() {
    bool client_done = false, server_done = false;
    for (int step = 0; step < kMaxPumpSteps && !(client_done && server_done); ++step) {
      if (!client_done) {
        const int rc = SSL_do_handshake(client.get());
        client_done = rc == 1;
        if (!client_done && !retryable(client.get(), rc)) {
          client_error = ssl_errors();
          // Let the server read the alert the client sent.
          SSL_do_handshake(server.get());
          server_error = take_server_error();
          return false;
        }
      }
      if (!server_done) {
        const int rc = SSL_do_handshake(server.get());
        server_done = rc == 1;
        if (!server_done && !retryable(server.get(), rc)) {
          server_error = take_server_error();
          SSL_do_handshake(client.get());  // reads the server's alert
          client_error = ssl_errors();
          return false;
        }
      }
    }
    return client_done && server_done;
  }

  std::string take_server_error() {
    const unsigned long e = ERR_peek_error();
    if (e != 0 && server_reason == 0) server_reason = ERR_GET_REASON(e);
    return ssl_errors();
  }

  // The server sends one record; the client's read also processes the
  // TLS 1.3 NewSessionTickets sent after the handshake.
  void exchange() {
    const char ping[] = "ping";
    REQUIRE(SSL_write(server.get(), ping, 4) == 4);
    char buf[16];
    int got = -1;
    for (int step = 0; step < 16 && got <= 0; ++step) {
      got = SSL_read(client.get(), buf, sizeof buf);
      if (got <= 0) REQUIRE(retryable(client.get(), got));
    }
    REQUIRE(got == 4);
    CHECK(std::memcmp(buf, ping, 4) == 0);
  }

  // close_notify both ways, so that both sides keep the session.
  SslSessionPtr close() {
    SSL_shutdown(client.get());
    SSL_shutdown(server.get());
    return SslSessionPtr(SSL_get1_session(client.get()));
  }

  static bool retryable(SSL* ssl, int rc) {
    const int err = SSL_get_error(ssl, rc);
    return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE;
  }

  std::string peer_cn() const {
    X509* cert = SSL_get0_peer_certificate(client.get());
    if (cert == nullptr) return {};
    char cn[256] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
    return cn;
  }
  int peer_key_type() const {
    X509* cert = SSL_get0_peer_certificate(client.get());
    return cert ? EVP_PKEY_get_base_id(X509_get0_pubkey(cert)) : NID_undef;
  }
  std::string alpn() const {
    const unsigned char* p = nullptr;
    unsigned int n = 0;
    SSL_get0_alpn_selected(client.get(), &p, &n);
    return p ? std::string(reinterpret_cast<const char*>(p), n) : std::string();
  }
  bool reused() const { return SSL_session_reused(server.get()) == 1; }
};

std::unique_ptr<Connection> connect(const TlsContext& tls, const ClientOptions& o = {}) {
  auto c = std::make_unique<Connection>();
  ERR_clear_error();
  c->client_ctx.reset(SSL_CTX_new(TLS_client_method()));
  REQUIRE(c->client_ctx);
  SSL_CTX* cctx = c->client_ctx.get();
  if (o.legacy) {
    SSL_CTX_set_security_level(cctx, 0);
    REQUIRE(SSL_CTX_set_cipher_list(cctx, "DEFAULT:@SECLEVEL=0") == 1);
  }
  REQUIRE(SSL_CTX_set_min_proto_version(cctx, o.min_version) == 1);
  REQUIRE(SSL_CTX_set_max_proto_version(cctx, o.max_version) == 1);
  SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, nullptr);
  if (!o.tickets) SSL_CTX_set_options(cctx, SSL_OP_NO_TICKET);
  if (!o.ciphers.empty()) REQUIRE(SSL_CTX_set_cipher_list(cctx, o.ciphers.c_str()) == 1);
  if (!o.sigalgs.empty()) REQUIRE(SSL_CTX_set1_sigalgs_list(cctx, o.sigalgs.c_str()) == 1);
  if (!o.alpn.empty()) {
    std::vector<uint8_t> wire;
    for (const auto& p : o.alpn) {
      wire.push_back(static_cast<uint8_t>(p.size()));
      wire.insert(wire.end(), p.begin(), p.end());
    }
    REQUIRE(SSL_CTX_set_alpn_protos(cctx, wire.data(), static_cast<unsigned>(wire.size())) == 0);
  }

  c->client.reset(SSL_new(cctx));
  c->server = tls.new_ssl();
  REQUIRE(c->client);
  REQUIRE(c->server);
  BIO* client_bio = nullptr;
  BIO* server_bio = nullptr;
  REQUIRE(BIO_new_bio_pair(&client_bio, 0, &server_bio, 0) == 1);
  SSL_set_bio(c->client.get(), client_bio, client_bio);
  SSL_set_bio(c->server.get(), server_bio, server_bio);
  SSL_set_connect_state(c->client.get());
  SSL_set_accept_state(c->server.get());
  if (!o.sni.empty()) REQUIRE(SSL_set_tlsext_host_name(c->client.get(), o.sni.c_str()) == 1);
  if (o.resume) REQUIRE(SSL_set_session(c->client.get(), o.resume) == 1);
  c->ok = c->pump_handshake();
  return c;
}

std::unique_ptr<TlsContext> make_context(config::TlsConfig c = tls_config(),
                                         std::shared_ptr<tagging::TicketKeyRing> ring = nullptr) {
  return TlsContext::create(c, kTag, "node1", std::move(ring));
}

std::vector<uint8_t> ticket_of(const SSL_SESSION* s) {
  const unsigned char* t = nullptr;
  size_t n = 0;
  SSL_SESSION_get0_ticket(s, &t, &n);
  return std::vector<uint8_t>(t, t + n);
}

std::vector<uint8_t> session_id_of(const SSL_SESSION* s) {
  unsigned int n = 0;
  const unsigned char* id = SSL_SESSION_get_id(s, &n);
  return std::vector<uint8_t>(id, id + n);
}

}  // namespace

TEST_CASE("the contexts describe the configured certificates", "[tls_context]") {
  auto tls = make_context();
  const auto& certs = tls->certificates();
  REQUIRE(certs.size() == kCertCount);
  CHECK(certs[kDefaultEcdsa].is_default);
  CHECK(certs[kDefaultEcdsa].kind == KeyKind::Ecdsa);
  CHECK(certs[kSiteRsa].kind == KeyKind::Rsa);
  CHECK(certs[kSiteRsa].names == std::vector<std::string>{"site.test", "www.site.test"});
  CHECK(certs[kWildRsa].names == std::vector<std::string>{"*.wild.test"});
  // The settings every connection starts with.
  SSL_CTX* front = tls->front_context();
  const uint64_t options = SSL_CTX_get_options(front);
  CHECK((options & SSL_OP_NO_RENEGOTIATION) != 0);
  CHECK((options & SSL_OP_CIPHER_SERVER_PREFERENCE) != 0);
  CHECK((options & SSL_OP_NO_TICKET) == 0);
  CHECK((SSL_CTX_get_mode(front) & SSL_MODE_RELEASE_BUFFERS) != 0);
  CHECK(SSL_CTX_get_min_proto_version(front) == TLS1_2_VERSION);
  CHECK(SSL_CTX_get_max_proto_version(front) == TLS1_3_VERSION);
  CHECK(SSL_CTX_get_session_cache_mode(front) == SSL_SESS_CACHE_SERVER);
}

TEST_CASE("SNI picks the certificate: exact, wildcard, default", "[tls_context]") {
  auto tls = make_context();
  struct Case {
    std::string sni;
    std::string cn;
  };
  const std::vector<Case> cases = {
      {"site.test", "site.test"},
      {"WWW.Site.Test", "site.test"},  // case-insensitive
      {"a.wild.test", "*.wild.test"},
      {"a.b.wild.test", "default.test"},  // a wildcard covers one label only
      {"wild.test", "default.test"},
      {"unknown.test", "default.test"},
      {"", "default.test"},  // no SNI
  };
  for (const auto& c : cases) {
    INFO("sni '" << c.sni << "'");
    auto conn = connect(*tls, {.sni = c.sni});
    INFO(conn->client_error << " / " << conn->server_error);
    REQUIRE(conn->ok);
    CHECK(conn->peer_cn() == c.cn);
  }
}

TEST_CASE("RSA and ECDSA certificates for one name are served side by side", "[tls_context]") {
  auto tls = make_context();
  SECTION("a client that verifies both gets ECDSA") {
    auto c = connect(*tls, {.sni = "site.test"});
    REQUIRE(c->ok);
    CHECK(c->peer_key_type() == EVP_PKEY_EC);
  }
  SECTION("TLS 1.3, ECDSA-only signature algorithms: ECDSA") {
    auto c = connect(
        *tls, {.min_version = TLS1_3_VERSION, .sni = "site.test", .sigalgs = "ECDSA+SHA256"});
    REQUIRE(c->ok);
    CHECK(c->peer_key_type() == EVP_PKEY_EC);
  }
  SECTION("TLS 1.3, RSA-only signature algorithms: RSA") {
    auto c = connect(
        *tls,
        {.min_version = TLS1_3_VERSION, .sni = "site.test", .sigalgs = "rsa_pss_rsae_sha256"});
    INFO(c->client_error << " / " << c->server_error);
    REQUIRE(c->ok);
    CHECK(c->peer_key_type() == EVP_PKEY_RSA);
    CHECK(c->peer_cn() == "site.test");
  }
  SECTION("TLS 1.2, only ECDHE-RSA suites: RSA") {
    auto c = connect(*tls, {.max_version = TLS1_2_VERSION,
                            .sni = "site.test",
                            .ciphers = "ECDHE-RSA-AES128-GCM-SHA256"});
    REQUIRE(c->ok);
    CHECK(c->peer_key_type() == EVP_PKEY_RSA);
  }
  SECTION("TLS 1.2, only ECDHE-ECDSA suites: ECDSA") {
    auto c = connect(*tls, {.max_version = TLS1_2_VERSION,
                            .sni = "site.test",
                            .ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384"});
    REQUIRE(c->ok);
    CHECK(c->peer_key_type() == EVP_PKEY_EC);
  }
  SECTION("no SNI, RSA only: the default's RSA alternative") {
    auto c =
        connect(*tls, {.max_version = TLS1_2_VERSION, .ciphers = "ECDHE-RSA-AES128-GCM-SHA256"});
    REQUIRE(c->ok);
    CHECK(c->peer_key_type() == EVP_PKEY_RSA);
    CHECK(c->peer_cn() == "default.test");
  }
  SECTION("a wildcard match the client cannot verify falls back to the default") {
    auto c = connect(
        *tls, {.min_version = TLS1_3_VERSION, .sni = "a.wild.test", .sigalgs = "ECDSA+SHA256"});
    REQUIRE(c->ok);
    CHECK(c->peer_key_type() == EVP_PKEY_EC);
    CHECK(c->peer_cn() == "default.test");
  }
}

TEST_CASE("ALPN selects http/1.1 and refuses clients that speak only other protocols",
          "[tls_context]") {
  auto tls = make_context();
  auto both = connect(*tls, {.alpn = {"h2", "http/1.1"}});
  REQUIRE(both->ok);
  CHECK(both->alpn() == "http/1.1");

  auto none = connect(*tls, {});
  REQUIRE(none->ok);
  CHECK(none->alpn().empty());

  auto h2_only = connect(*tls, {.alpn = {"h2"}});
  CHECK_FALSE(h2_only->ok);
  CHECK(h2_only->server_reason == SSL_R_NO_APPLICATION_PROTOCOL);
}

TEST_CASE("TLS 1.1 and 1.0 clients are refused", "[tls_context]") {
  auto tls = make_context();
  for (int version : {TLS1_1_VERSION, TLS1_VERSION}) {
    INFO("client version " << std::hex << version);
    auto c = connect(*tls, {.min_version = version, .max_version = version, .legacy = true});
    CHECK_FALSE(c->ok);
    INFO(c->client_error << " / " << c->server_error);
    CHECK(c->server_reason == SSL_R_UNSUPPORTED_PROTOCOL);
  }
  // The same legacy client with TLS 1.2 allowed is served: the refusal is
  // the version, not the client's settings.
  auto ok =
      connect(*tls, {.min_version = TLS1_VERSION, .max_version = TLS1_2_VERSION, .legacy = true});
  CHECK(ok->ok);
}

namespace {

// The client asks for a renegotiation; both sides are driven a bounded
// number of times. Returns true if the renegotiation completed.
bool try_renegotiation(Connection& c) {
  REQUIRE(SSL_renegotiate(c.client.get()) == 1);
  for (int step = 0; step < kMaxPumpSteps; ++step) {
    const int rc = SSL_do_handshake(c.client.get());
    if (rc <= 0 && !Connection::retryable(c.client.get(), rc)) break;  // refused
    if (rc == 1 && SSL_renegotiate_pending(c.client.get()) == 0) return true;
    char buf[16];
    SSL_read(c.server.get(), buf, sizeof buf);
    ERR_clear_error();
  }
  ERR_clear_error();
  return false;
}

}  // namespace

TEST_CASE("client-initiated renegotiation is refused", "[tls_context]") {
  auto tls = make_context();
  auto c = connect(*tls, {.max_version = TLS1_2_VERSION});
  REQUIRE(c->ok);
  c->exchange();
  CHECK_FALSE(try_renegotiation(*c));
  CHECK(SSL_renegotiate_pending(c->client.get()) == 1);  // never completed

  // Control: the same driver sees a renegotiation complete on a server that
  // allows it, so the refusal above is the server's doing.
  auto control = connect(*tls, {.max_version = TLS1_2_VERSION});
  REQUIRE(control->ok);
  SSL_clear_options(control->server.get(), SSL_OP_NO_RENEGOTIATION);
  SSL_set_options(control->server.get(), SSL_OP_ALLOW_CLIENT_RENEGOTIATION);
  control->exchange();
  CHECK(try_renegotiation(*control));
}

TEST_CASE("TLS 1.2 session IDs carry the node tag and resume", "[tls_context][resumption]") {
  auto tls = make_context();
  // Also across a context switch: the wildcard certificate's context.
  for (std::string sni : {"", "a.wild.test"}) {
    INFO("sni '" << sni << "'");
    auto first = connect(*tls, {.max_version = TLS1_2_VERSION, .sni = sni, .tickets = false});
    REQUIRE(first->ok);
    first->exchange();
    CHECK_FALSE(first->reused());
    SslSessionPtr session = first->close();
    REQUIRE(session);
    CHECK(ticket_of(session.get()).empty());
    const auto decoded = nodetag::decode_session_id(session_id_of(session.get()));
    REQUIRE(decoded);
    CHECK(decoded->tag == kTag);

    auto second = connect(
        *tls,
        {.max_version = TLS1_2_VERSION, .sni = sni, .tickets = false, .resume = session.get()});
    REQUIRE(second->ok);
    CHECK(second->reused());
  }
}

TEST_CASE("TLS 1.2 and 1.3 tickets carry the node tag and resume", "[tls_context][resumption]") {
  auto tls = make_context();
  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    for (std::string sni : {"", "site.test"}) {
      INFO("version " << std::hex << version << ", sni '" << sni << "'");
      auto first = connect(*tls, {.min_version = version, .max_version = version, .sni = sni});
      REQUIRE(first->ok);
      first->exchange();
      SslSessionPtr session = first->close();
      REQUIRE(session);
      const auto ticket = ticket_of(session.get());
      REQUIRE(ticket.size() > nodetag::kKeyNameSize);
      const auto decoded = nodetag::decode_ticket(ticket);
      REQUIRE(decoded);
      CHECK(decoded->tag == kTag);
      CHECK(decoded->epoch == tls->ticket_keys()->current_epoch());

      auto second = connect(
          *tls,
          {.min_version = version, .max_version = version, .sni = sni, .resume = session.get()});
      REQUIRE(second->ok);
      CHECK(second->reused());
    }
  }
  CHECK(tls->ticket_keys()->counters().tickets_opened.load() >= 4);
}

TEST_CASE("tickets sealed before a key rotation still resume", "[tls_context][resumption]") {
  const auto t0 = tagging::Clock::now();
  auto ring = tagging::TicketKeyRing::create(
      kTag,
      {.rotate_interval = std::chrono::seconds(60), .grace_period = std::chrono::seconds(600)}, t0);
  REQUIRE(ring);
  auto tls = make_context(tls_config(), ring);
  auto first = connect(*tls, {.min_version = TLS1_3_VERSION});
  REQUIRE(first->ok);
  first->exchange();
  SslSessionPtr session = first->close();
  const auto before = nodetag::decode_ticket(ticket_of(session.get()));
  REQUIRE(before);

  CHECK(tls->maybe_rotate_tickets(t0 + std::chrono::seconds(30)) == tagging::RotateOutcome::NotDue);
  REQUIRE(tls->maybe_rotate_tickets(t0 + std::chrono::seconds(60)) ==
          tagging::RotateOutcome::Rotated);
  CHECK(ring->current_epoch() == before->epoch + 1);

  auto second = connect(*tls, {.min_version = TLS1_3_VERSION, .resume = session.get()});
  REQUIRE(second->ok);
  second->exchange();
  CHECK(second->reused());
  CHECK(ring->counters().tickets_renewed.load() == 1);
  // The renewed ticket is sealed with the new key.
  SslSessionPtr renewed = second->close();
  const auto after = nodetag::decode_ticket(ticket_of(renewed.get()));
  REQUIRE(after);
  CHECK(after->epoch == before->epoch + 1);
}

TEST_CASE("without tickets and session cache nothing resumes", "[tls_context][resumption]") {
  config::TlsConfig cfg = tls_config();
  cfg.tickets.enabled = false;
  cfg.session_cache.enabled = false;
  auto tls = make_context(cfg);
  CHECK((SSL_CTX_get_options(tls->front_context()) & SSL_OP_NO_TICKET) != 0);
  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    auto first = connect(*tls, {.min_version = version, .max_version = version});
    REQUIRE(first->ok);
    first->exchange();
    SslSessionPtr session = first->close();
    auto second =
        connect(*tls, {.min_version = version, .max_version = version, .resume = session.get()});
    REQUIRE(second->ok);
    CHECK_FALSE(second->reused());
  }
}

TEST_CASE("settings OpenSSL refuses are start-up errors naming the setting", "[tls_context]") {
  SECTION("cipher list") {
    config::TlsConfig cfg = tls_config();
    cfg.ciphers = "NO-SUCH-CIPHER";
    CHECK_THROWS_WITH(make_context(cfg), Catch::Contains("ciphers \"NO-SUCH-CIPHER\""));
  }
  SECTION("groups") {
    config::TlsConfig cfg = tls_config();
    cfg.groups = "no-such-group";
    CHECK_THROWS_WITH(make_context(cfg), Catch::Contains("groups"));
  }
  SECTION("a key that does not match its certificate") {
    config::TlsConfig cfg = tls_config();
    cfg.certificates = {{pki().files[kSiteRsa].chain, pki().files[kSiteEcdsa].key}};
    cfg.default_certificate = 0;
    CHECK_THROWS_AS(make_context(cfg), TlsSetupError);
  }
  SECTION("no certificate") {
    config::TlsConfig cfg;
    CHECK_THROWS_AS(make_context(cfg), TlsSetupError);
  }
}
