// Node-tagged resumption: the ticket key ring on its own, then real OpenSSL
// handshakes (client and server in one process, over a BIO pair) checking
// that what a resuming client sends back carries the node's tag, that it
// resumes, and that rotation and the grace period behave.
#include "session_tagging.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "node_tag.h"
#include "ssl_ptr.h"

using namespace edgepin;
using namespace edgepin::tagging;
using namespace std::chrono_literals;

namespace {

const Clock::time_point kT0 = Clock::time_point{} + std::chrono::hours(1000);

std::span<const uint8_t, nodetag::kKeyNameSize> name_span(const TicketKey& k) { return k.name; }

// ---------------------------------------------------------------- TLS setup

// A self-signed ECDSA certificate, made in memory: the client does not
// verify it, and resumption does not depend on what the certificate says.
struct ServerIdentity {
  EvpPkeyPtr key;
  X509Ptr cert;
};

const ServerIdentity& identity() {
  static const ServerIdentity id = [] {
    ServerIdentity out;
    out.key.reset(EVP_EC_gen("P-256"));
    REQUIRE(out.key);
    out.cert.reset(X509_new());
    X509* x = out.cert.get();
    REQUIRE(X509_set_version(x, 2) == 1);
    REQUIRE(ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1);
    REQUIRE(X509_gmtime_adj(X509_getm_notBefore(x), -60) != nullptr);
    REQUIRE(X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600) != nullptr);
    REQUIRE(X509_set_pubkey(x, out.key.get()) == 1);
    X509_NAME* name = X509_get_subject_name(x);
    REQUIRE(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                       reinterpret_cast<const unsigned char*>("edgepin.test"), -1,
                                       -1, 0) == 1);
    REQUIRE(X509_set_issuer_name(x, name) == 1);
    REQUIRE(X509_sign(x, out.key.get(), EVP_sha256()) > 0);
    return out;
  }();
  return id;
}

constexpr unsigned char kSidContext[] = "edgepin-test";

struct ServerOptions {
  int max_version = TLS1_3_VERSION;
  bool tickets = true;
};

SslCtxPtr make_server_ctx(nodetag::Tag tag, const std::shared_ptr<TicketKeyRing>& ring,
                          ServerOptions o = {}) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  REQUIRE(ctx);
  REQUIRE(SSL_CTX_use_certificate(ctx.get(), identity().cert.get()) == 1);
  REQUIRE(SSL_CTX_use_PrivateKey(ctx.get(), identity().key.get()) == 1);
  REQUIRE(SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) == 1);
  REQUIRE(SSL_CTX_set_max_proto_version(ctx.get(), o.max_version) == 1);
  // The same context ID everywhere: a session that does not resume on
  // another context fails for want of its key, not for a context mismatch.
  REQUIRE(SSL_CTX_set_session_id_context(ctx.get(), kSidContext, sizeof kSidContext - 1) == 1);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_SERVER);
  if (!o.tickets) SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(ctx.get(), 1);
  REQUIRE(install_node_tagging(ctx.get(), tag, ring) == InstallError::None);
  return ctx;
}

SslCtxPtr make_client_ctx(int version, bool tickets) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  REQUIRE(ctx);
  REQUIRE(SSL_CTX_set_min_proto_version(ctx.get(), version) == 1);
  REQUIRE(SSL_CTX_set_max_proto_version(ctx.get(), version) == 1);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  if (!tickets) SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
  return ctx;
}

struct Outcome {
  bool reused = false;
  int version = 0;
  // The client's session after the connection: it holds the ticket (or the
  // session ID) the client will present next time.
  SslSessionPtr session;
  std::vector<uint8_t> server_session_id;
};

bool retryable(SSL* ssl, int rc) {
  int err = SSL_get_error(ssl, rc);
  return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE;
}

std::string ssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += buf;
    out += "; ";
  }
  return out;
}

