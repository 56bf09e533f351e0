#pragma once
// The running lb: builds the shared state from a validated configuration
// (servers, stick table, balancer, router, frontends), starts the workers
// and the health checker, applies reloads, and stops them. The config
// structs stay in common/; what the data path reads is resolved here.
//
// Reloads (SIGHUP) publish a new Snapshot: the servers of the new config,
// a balancer and router built for them, and the frontends with their
// timeouts. Workers take the current snapshot for each new connection; a
// session keeps the snapshot it started with alive until it ends, so
// nothing an established connection reads ever changes under it. Servers
// are identified by node name across reloads and never freed: a removed
// server only stops taking new connections, and its id stays valid for the
// stick table and for the sessions still using it.
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "balancer.h"
#include "config_cluster.h"
#include "config_lb.h"
#include "frontend.h"
#include "health.h"
#include "router.h"
#include "server.h"
#include "stick_table.h"
#include "worker.h"

namespace edgepin::lb {

// Everything new connections read, built from one configuration and never
// changed afterwards.
struct Snapshot {
  std::vector<ServerState*> by_id;   // every server known so far, by id (the router's list)
  std::vector<ServerState*> active;  // the servers of this configuration (the balancer's list)
  std::unique_ptr<Balancer> balancer;
  std::unique_ptr<Router> router;
  std::vector<Frontend> frontends;
};

// The frontends of the current snapshot, kept alive while iterated.
class FrontendView {
 public:
  explicit FrontendView(std::shared_ptr<const Snapshot> s) : s_(std::move(s)) {}
  auto begin() const { return s_->frontends.begin(); }
  auto end() const { return s_->frontends.end(); }
  size_t size() const { return s_->frontends.size(); }
  const Frontend& operator[](size_t i) const { return s_->frontends[i]; }

 private:
  std::shared_ptr<const Snapshot> s_;
};

class Runtime {
 public:
  // Frontends ever configured over the process's life (counters are per
  // frontend slot and allocated once per worker).
  static constexpr size_t kFrontendSlots = 64;

  Runtime(const config::ClusterConfig& cluster, const config::LbConfig& lb);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Binds every listener and starts the threads. Returns an empty string,
  // or the first error (nothing is left running then).
  std::string start();
  // Applies a validated new configuration to the running lb without closing
  // any established connection: new listening sockets are opened first (an
  // error leaves everything as it was and is returned), unchanged ones keep
  // their sockets, removed ones are closed. Returns an empty string or the
  // error. Main thread only, after start().
  std::string reload(const config::ClusterConfig& cluster, const config::LbConfig& lb);
  // Graceful stop, step 1: closes every listener (the kernel then refuses
  // new clients); established sessions go on.
  void stop_accepting();
  // Step 2: ends the sessions that are left and joins every thread.
  void close_all();
  // Both steps, waiting up to `grace` in between (for the destructor and
  // callers without a signal loop).
  void stop(std::chrono::milliseconds grace);
  // Housekeeping from the main thread (stick-table expiry).
  void tick();

  size_t active_sessions() const;
  // Every server known so far, indexed by server id (removed ones included,
  // with `removed` set). A copy: safe from any thread during a reload.
  std::vector<std::shared_ptr<ServerState>> servers() const;
  // The current frontends. Safe from any thread.
  FrontendView frontends() const { return FrontendView(snapshot()); }
  std::shared_ptr<const Snapshot> snapshot() const;
  StickTable* stick_table() const { return stick_table_.get(); }
  const std::vector<std::unique_ptr<Worker>>& workers() const { return workers_; }
  uint64_t maxconn() const { return limits_.maxconn; }

 private:
  // Builds a snapshot for `cluster`/`lb` over the server list `by_id`
  // (every known server, by id) with `nodes` (their cluster.json entries,
  // by id; used for addresses) and `slots` (frontend counter slots, in
  // lb.frontends order).
  static std::shared_ptr<Snapshot> build(const config::ClusterConfig& cluster,
                                         const config::LbConfig& lb,
                                         const std::vector<ServerState*>& by_id,
                                         const std::vector<config::Node>& nodes,
                                         const std::vector<uint32_t>& slots, StickTable* table);
  // The frontends of `s`, each sharing ownership of the whole snapshot (a
  // session that holds its frontend holds the router and balancer too).
  static FrontendList frontend_list(const std::shared_ptr<const Snapshot>& s);
  // Counter slots for `lb`'s frontends, assigning new ones for new names.
  // Returns false if the slots ran out.
  bool assign_slots(const config::LbConfig& lb, std::vector<std::string>& names,
                    std::vector<uint32_t>& slots) const;
  std::unique_ptr<HealthChecker> make_health(const config::ClusterConfig& cluster,
                                             const config::LbConfig& lb) const;
  // Runs `fn(worker)` on every worker's loop thread and waits for each.
  void on_workers(const std::function<void(Worker&)>& fn);

  mutable std::mutex mu_;  // guards servers_ and snapshot_ (written by reload)
  std::vector<std::shared_ptr<ServerState>> servers_;  // by id; only grows
  std::shared_ptr<const Snapshot> snapshot_;
  std::vector<config::Node> nodes_;          // by server id: the last cluster.json entry
  std::vector<std::string> frontend_names_;  // by counter slot
  config::HealthCheckConfig health_config_;  // what health_ was built from
  std::vector<config::Node> health_nodes_;
  std::unique_ptr<StickTable> stick_table_;
  GlobalLimits limits_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<HealthChecker> health_;
  bool started_ = false;
};

}  // namespace edgepin::lb
