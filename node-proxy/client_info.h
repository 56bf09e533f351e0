#pragma once
// What the node-proxy knows about a client connection once the PROXY header
// (if any) and the TLS handshake (if any) are done: everything the HTTP
// layer needs for X-Forwarded-*, the access log and the stats.
#include <cstdint>
#include <string>

#include "net_address.h"

namespace edgepin::nodeproxy {

struct ClientInfo {
  std::string listener;  // listener name from node-proxy.json
  SocketAddress peer;    // the TCP peer (the lb, or the client itself)
  SocketAddress client;  // the true client: PROXY source, else peer
  bool proxied = false;  // a PROXY header supplied `client`
  // X-Forwarded-Port: the PROXY header's destination port, else the
  // listener's configured public port.
  uint16_t public_port = 0;
  bool tls = false;
  std::string tls_version;  // "TLSv1.3"; empty without TLS
  std::string tls_cipher;
  bool tls_resumed = false;
  std::string sni;   // empty when the client sent none
  std::string alpn;  // negotiated protocol, empty when none
  // On the peer listener only: the cluster node whose verified peer
  // certificate opened this connection. Its requests are relayed ones:
  // their X-Forwarded-* describe the true client and they are never
  // relayed again (node-proxy/affinity.h).
  std::string peer_node;
};

}  // namespace edgepin::nodeproxy