// One connection over a BIO pair: handshake, one application record from the
// server (the client's read processes TLS 1.3 NewSessionTickets on the way),
// then close_notify both ways so that both sides keep their sessions.
Outcome connect(SSL_CTX* client_ctx, SSL_CTX* server_ctx, SSL_SESSION* resume = nullptr) {
  SslPtr client(SSL_new(client_ctx));
  SslPtr server(SSL_new(server_ctx));
  REQUIRE(client);
  REQUIRE(server);
  BIO* client_bio = nullptr;
  BIO* server_bio = nullptr;
  REQUIRE(BIO_new_bio_pair(&client_bio, 0, &server_bio, 0) == 1);
  SSL_set_bio(client.get(), client_bio, client_bio);
  SSL_set_bio(server.get(), server_bio, server_bio);
  SSL_set_connect_state(client.get());
  SSL_set_accept_state(server.get());
  if (resume) REQUIRE(SSL_set_session(client.get(), resume) == 1);

  bool client_done = false;
  bool server_done = false;
  for (int step = 0; step < 64 && !(client_done && server_done); ++step) {
    if (!client_done) {
      int rc = SSL_do_handshake(client.get());
      client_done = rc == 1;
      INFO("client handshake: " << ssl_errors());
      REQUIRE((client_done || retryable(client.get(), rc)));
    }
    if (!server_done) {
      int rc = SSL_do_handshake(server.get());
      server_done = rc == 1;
      INFO("server handshake: " << ssl_errors());
      REQUIRE((server_done || retryable(server.get(), rc)));
    }
  }
  REQUIRE(client_done);
  REQUIRE(server_done);

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

  Outcome out;
  out.reused = SSL_session_reused(client.get()) == 1;
  CHECK(out.reused == (SSL_session_reused(server.get()) == 1));
  out.version = SSL_version(client.get());
  unsigned int id_len = 0;
  const unsigned char* id = SSL_SESSION_get_id(SSL_get_session(server.get()), &id_len);
  out.server_session_id.assign(id, id + id_len);

  // A session whose SSL is freed without a close_notify sent is removed
  // from the cache as "bad"; send one each way.
  SSL_shutdown(client.get());
  SSL_shutdown(server.get());
  out.session.reset(SSL_get1_session(client.get()));
  REQUIRE(out.session);
  return out;
}

std::vector<uint8_t> ticket_of(const SSL_SESSION* s) {
  const unsigned char* tick = nullptr;
  size_t len = 0;
  SSL_SESSION_get0_ticket(s, &tick, &len);
  return std::vector<uint8_t>(tick, tick + len);
}

std::vector<uint8_t> session_id_of(const SSL_SESSION* s) {
  unsigned int len = 0;
  const unsigned char* id = SSL_SESSION_get_id(s, &len);
  return std::vector<uint8_t>(id, id + len);
}

}  // namespace

// ================================================================ key ring

TEST_CASE("a key ring starts at epoch 1 with a key name carrying its tag", "[session_tagging]") {
  auto ring = TicketKeyRing::create(42, {}, kT0);
  REQUIRE(ring);
  CHECK(ring->tag() == 42);
  CHECK(ring->size() == 1);
  CHECK(ring->current_epoch() == 1);
  TicketKey key = ring->current();
  CHECK(key.epoch == 1);
  CHECK(key.created_at == kT0);
  CHECK(nodetag::decode_key_name(key.name) == nodetag::Decoded{42, 1});
  // Two independent key halves, both drawn (an all-zero key is a bug).
  CHECK(key.aes_key != key.hmac_key);
  CHECK(key.aes_key != decltype(key.aes_key){});
  auto match = ring->find(name_span(key));
  REQUIRE(match);
  CHECK(match->current);
  CHECK(match->key.aes_key == key.aes_key);
}

TEST_CASE("a key ring refuses tag 0 and impossible options", "[session_tagging]") {
  CHECK(TicketKeyRing::create(0, {}, kT0) == nullptr);
  CHECK(TicketKeyRing::create(1, {.rotate_interval = 0s}, kT0) == nullptr);
  CHECK(TicketKeyRing::create(1, {.grace_period = -1s}, kT0) == nullptr);
  CHECK(TicketKeyRing::create(1, {.max_keys = 0}, kT0) == nullptr);
  CHECK(TicketKeyRing::create(1, {.max_keys = kMaxTicketKeys + 1}, kT0) == nullptr);
  CHECK(TicketKeyRing::create(1, {.max_keys = kMaxTicketKeys}, kT0) != nullptr);
  nodetag::RandomSource broken = [](std::span<uint8_t>) { return false; };
  CHECK(TicketKeyRing::create(1, {}, kT0, broken) == nullptr);
}

