#pragma once
// The running node-proxy: builds what the data path reads from a validated
// configuration (TLS contexts, listener setups, the peer link and the
// affinity cookie's MAC), starts the workers, the Tomcat health checker and
// the peer health checker, rotates ticket keys, and stops everything.
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "affinity.h"
#include "client_handshake.h"
#include "config.h"
#include "peer_tls.h"
#include "stats.h"
#include "tls_context.h"
#include "tomcat_check.h"
#include "worker.h"
#include "worker_context.h"

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
  // Applies a reloaded configuration (SIGHUP) without closing any
  // connection: a new TLS context from the certificates as they are on disk
  // now (same ticket key ring, so sessions keep resuming) for new
  // handshakes, the new header policy, timeouts and limits for new
  // connections, and for new requests the new upstream pool, peer links
  // (unchanged peers keep their health and pooled connections, removed
  // ones are retired: see Worker::reroute), affinity settings and cookie
  // key; health checkers whose settings or targets changed are restarted
  // with the verdicts they had. What config::diffNodeProxy lists as
  // needing a restart is left as it is. Returns an empty string, or the
  // error (nothing changed then). Main thread only, after start().
  std::string reload(std::shared_ptr<const config::NodeConfigSet> next);
  // Graceful stop, step 1: marks the node draining (health answers 503),
  // closes the listeners, closes idle keep-alive connections and lets busy
  // ones finish their current request.
  void stop_accepting();
  // Step 2: closes what is left and joins every thread.
  void close_all();
  // Both steps, waiting up to `grace` in between.
  void stop(std::chrono::milliseconds grace);
  // Housekeeping from the main thread, about once a second: ticket key
  // rotation and the end of their grace periods.
  void tick();

  size_t active_connections() const;
  // True when a listener terminates TLS (reloads then re-read certificates).
  bool has_tls() const {
    std::lock_guard lock(tls_mu_);
    return tls_ != nullptr;
  }
  // The stats page, summed over the workers. Any thread.
  LocalResponse stats_page(bool json) const;
  // What the stats page, /metrics and the admin socket read (pointers into
  // this runtime, valid until stop()). Any thread.
  StatsSource stats_source() const;
  NodeState& node() { return node_; }
  // The workers, for commands that post work to their loops (admin).
  const std::vector<std::unique_ptr<Worker>>& workers() const { return workers_; }

 private:
  const config::NodeConfigSet& config_;
  // The configuration applied last: config_, or reloaded_.back(). Written
  // by reload() under tls_mu_ (stats_source reads it from any thread).
  const config::NodeConfigSet* current_ = nullptr;
  NodeState node_;
  ConnectionLimit limit_;
  std::unique_ptr<TlsContext>
      tls_;  // replaced by reload() (guarded by tls_mu_ for readers, as is current_)
  mutable std::mutex tls_mu_;
  // Contexts replaced by a reload, kept until every handshake that started
  // on them is over (the handshake timeout has passed): until then
  // OpenSSL calls back into them.
  struct RetiredTls {
    std::chrono::steady_clock::time_point free_after;
    std::unique_ptr<TlsContext> tls;
  };
  std::vector<RetiredTls> retired_tls_;
  // Configurations loaded by reloads. Connections hold references into the
  // one they started with, so older ones are freed only when no connection
  // is open (tick()).
  std::vector<std::shared_ptr<const config::NodeConfigSet>> reloaded_;
  // The peer link (affinity on): its TLS, its listener on the node's peer
  // port, and the cookie MAC (cookie mode).
  std::unique_ptr<PeerTls> peer_tls_;
  config::Listener peer_listener_;
  std::unique_ptr<affinity::CookieCodec> cookie_codec_;  // replaced by every reload
  // Hands the routing part of a reload to every worker and waits until
  // each has taken it.
  void reroute_workers(const config::NodeConfigSet& next, bool new_upstream_pool,
                       bool new_peer_pools);
  std::vector<ListenerSetup> listeners_;
  WorkerShared shared_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<TomcatHealthChecker> health_;
  std::unique_ptr<PeerHealthChecker> peer_health_;
  bool started_ = false;
};

}  // namespace edgepin::nodeproxy
