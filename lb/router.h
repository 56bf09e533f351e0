#pragma once
// Picks the server for a new client connection, in this order
// (docs/stickiness.md, "The lb's routing order"):
//   1. a node tag in the resumption data of the ClientHello (TLS 1.3 PSK
//      identity, TLS 1.2 SessionTicket, TLS 1.2 session ID: a ticket wins
//      over the session ID, which a ticket-resuming client makes up);
//   2. a stick-table entry for the ticket or session ID;
//   3. source-address affinity (consistent hash of the client IP), if on;
//   4. the balance algorithm.
// A tag or entry that points at a server which cannot take the client
// (down, in maintenance, unknown tag) falls through to the next step; the
// decision records that for the log.
//
// Shared by all workers: the router's own fields are immutable, the state
// it reads (server health, stick table) is thread-safe.
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "balancer.h"
#include "node_tag.h"
#include "server.h"
#include "stick_table.h"
#include "tls_hello.h"

namespace edgepin::lb {

#define EDGEPIN_ROUTE_REASONS(X)                            \
  X(None, "-") /* the session ended before it was routed */ \
  X(Tag, "tag")                                             \
  X(Stick, "stick")                                         \
  X(Source, "source")                                       \
  X(Balance, "balance")                                     \
  X(Redispatch, "redispatch")                               \
  X(NoServer, "no_server")

enum class RouteReason : uint8_t {
#define X(name, str) name,
  EDGEPIN_ROUTE_REASONS(X)
#undef X
};
inline constexpr size_t kRouteReasonCount = 0
#define X(name, str) +1
    EDGEPIN_ROUTE_REASONS(X)
#undef X
    ;
const char* to_string(RouteReason r);

// Where a node tag was read from.
enum class TagSource : uint8_t { None, PskIdentity, SessionTicket, SessionId };
const char* to_string(TagSource s);

struct RouteDecision {
  ServerState* server = nullptr;
  RouteReason reason = RouteReason::None;
  TagSource tag_source = TagSource::None;
  nodetag::Tag tag = nodetag::kInvalidTag;
  // A tag or stick entry named a server that could not take the client.
  bool bound_unusable = false;
};

class Router {
 public:
  struct Options {
    bool source_affinity = false;
    Algorithm source_hash = Algorithm::Maglev;
    // Clients are hashed by their address masked to these prefixes, so a
    // client whose IPv6 interface identifier rotates stays put.
    uint8_t ipv4_prefix = 32;
    uint8_t ipv6_prefix = 64;
  };
  // `servers`, `balancer` and `table` (may be null: no stick table) must
  // outlive the router.
  Router(std::span<ServerState* const> servers, Balancer& balancer, StickTable* table,
         Options options);

  // `hello` is null when the frontend does not inspect or inspection failed.
  RouteDecision route(const tls::ClientHello* hello, const sockaddr* client,
                      StickTable::Clock::time_point now);
  // Another server for a client whose connect to `failed` failed for good;
  // nullptr when there is none.
  ServerState* redispatch(const ServerState* failed, const sockaddr* client);

  // Stick-table learning (HAProxy's `stick on` + `stick store-response`).
  // From the ClientHello once the server is connected: its session ID if the
  // client cannot speak TLS 1.3 (a 1.3 client's legacy_session_id is random
  // per connection), and its ticket.
  void learn_client(const tls::ClientHello& hello, const ServerState& server,
                    StickTable::Clock::time_point now);
  // From the server's flight: a TLS <= 1.2 ServerHello's session ID (never a
  // TLS 1.3 echo) and a cleartext NewSessionTicket.
  void learn_server_hello(const tls::ServerHello& sh, const ServerState& server,
                          StickTable::Clock::time_point now);
  void learn_ticket(std::span<const uint8_t> ticket, const ServerState& server,
                    StickTable::Clock::time_point now);

  ServerState* by_tag(nodetag::Tag tag) const;
  ServerState* by_id(uint32_t id) const;

 private:
  uint64_t client_key(const sockaddr* client) const;

  std::vector<ServerState*> servers_;
  std::unordered_map<nodetag::Tag, ServerState*> by_tag_;
  Balancer& balancer_;
  StickTable* table_;
  Options options_;
  std::unique_ptr<MaglevTable> source_maglev_;
  std::unique_ptr<HashRing> source_ring_;
};

}  // namespace edgepin::lb
