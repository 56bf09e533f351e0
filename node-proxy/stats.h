#pragma once
// The node-proxy's built-in pages, rendered as LocalResponses that the HTTP
// layer serves on config.health.path and config.stats.path:
//   - health: 200 "OK" while the node serves (Tomcat up, not draining),
//     503 with the reason otherwise; what the lb's http check and any
//     external monitor read.
//   - stats: the node's counters summed over its workers (per-thread
//     counters, summed on read: docs/architecture.md, "Counters, logs and
//     the operator's views"), as HTML for people and JSON for tools
//     (stable keys; counters only grow, gauges say so).
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "counters.h"
#include "worker_context.h"

namespace edgepin::nodeproxy {

class TlsContext;

// Who asks for the health answer. The lb asks "send new users here?",
// which draining answers no. A peer asks "can you serve the sessions you
// own?", which a draining node still does: were it reported down to peers,
// they would serve its users elsewhere and those users would lose their
// sessions, the very thing draining exists to avoid.
enum class HealthAudience : uint8_t { Balancer, Peer };

// Health answer, the only one: the HTTP layer serves it on health.path.
// 200 "UP\n" if node.tomcat_up and (!node.draining or the audience is a
// peer); else 503 "DOWN: tomcat not responding\n" or "DOWN: draining\n"
// (the Tomcat reason first when both hold). text/plain.
LocalResponse render_health(const NodeState& node,
                            HealthAudience audience = HealthAudience::Balancer);

// What the stats page reads.
struct StatsSource {
  std::string node_name;
  uint16_t node_tag = 0;
  std::string cluster_name;
  std::string upstream;  // "127.0.0.1:8080"
  const NodeState* node = nullptr;
  std::vector<const NodeCounters*> workers;
  const TlsContext* tls = nullptr;  // null without TLS listeners
  config::AffinityMode affinity_mode = config::AffinityMode::None;
};

// One peer's health as the peer health checker sees it.
struct PeerHealthSnapshot {
  std::string name;
  std::string address;  // its peer port
  bool up = false;
};

// A consistent-enough copy of the numbers (each counter is read once).
struct StatsSnapshot {
  std::string node_name;
  uint16_t node_tag = 0;
  std::string cluster_name;
  std::string version;
  std::string upstream;
  int64_t uptime_s = 0;
  bool tomcat_up = false;
  bool draining = false;
  size_t workers = 0;

  uint64_t connections_accepted = 0;
  uint64_t connections_active = 0;  // gauge
  uint64_t connections_refused_untrusted = 0;
  uint64_t connections_refused_limit = 0;
  uint64_t proxy_header_errors = 0;
  uint64_t proxy_header_timeouts = 0;
  uint64_t proxy_header_closed = 0;

  uint64_t requests = 0;
  std::array<uint64_t, 6> responses_by_class{};  // [0] other, [1] 1xx .. [5] 5xx
  uint64_t request_errors = 0;                   // sum over parser errors
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t upstream_connects = 0;
  uint64_t upstream_reuses = 0;
  uint64_t upstream_connect_errors = 0;
  uint64_t upstream_timeouts = 0;

  uint64_t tls_handshakes_full = 0;
  uint64_t tls_handshakes_resumed = 0;
  uint64_t tls_handshake_errors = 0;
  uint64_t tls_handshake_timeouts = 0;
  uint64_t tls_handshake_closed = 0;
  // With TLS: the resumption state.
  bool tls = false;
  int64_t tls_cached_sessions = 0;  // gauge
  uint32_t ticket_key_epoch = 0;    // gauge
  size_t ticket_keys = 0;           // gauge
  bool tickets_enabled = false;

  // L7 affinity: requests by outcome (affinity::Outcome order) and the
  // peer link.
  std::string affinity_mode;
  std::array<uint64_t, affinity::kOutcomeCount> affinity{};
  uint64_t affinity_cookies_issued = 0;
  uint64_t relay_fallbacks = 0;
  uint64_t peer_connections_accepted = 0;
  uint64_t peer_connections_refused = 0;
  uint64_t peer_connects = 0;
  uint64_t peer_reuses = 0;
  uint64_t peer_connect_errors = 0;
  uint64_t peer_timeouts = 0;
  uint64_t peer_retries = 0;
  // Failover to a peer when Tomcat fails (by FailoverReason), passive
  // mark-downs, and upstream connections closed for saying too much.
  std::array<uint64_t, kFailoverReasonCount> failovers{};
  uint64_t failovers_impossible = 0;
  uint64_t tomcat_passive_downs = 0;
  uint64_t peer_passive_downs = 0;
  uint64_t upstream_extra_bytes = 0;
  uint64_t peer_extra_bytes = 0;
  std::vector<PeerHealthSnapshot> peers;
};

// Reads every counter once. Safe from any thread.
StatsSnapshot collect_stats(const StatsSource& source);

// The page: JSON (application/json) or HTML (text/html), status 200.
LocalResponse render_stats(const StatsSnapshot& stats, bool json);

}  // namespace edgepin::nodeproxy
