#pragma once
// node-proxy.json, resolved for one node of the cluster: listener addresses
// come from that node's entry in cluster.json, "{node}" in paths becomes its
// name, and every certificate and key file is opened and checked.
// See conf/README.md for every key and its default.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "config_cluster.h"
#include "config_common.h"
#include "config_files.h"
#include "config_reader.h"
#include "net_address.h"

namespace edgepin::config {

// Mozilla's "intermediate" TLS 1.2 list without DHE (which needs DH
// parameters): forward-secret AEAD suites only.
inline constexpr std::string_view kDefaultCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
inline constexpr std::string_view kDefaultCiphersuites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
// Key exchange groups (Mozilla "intermediate"): elliptic curves only.
// OpenSSL's own default also accepts the finite-field groups (ffdhe2048 and
// up): ffdhe2048 is weaker than P-256 (about 112-bit security) and each of
// them costs the server far more CPU per handshake than any curve.
inline constexpr std::string_view kDefaultGroups = "X25519:P-256:P-384";
inline constexpr uint16_t kDefaultTlsPublicPort = 443;
inline constexpr uint16_t kDefaultHttpPublicPort = 80;
inline constexpr size_t kMinHeaderBytes = 1024;
inline constexpr size_t kMaxHeaderBytes = 65536;
inline constexpr uint32_t kMaxHeaderCount = 1000;
// TLS 1.3 forbids ticket lifetimes above 7 days (RFC 8446, 4.6.1).
inline constexpr int64_t kMaxSessionLifetimeS = 7LL * 24 * 3600;

// Which PROXY header a listener requires from its trusted sources.
enum class AcceptProxy : uint8_t { None, V1, V2, Any };
enum class TlsVersion : uint8_t { V1_2, V1_3 };

constexpr std::string_view to_string(AcceptProxy p) {
  switch (p) {
    case AcceptProxy::None:
      return "none";
    case AcceptProxy::V1:
      return "v1";
    case AcceptProxy::V2:
      return "v2";
    case AcceptProxy::Any:
      return "any";
  }
  return "?";
}

struct Listener {
  std::string name;
  bool tls = true;
  SocketAddress bind;  // the node's address (or "bind") and the port
  AcceptProxy proxy_protocol = AcceptProxy::None;
  // Only these sources may connect when a PROXY header is required; any
  // other source is refused. Empty when proxy_protocol is None.
  std::vector<Cidr> trusted_proxies;
  // X-Forwarded-Port when the connection carries no PROXY header.
  uint16_t public_port = kDefaultTlsPublicPort;
};

struct SessionCacheConfig {
  bool enabled = true;
  size_t size = 20'000;
  std::chrono::seconds timeout{3600};
};

struct TicketConfig {
  bool enabled = true;
  std::chrono::seconds rotate{3600};  // a new key this often
  std::chrono::seconds grace{3600};   // old keys still decrypt this long
};

struct TlsConfig {
  std::vector<CertificateFile> certificates;  // directories expanded, in order
  size_t default_certificate = 0;             // index into certificates
  TlsVersion min_version = TlsVersion::V1_2;
  TlsVersion max_version = TlsVersion::V1_3;
  std::string ciphers{kDefaultCiphers};            // TLS 1.2 (OpenSSL cipher list)
  std::string ciphersuites{kDefaultCiphersuites};  // TLS 1.3
  std::string groups{kDefaultGroups};              // key exchange (OpenSSL group list)
  std::vector<std::string> alpn{"http/1.1"};
  SessionCacheConfig session_cache;
  TicketConfig tickets;
};

struct UpstreamConfig {
  SocketAddress address;    // cluster.json's per-node "upstream" wins
  uint32_t pool_size = 64;  // idle keep-alive connections kept; 0: no reuse
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds response_timeout{60000};
  // Below Tomcat's keepAliveTimeout (20 s by default), so that the proxy,
  // not Tomcat, closes idle pooled connections.
  std::chrono::milliseconds idle_timeout{15000};
};

// What happens to a request field whose name contains "_": backends that
// map "_" to "-" (CGI variables, some servlet filters) would read
// X_Forwarded_For as the proxy's X-Forwarded-For, so they are dropped by
// default, as nginx does ("underscores_in_headers off").
enum class UnderscoreFields : uint8_t { Drop, Pass };

struct HeaderPolicy {
  bool forwarded_rfc7239 = false;  // also write Forwarded: for=...;proto=...
  bool x_forwarded_host = false;   // also write X-Forwarded-Host
  bool x_real_ip = false;          // also write X-Real-IP
  UnderscoreFields underscore_fields = UnderscoreFields::Drop;
};

struct NodeLimits {
  size_t max_header_bytes = 16384;
  uint32_t max_headers = 100;
  uint64_t max_body_bytes = 0;  // 0: unlimited
  uint32_t max_connections = 10'000;
};

struct NodeTimeouts {
  std::chrono::milliseconds tls_handshake{10000};
  std::chrono::milliseconds client_header{10000};  // a request's headers
  std::chrono::milliseconds client_idle{60000};    // between keep-alive requests
  std::chrono::milliseconds client{60000};         // client silent mid-request/response
  std::chrono::milliseconds tunnel{3600000};       // after a 101 (WebSocket)
};

struct NodeHealthConfig {
  std::string path = "/_edgepin/health";  // answered by the node-proxy itself
  std::string check_path = "/";           // GET on Tomcat; status < 500 is up
  std::chrono::milliseconds check_interval{2000};
  std::chrono::milliseconds check_timeout{1000};
  uint32_t rise = 2;
  uint32_t fall = 3;
};

struct NodeStatsConfig {
  bool enabled = true;
  std::string path = "/_edgepin/stats";
  // Clients (after PROXY) allowed to read the stats page.
  std::vector<Cidr> allow;
  // The metrics listener (node-proxy/metrics.h): from "metrics" (a port on
  // the node's address by default) or from "stats.metrics_bind".
  std::optional<SocketAddress> metrics_bind;
};

struct PeerConfig {
  // False when affinity mode is "none": no peer listener, no relaying.
  bool enabled = true;
  std::filesystem::path cert_file;
  std::filesystem::path key_file;
  uint32_t pool_size = 16;
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds response_timeout{60000};
  std::chrono::milliseconds idle_timeout{30000};
  std::chrono::milliseconds check_interval{2000};
  std::chrono::milliseconds check_timeout{1000};
  uint32_t rise = 2;
  uint32_t fall = 3;
};

struct NodeProxyConfig {
  uint32_t threads = 0;  // 0: one per CPU
  std::vector<Listener> listeners;
  std::optional<TlsConfig> tls;  // required when a listener has tls
  UpstreamConfig upstream;
  HeaderPolicy headers;
  NodeLimits limits;
  NodeTimeouts timeouts;
  NodeHealthConfig health;
  NodeStatsConfig stats;
  PeerConfig peer;
  std::optional<AdminSocketConfig> admin_socket;
  LogConfig log;
  // SIGTERM: how long in-flight requests may finish before the rest of the
  // connections are closed (idle keep-alive connections close at once).
  std::chrono::milliseconds shutdown_grace{30000};
};

// Reads and validates node-proxy.json for node `cluster.nodes[self]`: binds
// resolved, {node} substituted, certificates expanded and checked, and the
// peer identity checked against the cluster CA (errors about the CA or
// cluster-wide values name `cluster_file`). Appends warnings (expired
// certificates). Throws ConfigError.
NodeProxyConfig parse_node_proxy(const JsonDocument& doc, const ClusterConfig& cluster, size_t self,
                                 const std::filesystem::path& dir, const std::string& cluster_file,
                                 std::vector<std::string>& warnings);

}  // namespace edgepin::config