TEST_CASE("rotation retires the current key and drops it after the grace period",
          "[session_tagging]") {
  auto ring = TicketKeyRing::create(7, {.rotate_interval = 60s, .grace_period = 100s}, kT0);
  REQUIRE(ring);
  TicketKey first = ring->current();

  CHECK(ring->maybe_rotate(kT0 + 59s) == RotateOutcome::NotDue);
  CHECK(ring->current_epoch() == 1);
  CHECK(ring->maybe_rotate(kT0 + 60s) == RotateOutcome::Rotated);
  TicketKey second = ring->current();
  CHECK(second.epoch == 2);
  CHECK(second.created_at == kT0 + 60s);
  CHECK(nodetag::decode_key_name(second.name) == nodetag::Decoded{7, 2});
  CHECK(second.name != first.name);
  CHECK(ring->size() == 2);

  // The retired key still opens tickets, and says it is not current.
  auto old = ring->find(name_span(first));
  REQUIRE(old);
  CHECK_FALSE(old->current);
  CHECK(old->key.aes_key == first.aes_key);
  CHECK(old->key.hmac_key == first.hmac_key);
  CHECK(ring->find(name_span(second))->current);

  // The first key was retired at +60s: a rotation at +159s keeps it...
  CHECK(ring->rotate(kT0 + 159s) == RotateOutcome::Rotated);
  CHECK(ring->current_epoch() == 3);
  CHECK(ring->find(name_span(first)));
  CHECK(ring->size() == 3);
  // ...one at +160s drops it; epoch 2 (retired at +159s) stays.
  CHECK(ring->rotate(kT0 + 160s) == RotateOutcome::Rotated);
  CHECK(ring->current_epoch() == 4);
  CHECK_FALSE(ring->find(name_span(first)));
  auto second_match = ring->find(name_span(second));
  REQUIRE(second_match);
  CHECK_FALSE(second_match->current);
  CHECK(ring->size() == 3);
}

TEST_CASE("maybe_rotate drops expired keys even when no rotation is due", "[session_tagging]") {
  auto ring = TicketKeyRing::create(7, {.rotate_interval = 1000s, .grace_period = 10s}, kT0);
  REQUIRE(ring);
  TicketKey first = ring->current();
  REQUIRE(ring->rotate(kT0 + 5s) == RotateOutcome::Rotated);
  CHECK(ring->maybe_rotate(kT0 + 14s) == RotateOutcome::NotDue);
  CHECK(ring->find(name_span(first)));
  CHECK(ring->maybe_rotate(kT0 + 15s) == RotateOutcome::NotDue);
  CHECK_FALSE(ring->find(name_span(first)));
  CHECK(ring->size() == 1);
  CHECK(ring->current_epoch() == 2);
}

TEST_CASE("a zero grace period keeps only the current key", "[session_tagging]") {
  auto ring = TicketKeyRing::create(3, {.rotate_interval = 1s, .grace_period = 0s}, kT0);
  REQUIRE(ring);
  TicketKey first = ring->current();
  REQUIRE(ring->rotate(kT0) == RotateOutcome::Rotated);
  CHECK(ring->size() == 1);
  CHECK_FALSE(ring->find(name_span(first)));
}

TEST_CASE("the ring never holds more than max_keys keys", "[session_tagging]") {
  auto ring =
      TicketKeyRing::create(9, {.rotate_interval = 1s, .grace_period = 24h, .max_keys = 4}, kT0);
  REQUIRE(ring);
  std::vector<TicketKey> keys{ring->current()};
  for (int i = 1; i <= 10; ++i) {
    REQUIRE(ring->rotate(kT0 + std::chrono::seconds(i)) == RotateOutcome::Rotated);
    keys.push_back(ring->current());
    CHECK(ring->size() == std::min<size_t>(i + 1, 4));
  }
  // The newest four remain (epochs 8..11), the rest went oldest first.
  for (const auto& k : keys) CHECK(ring->find(name_span(k)).has_value() == (k.epoch >= 8));
  CHECK(ring->current_epoch() == 11);
}

