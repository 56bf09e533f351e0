#pragma once
// The running node-proxy: builds what the data path reads from a validated
// configuration (TLS contexts, listener setups), starts the workers and the
// Tomcat health checker, rotates ticket keys, and stops everything.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "node-proxy/client_handshake.h"
#include "node-proxy/stats.h"
#include "node-proxy/tls_context.h"
#include "node-proxy/tomcat_check.h"
#include "node-proxy/worker.h"
#include "node-proxy/worker_context.h"

namespace edgepin::nodeproxy {

class Runtime {
 public:
  // Builds the TLS contexts (when a listener terminates TLS) and the
  // workers. Throws TlsSetupError when OpenSSL refuses the TLS settings.
  // `config` must outlive the runtime.
  explicit Runtime(const config::NodeConfigSet& config);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Binds every listener on every worker and starts the threads. Returns an
  // empty string, or the first error (nothing is left running then).
  std::string start();
  // Graceful stop: marks the node draining (health answers 503), stops
  // accepting, waits up to `grace` for connections to end, then closes the
  // rest and joins every thread.
  void stop(std::chrono::milliseconds grace);
  // Housekeeping from the main thread, about once a second: ticket key
  // rotation and the end of their grace periods.
  void tick();

  size_t active_connections() const;
  // The stats page, summed over the workers. Any thread.
  LocalResponse stats_page(bool json) const;
  NodeState& node() { return node_; }

 private:
  const config::NodeConfigSet& config_;
  NodeState node_;
  ConnectionLimit limit_;
  std::unique_ptr<TlsContext> tls_;
  std::vector<ListenerSetup> listeners_;
  WorkerShared shared_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<TomcatHealthChecker> health_;
  bool started_ = false;
};

}  // namespace edgepin::nodeproxy
