#pragma once
// The per-worker world an HTTP connection lives in: its event_base, the
// configuration, the worker's upstream pool and counters, and the node-wide
// state shared by all workers (Tomcat health, drain flag). Owned by the
// worker (node-proxy/worker.*); HTTP connections (node-proxy/http_connection.*)
// only borrow it.
#include <atomic>
#include <chrono>
#include <functional>
#include <string>

#include "common/config_cluster.h"
#include "common/config_node_proxy.h"
#include "common/counter.h"
#include "common/event_ptr.h"

namespace edgepin::nodeproxy {

class UpstreamPool;
struct NodeCounters;

// State every worker reads and a few writers change (atomics only).
struct NodeState {
  std::atomic<bool> tomcat_up{true};   // written by the Tomcat health checker
  std::atomic<bool> draining{false};   // admin socket: set node state drain
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
  NodeCounters* counters = nullptr;    // this worker's counters
  UpstreamPool* upstream = nullptr;    // this worker's keep-alive pool to Tomcat
  // Renders the stats page (summed over all workers); `json` selects JSON.
  std::function<LocalResponse(bool json)> stats_page;
};

}  // namespace edgepin::nodeproxy