TEST_CASE("rotation with a failing random source leaves the ring unchanged", "[session_tagging]") {
  auto fail = std::make_shared<std::atomic<bool>>(false);
  nodetag::RandomSource random = [fail](std::span<uint8_t> out) {
    return !fail->load() && tls::openssl_random(out);
  };
  auto ring = TicketKeyRing::create(5, {.rotate_interval = 1s}, kT0, random);
  REQUIRE(ring);
  TicketKey first = ring->current();
  fail->store(true);
  CHECK(ring->rotate(kT0 + 10s) == RotateOutcome::RandomFailed);
  CHECK(ring->maybe_rotate(kT0 + 10s) == RotateOutcome::RandomFailed);
  CHECK(ring->size() == 1);
  CHECK(ring->current().name == first.name);
  fail->store(false);
  CHECK(ring->maybe_rotate(kT0 + 10s) == RotateOutcome::Rotated);
  CHECK(ring->current_epoch() == 2);
}

TEST_CASE("readers see a consistent ring while it rotates", "[session_tagging]") {
  auto ring =
      TicketKeyRing::create(11, {.rotate_interval = 1s, .grace_period = 3s, .max_keys = 8}, kT0);
  REQUIRE(ring);
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::atomic<long> reads{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      nodetag::Epoch last = 0;
      while (!stop.load()) {
        TicketKey k = ring->current();
        auto d = nodetag::decode_key_name(k.name);
        if (!d || d->tag != 11 || d->epoch != k.epoch || k.epoch < last) bad.fetch_add(1);
        last = k.epoch;
        // The key may be gone by now (max_keys); if it is found, it is
        // the same key, never a torn or mixed-up copy.
        if (auto m = ring->find(name_span(k));
            m && (m->key.aes_key != k.aes_key || m->key.epoch != k.epoch))
          bad.fetch_add(1);
        reads.fetch_add(1);
      }
    });
  }
  constexpr int kRotations = 2000;
  for (int i = 1; i <= kRotations; ++i)
    REQUIRE(ring->rotate(kT0 + std::chrono::milliseconds(i)) == RotateOutcome::Rotated);
  stop.store(true);
  for (auto& t : readers) t.join();
  CHECK(bad.load() == 0);
  CHECK(reads.load() > 0);
  CHECK(ring->current_epoch() == kRotations + 1);
  CHECK(ring->size() <= 8);
}

// =========================================================== installation

TEST_CASE("install_node_tagging checks its arguments", "[session_tagging]") {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  REQUIRE(ctx);
  auto ring = TicketKeyRing::create(4, {}, kT0);
  CHECK(install_node_tagging(ctx.get(), 0, ring) == InstallError::InvalidTag);
  CHECK(install_node_tagging(ctx.get(), 4, nullptr) == InstallError::NoKeyRing);
  CHECK(install_node_tagging(ctx.get(), 5, ring) == InstallError::TagMismatch);
  CHECK(installed_ring(ctx.get()) == nullptr);
  CHECK(install_node_tagging(ctx.get(), 4, ring) == InstallError::None);
  CHECK(installed_ring(ctx.get()) == ring);
  // Re-installing replaces the ring (and frees the previous state).
  auto other = TicketKeyRing::create(4, {}, kT0);
  CHECK(install_node_tagging(ctx.get(), 4, other) == InstallError::None);
  CHECK(installed_ring(ctx.get()) == other);
  CHECK(ring.use_count() == 1);
  ctx.reset();
  CHECK(other.use_count() == 1);
}

// ========================================================= real handshakes

