#pragma once
// The configuration directory, loaded and validated as a whole. Both
// binaries read the same directory (kept identical on every host):
//   cluster.json     the nodes and cluster-wide settings (both binaries)
//   lb.json          edgepin-lb
//   node-proxy.json  edgepin-node-proxy, resolved for one node (--node)
// The loaded sets hold typed values only (addresses, CIDRs, durations,
// checked file paths), so the binaries never see JSON. Every problem is a
// ConfigError whose what() is one line naming the file and JSON pointer;
// conf/README.md documents every key.
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "config_cluster.h"
#include "config_common.h"
#include "config_files.h"
#include "config_lb.h"
#include "config_node_proxy.h"
#include "config_reader.h"
#include "net_address.h"

namespace edgepin::config {

inline constexpr std::string_view kClusterFile = "cluster.json";
inline constexpr std::string_view kLbFile = "lb.json";
inline constexpr std::string_view kNodeProxyFile = "node-proxy.json";
inline constexpr std::string_view kDefaultConfigDir = "/etc/edgepin";

struct LbConfigSet {
  std::filesystem::path dir;
  ClusterConfig cluster;
  LbConfig lb;
  // Problems that do not stop the lb (printed by --check, logged at start).
  std::vector<std::string> warnings;
};

struct NodeConfigSet {
  std::filesystem::path dir;
  ClusterConfig cluster;
  Node self;
  std::vector<Node> peers;  // every other node, in cluster.json order
  NodeProxyConfig proxy;
  // The affinity cookie's MAC key (cluster.affinity.key_file); empty unless
  // the affinity mode is "cookie".
  SecretBytes cluster_key;
  // Problems that do not stop the node-proxy (expired certificates).
  std::vector<std::string> warnings;
};

// Loads cluster.json and lb.json from `dir`. Opens no key or certificate.
// Returns the validated set; throws ConfigError on the first problem.
LbConfigSet load_lb(const std::filesystem::path& dir);

// Loads cluster.json and node-proxy.json from `dir` for node `node_name`:
// its own entry, its peers, {node} substituted, every certificate, key and
// CA file opened and checked, and the cluster key read (cookie mode).
// Returns the validated set; throws ConfigError on the first problem,
// including an unknown node name.
NodeConfigSet load_node_proxy(const std::filesystem::path& dir, std::string_view node_name);

// One-line summaries for --check and the start-up log:
//   cluster "demo", 3 nodes, 2 frontends
std::string summary(const LbConfigSet& set);
//   cluster "demo", node "node1" (tag 1), 2 listeners, 1 certificate, 2 peers
std::string summary(const NodeConfigSet& set);

}  // namespace edgepin::config
