#pragma once
// What changed between the running configuration and a newly loaded one,
// for SIGHUP reloads: one human-readable item per change, split into what
// a reload applies and what only a restart applies (the process keeps the
// running value and says so). Pure: no I/O, unit-tested.
#include <string>
#include <vector>

#include "config.h"

namespace edgepin::config {

struct ConfigDiff {
  std::vector<std::string> applied;        // "server node4 added", "server node1 weight 100 -> 50"
  std::vector<std::string> needs_restart;  // "threads 2 -> 4 (restart to apply)"

  bool empty() const { return applied.empty() && needs_restart.empty(); }
  // "no changes", or the items joined by ", " (restart-only ones last).
  std::string summary() const;
};

// Diffs two lb configurations. Servers are identified by node name and
// frontends by frontend name, so a renamed node is one removal plus one
// addition.
ConfigDiff diff_lb(const LbConfigSet& from, const LbConfigSet& to);

// Diffs two node-proxy configurations of the same node. A reload applies
// the TLS settings and certificates, header policy, timeouts, header/body
// limits, logging, the shutdown grace, the upstream (address and pool), the
// peers (added, removed, readdressed), the affinity settings and key, the
// peer link's pool and check settings and the health checks; what needs
// new sockets, threads or start-up state (listeners, this node's own entry,
// the peer link's TLS and on/off, threads, max_connections, ticket and
// session cache settings, metrics and admin endpoints) needs a restart.
// Certificates are compared by path only: a renewal usually rewrites the
// same files, so the node-proxy re-reads every certificate on each reload
// whatever this says.
ConfigDiff diff_node_proxy(const NodeConfigSet& from, const NodeConfigSet& to);

// True when a reload may keep the running link to peer `from` for its new
// entry `to`: same name, tag, address and peer port (what the link and its
// health check connect to and what routing matches). Weight and the public
// ports do not matter to the peer link.
bool same_peer_link(const Node& from, const Node& to);

// How a reload turns the running peer list into the new one: for each
// entry of `to`, the index in `from` of the peer it keeps (its health state
// and pooled connections survive), or kNewPeer; and the indexes of `from`
// that are retired (removed, or changed so that they are a new link).
inline constexpr size_t kNewPeer = static_cast<size_t>(-1);
struct PeerPlan {
  std::vector<size_t> kept_from;  // one per `to` entry
  std::vector<size_t> retired;    // indexes into `from`, ascending
};
PeerPlan plan_peers(const std::vector<Node>& from, const std::vector<Node>& to);

}  // namespace edgepin::config