TEST_CASE("TLS 1.2 session IDs carry the tag and resume from the cache", "[session_tagging][tls]") {
  auto ring = TicketKeyRing::create(0x1234, {}, kT0);
  auto server = make_server_ctx(0x1234, ring);
  auto client = make_client_ctx(TLS1_2_VERSION, /*tickets=*/false);

  Outcome full = connect(client.get(), server.get());
  CHECK_FALSE(full.reused);
  CHECK(full.version == TLS1_2_VERSION);
  auto id = session_id_of(full.session.get());
  CHECK(id == full.server_session_id);
  CHECK(nodetag::decode_session_id(id) == nodetag::Decoded{0x1234, 1});
  CHECK(ticket_of(full.session.get()).empty());
  CHECK(ring->counters().session_ids_issued.load() == 1);

  Outcome again = connect(client.get(), server.get(), full.session.get());
  CHECK(again.reused);
  CHECK(session_id_of(again.session.get()) == id);

  // Every new session gets a fresh ID with the current epoch.
  REQUIRE(ring->rotate(kT0 + 1s) == RotateOutcome::Rotated);
  Outcome other = connect(client.get(), server.get());
  CHECK_FALSE(other.reused);
  auto other_id = session_id_of(other.session.get());
  CHECK(other_id != id);
  CHECK(nodetag::decode_session_id(other_id) == nodetag::Decoded{0x1234, 2});
}

TEST_CASE("TLS 1.2 tickets start with a tagged key name and resume", "[session_tagging][tls]") {
  auto ring = TicketKeyRing::create(77, {}, kT0);
  auto server = make_server_ctx(77, ring);
  auto client = make_client_ctx(TLS1_2_VERSION, /*tickets=*/true);

  Outcome full = connect(client.get(), server.get());
  CHECK_FALSE(full.reused);
  auto ticket = ticket_of(full.session.get());
  REQUIRE(ticket.size() > nodetag::kKeyNameSize);
  CHECK(nodetag::decode_ticket(ticket) == nodetag::Decoded{77, 1});
  const TicketKey current = ring->current();
  CHECK(std::equal(current.name.begin(), current.name.end(), ticket.begin()));
  // The session ID the OpenSSL client keeps beside a TLS 1.2 ticket is its
  // own invention (the server sent none): it must not look tagged, which is
  // why the lb lets the ticket win.
  CHECK(full.server_session_id.empty());
  CHECK_FALSE(nodetag::decode_session_id(session_id_of(full.session.get())));

  Outcome again = connect(client.get(), server.get(), full.session.get());
  CHECK(again.reused);
  // Opened with the current key: no renewal, the client keeps its ticket.
  CHECK(ticket_of(again.session.get()) == ticket);
  CHECK(ring->counters().tickets_opened.load() == 1);
  CHECK(ring->counters().tickets_renewed.load() == 0);
}

TEST_CASE("TLS 1.3 tickets (PSK identities) start with a tagged key name and resume",
          "[session_tagging][tls]") {
  auto ring = TicketKeyRing::create(65535, {}, kT0);
  auto server = make_server_ctx(65535, ring);
  auto client = make_client_ctx(TLS1_3_VERSION, /*tickets=*/true);

  Outcome full = connect(client.get(), server.get());
  CHECK_FALSE(full.reused);
  CHECK(full.version == TLS1_3_VERSION);
  auto ticket = ticket_of(full.session.get());
  REQUIRE(ticket.size() > nodetag::kKeyNameSize);
  CHECK(nodetag::decode_ticket(ticket) == nodetag::Decoded{65535, 1});

  Outcome again = connect(client.get(), server.get(), full.session.get());
  CHECK(again.reused);
  CHECK(again.version == TLS1_3_VERSION);
  // Every TLS 1.3 resumption gets a fresh ticket (clients may use each
  // ticket once), sealed with the current key, so it still names the node.
  auto fresh = ticket_of(again.session.get());
  CHECK(fresh != ticket);
  CHECK(nodetag::decode_ticket(fresh) == nodetag::Decoded{65535, 1});
  CHECK(ring->counters().tickets_opened.load() == 1);
  CHECK(ring->counters().tickets_sealed.load() == 2);
  CHECK(ring->counters().tickets_renewed.load() == 0);

  // The fresh ticket resumes too: a chain of single-use tickets never falls
  // back to a full handshake.
  Outcome third = connect(client.get(), server.get(), again.session.get());
  CHECK(third.reused);
  CHECK(ring->counters().tickets_sealed.load() == 3);
}

