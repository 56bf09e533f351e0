#pragma once
// The node-proxy's counters, one per outcome, per worker thread (summed on
// read by the stats page and /metrics). Add a counter here next to the
// code path that owns the outcome; never count one outcome in two places.
#include <array>
#include <cstddef>
#include <cstdint>

#include "affinity.h"
#include "counter.h"
#include "http1.h"
#include "proxy_protocol.h"

namespace edgepin::nodeproxy {

// How a request ended (node-proxy/exchange.*): the access log's
// `end=` and one counter each. X(name, log name)
#define EDGEPIN_NODE_REQUEST_ENDS(X)                                              \
  X(Complete, "complete")                /* response fully sent */                \
  X(Local, "local")                      /* answered by the proxy (health...) */  \
  X(BadRequest, "bad_request")           /* head rejected by the parser */        \
  X(BadBody, "bad_body")                 /* request body framing error */         \
  X(HeaderTimeout, "header_timeout")     /* 408: head not complete in time */     \
  X(ClientTimeout, "client_timeout")     /* client silent or not reading */       \
  X(ClientClosed, "client_closed")       /* client closed or reset mid-request */ \
  X(ConnectFailed, "connect_failed")     /* 502/503: upstream refused */          \
  X(ConnectTimeout, "connect_timeout")   /* 504: upstream connect timed out */    \
  X(UpstreamTimeout, "upstream_timeout") /* 504 or cut: upstream silent */        \
  X(UpstreamClosed, "upstream_closed")   /* 502 or cut: upstream closed early */  \
  X(UpstreamInvalid, "upstream_invalid") /* 502 or cut: malformed response */     \
  X(TunnelClosed, "tunnel_closed")       /* 101 tunnel ended normally */          \
  X(TunnelTimeout, "tunnel_timeout")     /* 101 tunnel idle too long */           \
  X(TunnelError, "tunnel_error")         /* 101 tunnel reset by a side */         \
  X(Shutdown, "shutdown")                /* the worker closed the connection */

enum class RequestEnd : uint8_t {
#define EDGEPIN_NODE_REQUEST_END_ENUM(name, text) name,
  EDGEPIN_NODE_REQUEST_ENDS(EDGEPIN_NODE_REQUEST_END_ENUM)
#undef EDGEPIN_NODE_REQUEST_END_ENUM
};

inline constexpr size_t kRequestEndCount = 0
#define EDGEPIN_NODE_REQUEST_END_COUNT(name, text) +1
    EDGEPIN_NODE_REQUEST_ENDS(EDGEPIN_NODE_REQUEST_END_COUNT)
#undef EDGEPIN_NODE_REQUEST_END_COUNT
    ;

constexpr const char* to_string(RequestEnd e) {
  switch (e) {
#define EDGEPIN_NODE_REQUEST_END_NAME(name, text) \
  case RequestEnd::name:                          \
    return text;
    EDGEPIN_NODE_REQUEST_ENDS(EDGEPIN_NODE_REQUEST_END_NAME)
#undef EDGEPIN_NODE_REQUEST_END_NAME
  }
  return "?";
}

// Why a request was sent to a peer instead of the local Tomcat (retry
// before the first byte, node-proxy/exchange.*): the access log's
// `failover=` and one counter each. X(name, log name)
#define EDGEPIN_FAILOVER_REASONS(X)                                                   \
  X(TomcatDown, "tomcat_down")         /* known down (checked or passive): at once */ \
  X(ConnectFailed, "connect_failed")   /* connect refused or reset */                 \
  X(ConnectTimeout, "connect_timeout") /* connect timed out */                        \
  X(EmptyResponse, "empty_response")   /* closed before any response byte */

enum class FailoverReason : uint8_t {
#define EDGEPIN_FAILOVER_REASON_ENUM(name, text) name,
  EDGEPIN_FAILOVER_REASONS(EDGEPIN_FAILOVER_REASON_ENUM)
#undef EDGEPIN_FAILOVER_REASON_ENUM
};

inline constexpr size_t kFailoverReasonCount = 0
#define EDGEPIN_FAILOVER_REASON_COUNT(name, text) +1
    EDGEPIN_FAILOVER_REASONS(EDGEPIN_FAILOVER_REASON_COUNT)
#undef EDGEPIN_FAILOVER_REASON_COUNT
    ;

constexpr const char* to_string(FailoverReason r) {
  switch (r) {
#define EDGEPIN_FAILOVER_REASON_NAME(name, text) \
  case FailoverReason::name:                     \
    return text;
    EDGEPIN_FAILOVER_REASONS(EDGEPIN_FAILOVER_REASON_NAME)
#undef EDGEPIN_FAILOVER_REASON_NAME
  }
  return "?";
}

struct NodeCounters {
  // Connections, counted by the worker and the client handshake
  // (node-proxy/worker.*, node-proxy/client_handshake.*). `active` covers a
  // connection from accept until its ClientConnection (or failed handshake)
  // is destroyed.
  Counter connections_accepted;
  Counter connections_active;
  Counter connections_refused_untrusted;  // PROXY required, source not trusted
  Counter connections_refused_limit;      // limits.max_connections reached
  Counter proxy_header_errors;            // malformed or missing PROXY header (sum of proxy_errors)
  std::array<Counter, proxy::kErrorCount> proxy_errors;  // by decoder error
  Counter proxy_header_timeouts;                         // no complete PROXY header in time
  Counter proxy_header_closed;                           // closed before the header was complete
  Counter tls_handshakes_full;
  Counter tls_handshakes_resumed;
  Counter tls_handshake_errors;    // TLS alert or protocol error
  Counter tls_handshake_timeouts;  // no complete handshake in time
  Counter tls_handshake_closed;    // closed by the client mid-handshake

