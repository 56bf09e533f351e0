#pragma once
// cluster.json: the nodes and the cluster-wide settings both binaries share.
// See conf/README.md for every key and its default.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config_reader.h"
#include "net_address.h"

namespace edgepin::config {

inline constexpr size_t kMaxNodeNameLength = 32;
inline constexpr size_t kMaxClusterNameLength = 64;
inline constexpr uint16_t kMinNodeTag = 1;  // 0 means "no tag" on the wire
inline constexpr uint16_t kMaxNodeTag = 65535;
inline constexpr uint16_t kDefaultWeight = 100;
inline constexpr uint16_t kMaxWeight = 256;
// Browsers cap cookie lifetimes at 400 days (RFC 6265bis).
inline constexpr int64_t kMaxCookieAgeSeconds = 400LL * 24 * 3600;

// Which of a node's ports something refers to.
enum class NodePort : uint8_t { Tls, Http, Peer };
constexpr std::string_view to_string(NodePort p) {
  switch (p) {
    case NodePort::Tls:
      return "tls";
    case NodePort::Http:
      return "http";
    case NodePort::Peer:
      return "peer";
  }
  return "?";
}

// How the node-proxies tell which node owns an application session.
enum class AffinityMode : uint8_t {
  Cookie,    // an edgepin cookie: node tag + MAC under the cluster key
  JvmRoute,  // the ".<jvmRoute>" suffix of the session cookie = node name
  None,      // no L7 affinity: no relaying, no peer link
};
enum class SameSite : uint8_t { Lax, Strict, None };
// The Secure cookie attribute: always, never, or only on responses sent
// over TLS (so that the plain-HTTP path keeps working, since browsers drop
// Secure cookies set over http://).
enum class CookieSecure : uint8_t { Auto, Always, Never };
// The byte layout of node tags in session IDs and ticket key names
// (common/wire/node_tag.h). One scheme exists today; the key exists so that a
// future layout is an explicit, cluster-wide decision.
enum class TagScheme : uint8_t { EdgepinV1 };

struct AffinityConfig {
  AffinityMode mode = AffinityMode::Cookie;
  std::string cookie_name = "EDGEPIN_NODE";
  std::string session_cookie = "JSESSIONID";
  // MAC key for the affinity cookie (cookie mode). Resolved against the
  // config directory; only the node-proxy opens it.
  std::filesystem::path key_file;
  CookieSecure secure = CookieSecure::Auto;
  bool http_only = true;
  SameSite same_site = SameSite::Lax;
  std::string path = "/";
  std::string domain;                           // empty: host-only cookie
  std::optional<std::chrono::seconds> max_age;  // nullopt: browser-session cookie
};

struct Node {
  std::string name;  // also the Tomcat jvmRoute
  uint16_t tag = 0;
  IpAddress address;
  uint16_t tls_port = 0;
  uint16_t http_port = 0;
  uint16_t peer_port = 0;
  uint16_t weight = kDefaultWeight;  // 0: no new clients, sticky ones stay
  // Where this node's Tomcat listens, if not node-proxy.json's default.
  std::optional<SocketAddress> upstream;

  uint16_t port(NodePort which) const;
  SocketAddress endpoint(NodePort which) const { return SocketAddress(address, port(which)); }
};

struct ClusterConfig {
  std::string name;
  TagScheme tag_scheme = TagScheme::EdgepinV1;
  AffinityConfig affinity;
  // The CA that signs every node's peer certificate. Resolved against the
  // config directory; only the node-proxy opens it.
  std::filesystem::path peer_ca_file;
  std::vector<Node> nodes;

  // nullptr if no node has that name / tag.
  const Node* find_node(std::string_view name) const;
  const Node* find_tag(uint16_t tag) const;
};

// Reads and validates cluster.json. Relative paths are resolved against
// `dir` but no file is opened. Throws ConfigError.
ClusterConfig parse_cluster(const JsonDocument& doc, const std::filesystem::path& dir);

// True for 1..max_length bytes of [A-Za-z0-9_.-]: safe in cookies, log
// lines, file names ({node}) and Tomcat jvmRoutes. Node, frontend and
// listener names follow this rule.
bool is_valid_name(std::string_view name, size_t max_length = kMaxNodeNameLength);

}  // namespace edgepin::config
