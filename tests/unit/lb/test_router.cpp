#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <memory>
#include <set>

#include "random.h"
#include "router.h"

using namespace edgepin;
using namespace edgepin::lb;

namespace {

struct Cluster {
  std::vector<std::unique_ptr<ServerState>> owned;
  std::vector<ServerState*> ptrs;
  std::unique_ptr<Balancer> balancer;
  StickTable table{StickTable::Options{}};
  std::unique_ptr<Router> router;

  explicit Cluster(Router::Options opts = {}, Algorithm algo = Algorithm::RoundRobin) {
    for (uint16_t i = 0; i < 3; ++i) {
      auto s = std::make_unique<ServerState>();
      s->id = i;
      s->name = "node" + std::to_string(i + 1);
      s->tag = static_cast<uint16_t>(i + 1);
      ptrs.push_back(s.get());
      owned.push_back(std::move(s));
    }
    balancer = make_balancer(algo, ptrs);
    router = std::make_unique<Router>(ptrs, *balancer, &table, opts);
  }
  ServerState& node(int n) { return *ptrs[static_cast<size_t>(n - 1)]; }
};

std::vector<uint8_t> tagged_id(uint16_t tag) {
  std::array<uint8_t, nodetag::kSessionIdRandomSize> r{};
  r.fill(0x42);
  auto e = nodetag::encode_session_id(tag, 7, r);
  REQUIRE(e.ok());
  return {e.bytes.begin(), e.bytes.end()};
}

std::vector<uint8_t> tagged_ticket(uint16_t tag) {
  auto e = nodetag::encode_key_name(tag, 7, edgepin::tls::openssl_random);
  REQUIRE(e.ok());
  std::vector<uint8_t> t(e.bytes.begin(), e.bytes.end());
  t.resize(180, 0x99);  // iv, ciphertext, mac: opaque to the lb
  return t;
}

std::vector<uint8_t> random_bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed * 31 + i * 7);
  return v;
}

tls::ClientHello tls12_hello() {
  tls::ClientHello h;
  h.legacy_version = tls::version::kTls12;
  return h;
}

tls::ClientHello tls13_hello() {
  tls::ClientHello h;
  h.legacy_version = tls::version::kTls12;
  h.supported_versions = {tls::version::kTls13, tls::version::kTls12};
  h.session_id = random_bytes(32, 1);  // middlebox-compat random
  return h;
}

sockaddr_in addr(const char* ip) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, ip, &a.sin_addr);
  a.sin_port = htons(40000);
  return a;
}

const auto now = StickTable::Clock::now();

}  // namespace

TEST_CASE("router: a tagged TLS 1.3 PSK identity routes to its node") {
  Cluster c;
  auto h = tls13_hello();
  h.psk_identities.push_back({tagged_ticket(3), 1234});
  auto d = c.router->route(&h, nullptr, now);
  CHECK(d.server == &c.node(3));
  CHECK(d.reason == RouteReason::Tag);
  CHECK(d.tag_source == TagSource::PskIdentity);
  CHECK(d.tag == 3);
}

TEST_CASE("router: a TLS 1.2 ticket wins over the session ID the client made up") {
  Cluster c;
  auto h = tls12_hello();
  h.has_session_ticket = true;
  h.session_ticket = tagged_ticket(2);
  h.session_id = tagged_id(1);  // even a tagged-looking ID loses to the ticket
  auto d = c.router->route(&h, nullptr, now);
  CHECK(d.server == &c.node(2));
  CHECK(d.tag_source == TagSource::SessionTicket);
}

TEST_CASE("router: a tagged TLS 1.2 session ID routes to its node") {
  Cluster c;
  auto h = tls12_hello();
  h.session_id = tagged_id(1);
  auto d = c.router->route(&h, nullptr, now);
  CHECK(d.server == &c.node(1));
  CHECK(d.reason == RouteReason::Tag);
  CHECK(d.tag_source == TagSource::SessionId);
}

TEST_CASE("router: a tag whose node is down or unknown falls through to the balancer") {
  Cluster c;
  c.node(2).healthy = false;
  auto h = tls12_hello();
  h.session_id = tagged_id(2);
  for (int i = 0; i < 6; ++i) {
    auto d = c.router->route(&h, nullptr, now);
    CHECK(d.reason == RouteReason::Balance);
    CHECK(d.bound_unusable);
    CHECK(d.server != &c.node(2));
  }
  h.session_id = tagged_id(9);  // no such node
  auto d = c.router->route(&h, nullptr, now);
  CHECK(d.reason == RouteReason::Balance);
  CHECK(d.tag == 9);
}

