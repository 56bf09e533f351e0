#pragma once
// The per-worker world an HTTP connection lives in: its event_base, the
// configuration, the worker's upstream pool and counters, and the node-wide
// state shared by all workers (Tomcat health, drain flag). Owned by the
// worker (node-proxy/worker.*); client connections (node-proxy/client_codec.h)
// only borrow it.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config_cluster.h"
#include "config_node_proxy.h"
#include "counter.h"
#include "event_ptr.h"

namespace edgepin::nodeproxy {

class UpstreamPool;
struct NodeCounters;
namespace affinity {
class CookieCodec;
}

// One peer node as the data path sees it: its health, written by the peer
// health checker (node-proxy/tomcat_check.h) and read by every worker when
// it decides whether to relay (down: the request is served locally).
// It keeps its own copy of its cluster.json entry: a peer kept across
// reloads outlives the configuration it was first read from.
struct PeerState {
  explicit PeerState(const config::Node& n) : node(std::make_unique<const config::Node>(n)) {}
  const std::unique_ptr<const config::Node> node;  // its cluster.json entry
  // false until the first check passes; the data path marks it down too
  // (a refused peer link, Exchange): mutable for workers holding it const.
  mutable std::atomic<bool> up{false};
};

// State every worker reads and a few writers change. The atomics are read
// and written anywhere. `peers` is replaced only by a reload (main thread,
// under peers_mu), after which the workers are given the new links; a
// reader on another thread (stats) holds peers_mu while it walks the list.
// Workers never read this list: they route with their own links
// (WorkerContext::peers), which a reload swaps on their loop.
struct NodeState {
  std::atomic<bool> tomcat_up{true};  // written by the Tomcat health checker
  std::atomic<bool> draining{false};  // admin socket: set node state drain
  mutable std::mutex peers_mu;
  std::vector<std::unique_ptr<PeerState>> peers;  // every other node, cluster.json order
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

// A built-in response the HTTP layer sends as is (health, stats).
struct LocalResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

struct WorkerContext {
  event_base* base = nullptr;
  int worker_index = 0;
  const config::ClusterConfig* cluster = nullptr;
  const config::Node* self = nullptr;  // this node's entry in cluster.json
  const config::NodeProxyConfig* config = nullptr;
  NodeState* node = nullptr;
  NodeCounters* counters = nullptr;  // this worker's counters
  UpstreamPool* upstream =
      nullptr;  // this worker's keep-alive pool to Tomcat (swapped by a reload)
  // The peer link: this worker's pool to each peer's peer port (empty when
  // affinity is off), in NodeState::peers order. Swapped by a reload on the
  // worker's loop; an exchange keeps only its pool pointer (Destination),
  // and the worker frees a retired pool once no exchange points to it
  // (Worker::sweep_retired).
  struct PeerLink {
    const PeerState* state = nullptr;
    UpstreamPool* pool = nullptr;
  };
  std::vector<PeerLink> peers;
  // Cookie mode's MAC (shared by all workers: it only reads its key).
  // Swapped by a reload (null outside cookie mode); the runtime keeps a
  // replaced one alive while any connection is open.
  const affinity::CookieCodec* cookie_codec = nullptr;
  // Renders the stats page (summed over all workers); `json` selects JSON.
  std::function<LocalResponse(bool json)> stats_page;
};

}  // namespace edgepin::nodeproxy