  // Requests.
  Counter requests;
  std::array<Counter, 6> responses_by_class;               // [0] other, [1] 1xx .. [5] 5xx
  std::array<Counter, http1::kErrorCount> request_errors;  // by parser error
  Counter bytes_in;                                        // from clients
  Counter bytes_out;                                       // to clients
  // HTTP layer (node-proxy/h1_connection.*, exchange.*).
  std::array<Counter, kRequestEndCount> request_ends;  // by RequestEnd
  Counter requests_local;      // answered by the proxy itself (health, stats)
  Counter tunnels;             // 101 tunnels opened (WebSocket)
  Counter http_idle_timeouts;  // keep-alive connections closed while idle

  // Upstream (Tomcat).
  Counter upstream_connects;        // new connections opened (UpstreamPool::connect)
  Counter upstream_reuses;          // idle pooled connections handed out again
  Counter upstream_connect_errors;  // connects refused or timed out (502/503/504)
  Counter upstream_timeouts;        // response_timeout reached (504 or cut)
  Counter upstream_retries;         // re-sent once after a reused connection died
  Counter upstream_extra_bytes;     // bytes after the end of a response: connection closed
  // Requests a peer served because the local Tomcat failed or is down, by
  // reason; failures no peer could take; passive mark-downs (the data path
  // saw a connect fail: Tomcat, or a peer's link) that flipped the verdict.
  std::array<Counter, kFailoverReasonCount> failovers;
  Counter failovers_impossible;
  Counter tomcat_passive_downs;
  Counter peer_passive_downs;

  // L7 affinity (node-proxy/affinity.h), one per proxied request: why it
  // was served where it was. Relay is "relayed_out", Relayed "relayed_in".
  std::array<Counter, affinity::kOutcomeCount> affinity;
  Counter affinity_cookies_issued;  // Set-Cookie added to a local response
  // Relays whose peer connection failed (refused, timed out, TLS refused)
  // before anything was sent: served locally instead, counted as owner_down.
  Counter relay_fallbacks;

  // The peer link (node-proxy/peer_tls.*, the peer listener and the pools
  // towards the peers).
  Counter peer_connections_accepted;  // handshakes with a valid node certificate
  Counter peer_connections_refused;   // handshakes refused or abandoned on the peer port
  Counter peer_connects;              // new connections to peers
  Counter peer_reuses;                // idle pooled peer connections handed out again
  Counter peer_connect_errors;        // peer connects refused or timed out
  Counter peer_timeouts;              // peer response_timeout reached
  Counter peer_retries;               // re-sent once after a reused peer connection died
  Counter peer_extra_bytes;           // bytes after the end of a peer's response: closed
};

}  // namespace edgepin::nodeproxy
