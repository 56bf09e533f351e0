#pragma once
// What a worker needs to serve one frontend, resolved from the config once
// (addresses parsed, durations as timevals, the router built) and shared
// read-only by all workers.
#include <sys/time.h>

#include <cstdint>
#include <string>
#include <vector>

#include "net_address.h"
#include "router.h"

namespace edgepin::lb {

enum class InspectFailurePolicy : uint8_t { Balance, Reject };
enum class ProxyProtocolMode : uint8_t { None, V1, V2 };

// Why a session ended: one counter each, named in the log line.
#define EDGEPIN_LB_SESSION_ENDS(X)                                             \
  X(Closed, "closed")                  /* both sides closed after flushing */  \
  X(ClientError, "client_error")       /* reset or error on the client side */ \
  X(ServerError, "server_error")       /* reset or error on the server side */ \
  X(ClientTimeout, "client_timeout")   /* waited too long for the client */    \
  X(ServerTimeout, "server_timeout")   /* waited too long for the server */    \
  X(TunnelTimeout, "tunnel_timeout")   /* both sides silent in the tunnel */   \
  X(InspectTimeout, "inspect_timeout") /* no ClientHello in time, rejected */  \
  X(InspectError, "inspect_error")     /* not a valid ClientHello, rejected */ \
  X(ClientAbort, "client_abort")       /* client left before relaying began */ \
  X(ConnectFailed, "connect_failed")   /* every connect attempt failed */      \
  X(NoServer, "no_server")             /* no server could take the client */   \
  X(QueueFull, "queue_full")           /* server at maxconn, its queue full */ \
  X(QueueTimeout, "queue_timeout")     /* no server slot freed in time */      \
  X(Shutdown, "shutdown")              /* the lb stopped */

enum class End : uint8_t {
#define X(name, str) name,
  EDGEPIN_LB_SESSION_ENDS(X)
#undef X
};
inline constexpr size_t kEndCount = 0
#define X(name, str) +1
    EDGEPIN_LB_SESSION_ENDS(X)
#undef X
    ;
const char* to_string(End e);

struct Frontend {
  std::string name;
  uint32_t index = 0;       // position in the runtime's list: indexes per-frontend counters
  bool inspect_tls = true;  // "tls" mode; "tcp" relays without looking
  std::vector<SocketAddress> binds;
  size_t inspect_buffer = tls::kMaxHelloBytes;
  timeval inspect_timeout{5, 0};
  InspectFailurePolicy on_inspect_failure = InspectFailurePolicy::Balance;
  ProxyProtocolMode proxy_protocol = ProxyProtocolMode::V2;
  // The address of each server for this frontend, indexed by server id
  // (the node's address and its tls_port or http_port).
  std::vector<SocketAddress> server_addresses;
  timeval connect_timeout{5, 0};
  // Relay inactivity (common/io/relay.h says which applies when); zero: none.
  timeval client_timeout{50, 0};
  timeval server_timeout{50, 0};
  timeval tunnel_timeout{3600, 0};
  int retries = 3;
  bool redispatch = true;
  Router* router = nullptr;
  // Per-server connection limit (0: none); excess clients wait in a FIFO
  // of at most queue_size per server for at most queue_timeout.
  uint32_t server_maxconn = 0;
  uint32_t queue_size = 1024;
  timeval queue_timeout{5, 0};
  size_t relay_buffer = 64 * 1024;
  bool access_log = true;  // one "conn ..." line per session (lb.json log.access_log)
};

}  // namespace edgepin::lb