TEST_CASE("TLS 1.3 stateful tickets (server without tickets) are tagged session IDs",
          "[session_tagging][tls]") {
  // With SSL_OP_NO_TICKET a TLS 1.3 OpenSSL server still sends tickets, but
  // stateful ones: the PSK identity is the session ID, which our
  // generate_session_id callback made. The lb must try the session-ID layout
  // on a 32-byte PSK identity.
  auto ring = TicketKeyRing::create(300, {}, kT0);
  auto server = make_server_ctx(300, ring, {.tickets = false});
  auto client = make_client_ctx(TLS1_3_VERSION, /*tickets=*/true);

  Outcome full = connect(client.get(), server.get());
  auto identity = ticket_of(full.session.get());
  REQUIRE(identity.size() == nodetag::kSessionIdSize);
  CHECK(nodetag::decode_session_id(identity) == nodetag::Decoded{300, 1});
  CHECK_FALSE(nodetag::decode_ticket(identity));
  CHECK(ring->counters().tickets_sealed.load() == 0);

  Outcome again = connect(client.get(), server.get(), full.session.get());
  CHECK(again.reused);
}

TEST_CASE("after a rotation old tickets still resume and are renewed", "[session_tagging][tls]") {
  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    INFO("version 0x" << std::hex << version);
    auto ring = TicketKeyRing::create(21, {.rotate_interval = 60s, .grace_period = 600s}, kT0);
    auto server = make_server_ctx(21, ring);
    auto client = make_client_ctx(version, /*tickets=*/true);

    Outcome full = connect(client.get(), server.get());
    auto old_ticket = ticket_of(full.session.get());
    REQUIRE(nodetag::decode_ticket(old_ticket) == nodetag::Decoded{21, 1});

    REQUIRE(ring->maybe_rotate(kT0 + 60s) == RotateOutcome::Rotated);
    Outcome renewed = connect(client.get(), server.get(), full.session.get());
    CHECK(renewed.reused);
    CHECK(ring->counters().tickets_renewed.load() == 1);
    // The server sent a fresh ticket sealed with the new current key.
    auto new_ticket = ticket_of(renewed.session.get());
    CHECK(nodetag::decode_ticket(new_ticket) == nodetag::Decoded{21, 2});

    // 600 s after the first key was retired it is gone: the old ticket
    // gets a full handshake, while the renewed one still resumes.
    REQUIRE(ring->maybe_rotate(kT0 + 660s) == RotateOutcome::Rotated);
    Outcome expired = connect(client.get(), server.get(), full.session.get());
    CHECK_FALSE(expired.reused);
    CHECK(ring->counters().tickets_unknown_key.load() == 1);
    CHECK(nodetag::decode_ticket(ticket_of(expired.session.get())) == nodetag::Decoded{21, 3});

    Outcome still = connect(client.get(), server.get(), renewed.session.get());
    CHECK(still.reused);
  }
}

TEST_CASE("two contexts with different tags in one process keep their keys apart",
          "[session_tagging][tls]") {
  auto ring_a = TicketKeyRing::create(1, {}, kT0);
  auto ring_b = TicketKeyRing::create(2, {}, kT0);
  auto server_a = make_server_ctx(1, ring_a);
  auto server_b = make_server_ctx(2, ring_b);

  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    INFO("version 0x" << std::hex << version);
    auto client = make_client_ctx(version, /*tickets=*/true);
    Outcome a = connect(client.get(), server_a.get());
    Outcome b = connect(client.get(), server_b.get());
    CHECK(nodetag::decode_ticket(ticket_of(a.session.get()))->tag == 1);
    CHECK(nodetag::decode_ticket(ticket_of(b.session.get()))->tag == 2);

    // Each resumes where it was issued, and nowhere else.
    CHECK(connect(client.get(), server_a.get(), a.session.get()).reused);
    CHECK(connect(client.get(), server_b.get(), b.session.get()).reused);
    CHECK_FALSE(connect(client.get(), server_b.get(), a.session.get()).reused);
    CHECK_FALSE(connect(client.get(), server_a.get(), b.session.get()).reused);
  }
  CHECK(ring_a->counters().tickets_unknown_key.load() == 2);
  CHECK(ring_b->counters().tickets_unknown_key.load() == 2);

  auto client12 = make_client_ctx(TLS1_2_VERSION, /*tickets=*/false);
  CHECK(nodetag::decode_session_id(
            session_id_of(connect(client12.get(), server_a.get()).session.get()))
            ->tag == 1);
  CHECK(nodetag::decode_session_id(
            session_id_of(connect(client12.get(), server_b.get()).session.get()))
            ->tag == 2);
}

