#pragma once
// lb.json: everything edgepin-lb needs besides the node list. It has no key
// for a certificate or a private key by design: the lb never decrypts.
// See conf/README.md for every key and its default.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "config_cluster.h"
#include "config_common.h"
#include "config_reader.h"
#include "net_address.h"

namespace edgepin::config {

// A ClientHello needs a few hundred bytes to a few KiB; 64 KiB is the
// hello parser's own cap (common/tls_hello).
inline constexpr size_t kMinInspectBufferBytes = 4096;
inline constexpr size_t kDefaultInspectBufferBytes = 16384;
inline constexpr size_t kMaxInspectBufferBytes = 65536;
inline constexpr size_t kMaxStickTableEntries = 10'000'000;
inline constexpr uint32_t kMaxConnections = 1'000'000;

enum class FrontendMode : uint8_t {
  Tls,  // peek at the ClientHello, route by node tag / stick table / balance
  Tcp,  // no inspection: balance at once
};
// What a tls frontend does with a connection whose ClientHello did not
// arrive complete and well-formed before the inspect deadline.
enum class InspectFailure : uint8_t { Balance, Reject };
enum class BalanceAlgorithm : uint8_t { RoundRobin, LeastConn, Hash };
enum class HashFunction : uint8_t { Maglev, Ring };
enum class HealthCheckType : uint8_t { Tcp, TlsHello, Http };

constexpr std::string_view to_string(FrontendMode m) {
  return m == FrontendMode::Tls ? "tls" : "tcp";
}
constexpr std::string_view to_string(BalanceAlgorithm a) {
  switch (a) {
    case BalanceAlgorithm::RoundRobin:
      return "roundrobin";
    case BalanceAlgorithm::LeastConn:
      return "leastconn";
    case BalanceAlgorithm::Hash:
      return "hash";
  }
  return "?";
}
constexpr std::string_view to_string(HealthCheckType t) {
  switch (t) {
    case HealthCheckType::Tcp:
      return "tcp";
    case HealthCheckType::TlsHello:
      return "tls-hello";
    case HealthCheckType::Http:
      return "http";
  }
  return "?";
}

struct InspectConfig {
  size_t buffer_bytes = kDefaultInspectBufferBytes;
  std::chrono::milliseconds timeout{5000};
  InspectFailure on_failure = InspectFailure::Balance;
};

struct Frontend {
  std::string name;
  FrontendMode mode = FrontendMode::Tls;
  std::vector<SocketAddress> bind;
  // Which port of the chosen node to connect to.
  NodePort server_port = NodePort::Tls;
  // The header sent to the node before the client's bytes.
  ProxyProtocol proxy_protocol = ProxyProtocol::None;
  InspectConfig inspect;  // mode tls only
};

struct BalanceConfig {
  BalanceAlgorithm algorithm = BalanceAlgorithm::RoundRobin;
  // For algorithm "hash" and for source affinity.
  HashFunction hash_function = HashFunction::Maglev;
};

struct SourceAffinityConfig {
  bool enabled = false;
  // Clients are hashed by their address masked to these prefixes, so that
  // an IPv6 client rotating its interface identifier stays put.
  uint8_t ipv4_prefix = 32;
  uint8_t ipv6_prefix = 64;
};

struct StickTableConfig {
  size_t size = 100'000;  // entries; 0 turns the table off
  std::chrono::seconds expire{1800};
};

struct LbTimeouts {
  std::chrono::milliseconds connect{5000};
  std::chrono::milliseconds client{50000};    // waiting for the client (before the tunnel)
  std::chrono::milliseconds server{50000};    // waiting for the server (before the tunnel)
  std::chrono::milliseconds tunnel{3600000};  // both silent once bytes flowed both ways; 0: none
  std::chrono::milliseconds queue{5000};      // waiting for a free server slot
};

struct HealthCheckConfig {
  bool enabled = true;
  HealthCheckType type = HealthCheckType::Http;
  PortRef port{NodePort::Http, 0};
  std::string path = "/_edgepin/health";  // type http only
  // Checks go to a port that may require a PROXY header; a PROXY v2 check
  // uses the LOCAL command, a v1 check "PROXY UNKNOWN".
  ProxyProtocol proxy_protocol = ProxyProtocol::None;
  std::chrono::milliseconds interval{2000};
  std::chrono::milliseconds timeout{1000};
  uint32_t rise = 2;
  uint32_t fall = 3;
};

struct LbStatsConfig {
  SocketAddress bind{IpAddress::loopback_v4(), 8888};
};

struct LbConfig {
  uint32_t threads = 0;  // 0: one per CPU
  std::vector<Frontend> frontends;
  BalanceConfig balance;
  SourceAffinityConfig source_affinity;
  StickTableConfig stick_table;
  uint32_t retries = 3;
  bool redispatch = true;
  LbTimeouts timeouts;
  uint32_t maxconn = 10'000;
  uint32_t server_maxconn = 0;  // 0: no per-server limit
  uint32_t queue_size = 1024;
  HealthCheckConfig health_check;
  std::optional<LbStatsConfig> stats;             // absent: no stats listener
  std::optional<AdminSocketConfig> admin_socket;  // absent: no admin socket
  LogConfig log;
  // SIGTERM: how long established connections may finish before the rest
  // are closed (HAProxy's hard-stop-after).
  std::chrono::milliseconds shutdown_grace{30000};
};

// Reads and validates lb.json against the cluster it serves (frontends
// must not bind a node's own endpoint). Relative paths resolve against
// `dir`. Throws ConfigError.
LbConfig parse_lb(const JsonDocument& doc, const ClusterConfig& cluster,
                  const std::filesystem::path& dir);

}  // namespace edgepin::config