TEST_CASE("router: a drained node keeps its tagged clients, maint does not") {
  Cluster c;
  auto h = tls12_hello();
  h.session_id = tagged_id(2);
  c.node(2).admin = AdminState::Drain;
  CHECK(c.router->route(&h, nullptr, now).server == &c.node(2));
  c.node(2).admin = AdminState::Maint;
  CHECK(c.router->route(&h, nullptr, now).server != &c.node(2));
}

TEST_CASE("router: the stick table matches session IDs learned from a TLS 1.2 ServerHello") {
  Cluster c;
  auto sid = random_bytes(32, 5);  // untagged: a server that is not an edgepin node
  tls::ServerHello sh;
  sh.selected_version = tls::version::kTls12;
  sh.session_id = sid;
  c.router->learn_server_hello(sh, c.node(3), now);
  auto h = tls12_hello();
  h.session_id = sid;
  auto d = c.router->route(&h, nullptr, now);
  CHECK(d.server == &c.node(3));
  CHECK(d.reason == RouteReason::Stick);
  // A down server's entry is skipped; the client is balanced elsewhere.
  c.node(3).healthy = false;
  d = c.router->route(&h, nullptr, now);
  CHECK(d.reason == RouteReason::Balance);
  CHECK(d.bound_unusable);
}

TEST_CASE("router: TLS 1.2 tickets from a NewSessionTicket stick too") {
  Cluster c;
  auto ticket = random_bytes(200, 9);
  c.router->learn_ticket(ticket, c.node(2), now);
  auto h = tls12_hello();
  h.session_ticket = ticket;
  h.session_id = random_bytes(32, 10);  // made up by the client
  auto d = c.router->route(&h, nullptr, now);
  CHECK(d.server == &c.node(2));
  CHECK(d.reason == RouteReason::Stick);
}

TEST_CASE("router: a TLS 1.3 session ID echo is never learned") {
  Cluster c;
  tls::ServerHello sh;
  sh.selected_version = tls::version::kTls13;
  sh.session_id = random_bytes(32, 11);
  c.router->learn_server_hello(sh, c.node(1), now);
  auto h13 = tls13_hello();
  h13.session_id = sh.session_id;
  c.router->learn_client(h13, c.node(1), now);
  CHECK(c.table.stats().entries == 0);
  // A TLS 1.2-only client's session ID is learned from its ClientHello.
  auto h12 = tls12_hello();
  h12.session_id = random_bytes(32, 12);
  c.router->learn_client(h12, c.node(2), now);
  CHECK(c.table.stats().entries == 1);
  CHECK(c.router->route(&h12, nullptr, now).server == &c.node(2));
}

TEST_CASE("router: source affinity keeps an address on one server, masked by prefix") {
  Router::Options o;
  o.source_affinity = true;
  o.ipv4_prefix = 24;
  Cluster c(o);
  auto a1 = addr("192.0.2.10"), a2 = addr("192.0.2.200");
  auto d1 = c.router->route(nullptr, reinterpret_cast<sockaddr*>(&a1), now);
  CHECK(d1.reason == RouteReason::Source);
  for (int i = 0; i < 10; ++i) {
    CHECK(c.router->route(nullptr, reinterpret_cast<sockaddr*>(&a1), now).server == d1.server);
    // Same /24: same server.
    CHECK(c.router->route(nullptr, reinterpret_cast<sockaddr*>(&a2), now).server == d1.server);
  }
  // Off by default: the balancer takes turns.
  Cluster plain;
  std::set<ServerState*> seen;
  for (int i = 0; i < 3; ++i)
    seen.insert(plain.router->route(nullptr, reinterpret_cast<sockaddr*>(&a1), now).server);
  CHECK(seen.size() == 3);
}

TEST_CASE("router: redispatch never returns the failed server") {
  Cluster c;
  for (int i = 0; i < 10; ++i) CHECK(c.router->redispatch(&c.node(1), nullptr) != &c.node(1));
  c.node(2).healthy = false;
  c.node(3).healthy = false;
  CHECK(c.router->redispatch(&c.node(1), nullptr) == nullptr);
}

TEST_CASE("router: no usable server at all") {
  Cluster c;
  for (int n = 1; n <= 3; ++n) c.node(n).healthy = false;
  auto d = c.router->route(nullptr, nullptr, now);
  CHECK(d.server == nullptr);
  CHECK(d.reason == RouteReason::NoServer);
}

TEST_CASE("router: a TLS 1.3 PSK identity that is a tagged session ID routes too") {
  // OpenSSL with tickets off makes the session ID the PSK identity.
  Cluster c;
  auto h = tls13_hello();
  h.psk_identities.push_back({tagged_id(2), 0});
  auto d = c.router->route(&h, nullptr, now);
  CHECK(d.server == &c.node(2));
  CHECK(d.tag_source == TagSource::PskIdentity);
}