TEST_CASE("many TLS 1.2 sessions get distinct tagged session IDs", "[session_tagging][tls]") {
  auto ring = TicketKeyRing::create(99, {}, kT0);
  auto server = make_server_ctx(99, ring, {.max_version = TLS1_2_VERSION});
  auto client = make_client_ctx(TLS1_2_VERSION, /*tickets=*/false);
  std::set<std::vector<uint8_t>> ids;
  constexpr int kSessions = 20;
  for (int i = 0; i < kSessions; ++i) {
    auto id = session_id_of(connect(client.get(), server.get()).session.get());
    CHECK(nodetag::decode_session_id(id) == nodetag::Decoded{99, 1});
    ids.insert(id);
  }
  CHECK(ids.size() == kSessions);
  CHECK(SSL_CTX_sess_number(server.get()) == kSessions);
}

TEST_CASE("a session ID already in the session cache is drawn again", "[session_tagging][tls]") {
  // The first two session IDs get the same random part: the second one
  // would clash with the first session, still in the cache.
  auto fixed_left = std::make_shared<std::atomic<int>>(2);
  nodetag::RandomSource random = [fixed_left](std::span<uint8_t> out) {
    if (out.size() == nodetag::kSessionIdRandomSize && fixed_left->fetch_sub(1) > 0) {
      std::fill(out.begin(), out.end(), uint8_t{0x5A});
      return true;
    }
    return tls::openssl_random(out);
  };
  auto ring = TicketKeyRing::create(8, {}, kT0, random);
  REQUIRE(ring);
  auto server = make_server_ctx(8, ring, {.max_version = TLS1_2_VERSION});
  auto client = make_client_ctx(TLS1_2_VERSION, /*tickets=*/false);

  Outcome a = connect(client.get(), server.get());
  Outcome b = connect(client.get(), server.get());
  auto id_a = session_id_of(a.session.get());
  auto id_b = session_id_of(b.session.get());
  CHECK(std::all_of(id_a.begin() + 8, id_a.begin() + 24, [](uint8_t x) { return x == 0x5A; }));
  CHECK(id_b != id_a);
  CHECK(nodetag::decode_session_id(id_b) == nodetag::Decoded{8, 1});
  CHECK(ring->counters().session_id_clashes.load() == 1);
  CHECK(ring->counters().session_ids_issued.load() == 2);
  CHECK(connect(client.get(), server.get(), a.session.get()).reused);
  CHECK(connect(client.get(), server.get(), b.session.get()).reused);
}

TEST_CASE("a failing random source fails the handshake instead of issuing an untagged ID",
          "[session_tagging][tls]") {
  auto fail_ids = std::make_shared<std::atomic<bool>>(false);
  nodetag::RandomSource random = [fail_ids](std::span<uint8_t> out) {
    if (out.size() == nodetag::kSessionIdRandomSize && fail_ids->load()) return false;
    return tls::openssl_random(out);
  };
  auto ring = TicketKeyRing::create(8, {}, kT0, random);
  REQUIRE(ring);
  auto server = make_server_ctx(8, ring, {.max_version = TLS1_2_VERSION});
  auto client = make_client_ctx(TLS1_2_VERSION, /*tickets=*/false);
  fail_ids->store(true);

  SslPtr c(SSL_new(client.get()));
  SslPtr s(SSL_new(server.get()));
  BIO* cb = nullptr;
  BIO* sb = nullptr;
  REQUIRE(BIO_new_bio_pair(&cb, 0, &sb, 0) == 1);
  SSL_set_bio(c.get(), cb, cb);
  SSL_set_bio(s.get(), sb, sb);
  SSL_set_connect_state(c.get());
  SSL_set_accept_state(s.get());
  bool server_failed = false;
  for (int step = 0; step < 16 && !server_failed; ++step) {
    SSL_do_handshake(c.get());
    int rc = SSL_do_handshake(s.get());
    server_failed = rc <= 0 && !retryable(s.get(), rc);
  }
  ERR_clear_error();
  CHECK(server_failed);
  CHECK(ring->counters().session_id_failures.load() == 1);
  CHECK(ring->counters().session_ids_issued.load() == 0);
}
