#include "router.h"

#include <netinet/in.h>

#include <algorithm>

namespace edgepin::lb {

const char* to_string(RouteReason r) {
  switch (r) {
#define X(name, str)      \
  case RouteReason::name: \
    return str;
    EDGEPIN_ROUTE_REASONS(X)
#undef X
  }
  return "?";
}

const char* to_string(TagSource s) {
  switch (s) {
    case TagSource::None:
      return "-";
    case TagSource::PskIdentity:
      return "psk";
    case TagSource::SessionTicket:
      return "ticket";
    case TagSource::SessionId:
      return "session_id";
  }
  return "?";
}

Router::Router(std::span<ServerState* const> servers, Balancer& balancer, StickTable* table,
               Options options)
    : servers_(servers.begin(), servers.end()),
      balancer_(balancer),
      table_(table),
      options_(options) {
  // Servers removed by a reload stay in the list (stick-table entries name
  // them by id) but own no tag and no share of the source hash.
  std::vector<ServerState*> members;
  for (ServerState* s : servers_) {
    if (s->removed.load(std::memory_order_relaxed)) continue;
    members.push_back(s);
    if (s->tag != nodetag::kInvalidTag) by_tag_[s->tag] = s;
  }
  if (options_.source_affinity) {
    if (options_.source_hash == Algorithm::Ring)
      source_ring_ = std::make_unique<HashRing>(members);
    else
      source_maglev_ = std::make_unique<MaglevTable>(members);
  }
}

ServerState* Router::by_tag(nodetag::Tag tag) const {
  auto it = by_tag_.find(tag);
  return it == by_tag_.end() ? nullptr : it->second;
}

ServerState* Router::by_id(uint32_t id) const {
  // Server ids are indexes into the server list.
  return id < servers_.size() ? servers_[id] : nullptr;
}

namespace {

// Hashes the first `prefix` bits of an address.
uint64_t hash_prefix(const uint8_t* addr, size_t len, uint8_t prefix) {
  uint8_t masked[16] = {};
  size_t bits = std::min<size_t>(prefix, len * 8);
  for (size_t i = 0; i < len; ++i) {
    size_t keep = bits > i * 8 ? std::min<size_t>(8, bits - i * 8) : 0;
    masked[i] = keep ? static_cast<uint8_t>(addr[i] & (0xff << (8 - keep))) : 0;
  }
  return hash_bytes({masked, len});
}

}  // namespace

uint64_t Router::client_key(const sockaddr* client) const {
  // The address only: a client's source port changes on every connection.
  if (client && client->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(client);
    return hash_prefix(reinterpret_cast<const uint8_t*>(&in->sin_addr), 4, options_.ipv4_prefix);
  }
  if (client && client->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(client);
    return hash_prefix(reinterpret_cast<const uint8_t*>(&in6->sin6_addr), 16, options_.ipv6_prefix);
  }
  return 0;
}

namespace {

// The node tag of a ClientHello's resumption data, in the order of trust:
// a PSK identity or ticket was issued by the server, while a TLS 1.2 client
// that resumes by ticket invents its session ID.
std::pair<TagSource, std::optional<nodetag::Decoded>> find_tag(const tls::ClientHello& h) {
  for (const auto& psk : h.psk_identities) {
    if (auto d = nodetag::decode_ticket(psk.identity)) return {TagSource::PskIdentity, d};
    // An OpenSSL server with tickets off still issues TLS 1.3 PSKs, whose
    // identity is then the (tagged) session ID.
    if (auto d = nodetag::decode_session_id(psk.identity)) return {TagSource::PskIdentity, d};
  }
  if (!h.session_ticket.empty())
    if (auto d = nodetag::decode_ticket(h.session_ticket)) return {TagSource::SessionTicket, d};
  if (auto d = nodetag::decode_session_id(h.session_id)) return {TagSource::SessionId, d};
  return {TagSource::None, std::nullopt};
}

}  // namespace

RouteDecision Router::route(const tls::ClientHello* hello, const sockaddr* client,
                            StickTable::Clock::time_point now) {
  RouteDecision d;
  if (hello) {
    auto [source, tag] = find_tag(*hello);
    if (tag) {
      d.tag_source = source;
      d.tag = tag->tag;
      ServerState* s = by_tag(tag->tag);
      if (s && s->usable_for_bound()) {
        d.server = s;
        d.reason = RouteReason::Tag;
        return d;
      }
      d.bound_unusable = true;
    }
    if (table_) {
      // Ticket first, for the same reason as above.
      std::optional<StickKey> keys[] = {StickKey::ticket(hello->session_ticket),
                                        StickKey::session_id(hello->session_id)};
      for (const auto& key : keys) {
        if (!key) continue;
        if (auto id = table_->lookup(*key, now)) {
          ServerState* s = by_id(*id);
          if (s && s->usable_for_bound()) {
            d.server = s;
            d.reason = RouteReason::Stick;
            return d;
          }
          d.bound_unusable = true;
        }
      }
    }
  }
  if (options_.source_affinity && client) {
    uint64_t key = client_key(client);
    ServerState* s = nullptr;
    if (source_ring_) {
      s = source_ring_->lookup(key, [](const ServerState* x) { return x->usable_for_new(); });
    } else if (source_maglev_) {
      s = source_maglev_->lookup(key);
      if (s && !s->usable_for_new()) s = nullptr;  // falls to the balancer
    }
    if (s) {
      d.server = s;
      d.reason = RouteReason::Source;
      return d;
    }
  }
  d.server = balancer_.pick(client_key(client), nullptr);
  d.reason = d.server ? RouteReason::Balance : RouteReason::NoServer;
  return d;
}

ServerState* Router::redispatch(const ServerState* failed, const sockaddr* client) {
  return balancer_.pick(client_key(client), failed);
}

void Router::learn_client(const tls::ClientHello& hello, const ServerState& server,
                          StickTable::Clock::time_point now) {
  if (!table_) return;
  if (!hello.offers_tls13())
    if (auto key = StickKey::session_id(hello.session_id)) table_->learn(*key, server.id, now);
  if (auto key = StickKey::ticket(hello.session_ticket)) table_->learn(*key, server.id, now);
}

void Router::learn_server_hello(const tls::ServerHello& sh, const ServerState& server,
                                StickTable::Clock::time_point now) {
  if (!table_ || sh.is_hello_retry_request) return;
  // TLS 1.3 echoes the client's random legacy_session_id: it names nothing.
  if (sh.selected_version >= tls::version::kTls13) return;
  if (auto key = StickKey::session_id(sh.session_id)) table_->learn(*key, server.id, now);
}

void Router::learn_ticket(std::span<const uint8_t> ticket, const ServerState& server,
                          StickTable::Clock::time_point now) {
  if (!table_) return;
  if (auto key = StickKey::ticket(ticket)) table_->learn(*key, server.id, now);
}

}  // namespace edgepin::lb
