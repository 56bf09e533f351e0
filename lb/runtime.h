#pragma once
// The running lb: builds the shared state from a validated configuration
// (servers, stick table, balancer, router, frontends), starts the workers
// and the health checker, and stops them. The config structs stay in
// common/; what the data path reads is resolved here once.
#include <memory>
#include <string>
#include <vector>

#include "common/config_cluster.h"
#include "common/config_lb.h"
#include "lb/balancer.h"
#include "lb/frontend.h"
#include "lb/health.h"
#include "lb/router.h"
#include "lb/server.h"
#include "lb/stick_table.h"
#include "lb/worker.h"

namespace edgepin::lb {

class Runtime {
 public:
  Runtime(const config::ClusterConfig& cluster, const config::LbConfig& lb);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Binds every listener and starts the threads. Returns an empty string,
  // or the first error (nothing is left running then).
  std::string start();
  // Stops accepting, waits up to `grace` for sessions to end, then ends the
  // rest and joins every thread.
  void stop(std::chrono::milliseconds grace);
  // Housekeeping from the main thread (stick-table expiry).
  void tick();

  size_t active_sessions() const;
  const std::vector<std::unique_ptr<ServerState>>& servers() const { return servers_; }
  StickTable* stick_table() const { return stick_table_.get(); }
  const std::vector<std::unique_ptr<Worker>>& workers() const { return workers_; }
  const std::vector<Frontend>& frontends() const { return frontends_; }

 private:
  std::vector<std::unique_ptr<ServerState>> servers_;
  std::vector<ServerState*> server_ptrs_;
  std::unique_ptr<StickTable> stick_table_;
  std::unique_ptr<Balancer> balancer_;
  std::unique_ptr<Router> router_;
  std::vector<Frontend> frontends_;
  GlobalLimits limits_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<HealthChecker> health_;
  bool started_ = false;
};

}  // namespace edgepin::lb
