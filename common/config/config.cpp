#include "config.h"

#include <system_error>

namespace edgepin::config {
namespace {

namespace fs = std::filesystem;

// A missing directory is one clear error rather than "cluster.json: no such
// file", which would send the operator looking for the wrong thing.
void require_directory(const fs::path& dir) {
  std::error_code ec;
  const fs::file_status status = fs::status(dir, ec);
  if (status.type() == fs::file_type::not_found) {
    throw ConfigError(dir.string(), "", "no such directory");
  }
  if (status.type() != fs::file_type::directory) {
    throw ConfigError(dir.string(), "", ec ? ec.message() : "not a directory");
  }
}

std::string counted(size_t n, std::string_view singular, std::string_view plural) {
  return std::to_string(n) + " " + std::string(n == 1 ? singular : plural);
}

}  // namespace

LbConfigSet load_lb(const fs::path& dir) {
  require_directory(dir);
  LbConfigSet set;
  set.dir = dir;
  const JsonDocument cluster_doc = JsonDocument::load(dir, kClusterFile);
  set.cluster = parse_cluster(cluster_doc, dir);
  const JsonDocument lb_doc = JsonDocument::load(dir, kLbFile);
  set.lb = parse_lb(lb_doc, set.cluster, dir);
  return set;
}

NodeConfigSet load_node_proxy(const fs::path& dir, std::string_view node_name) {
  require_directory(dir);
  NodeConfigSet set;
  set.dir = dir;
  const JsonDocument cluster_doc = JsonDocument::load(dir, kClusterFile);
  set.cluster = parse_cluster(cluster_doc, dir);

  size_t self = set.cluster.nodes.size();
  for (size_t i = 0; i < set.cluster.nodes.size(); ++i) {
    if (set.cluster.nodes[i].name == node_name) self = i;
  }
  if (self == set.cluster.nodes.size()) {
    constexpr size_t kListed = 10;
    std::string known;
    for (size_t i = 0; i < set.cluster.nodes.size() && i < kListed; ++i) {
      known += (i ? ", " : "") + set.cluster.nodes[i].name;
    }
    if (set.cluster.nodes.size() > kListed) known += ", ...";
    throw ConfigError(cluster_doc.file(), "/nodes",
                      "no node named \"" + std::string(node_name) + "\" (nodes: " + known + ")");
  }
  set.self = set.cluster.nodes[self];
  for (size_t i = 0; i < set.cluster.nodes.size(); ++i) {
    if (i != self) set.peers.push_back(set.cluster.nodes[i]);
  }

  const JsonDocument proxy_doc = JsonDocument::load(dir, kNodeProxyFile);
  set.proxy = parse_node_proxy(proxy_doc, set.cluster, self, dir, cluster_doc.file(), set.warnings);

  if (set.cluster.affinity.mode == AffinityMode::Cookie) {
    set.cluster_key =
        read_hex_key_file(JsonValue::placeholder(cluster_doc.file(), "/cluster/affinity/key_file"),
                          set.cluster.affinity.key_file);
  }
  return set;
}

std::string summary(const LbConfigSet& set) {
  return "cluster \"" + set.cluster.name + "\", " +
         counted(set.cluster.nodes.size(), "node", "nodes") + ", " +
         counted(set.lb.frontends.size(), "frontend", "frontends");
}

std::string summary(const NodeConfigSet& set) {
  const size_t certs = set.proxy.tls ? set.proxy.tls->certificates.size() : 0;
  return "cluster \"" + set.cluster.name + "\", node \"" + set.self.name + "\" (tag " +
         std::to_string(set.self.tag) + "), " +
         counted(set.proxy.listeners.size(), "listener", "listeners") + ", " +
         counted(certs, "certificate", "certificates") + ", " +
         counted(set.peers.size(), "peer", "peers");
}

}  // namespace edgepin::config
