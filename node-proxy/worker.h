#pragma once
// A worker thread of the node-proxy: its own event_base, its own
// SO_REUSEPORT socket for every listener, its keep-alive pool to Tomcat,
// and the connections it accepted, which never leave it
// (docs/architecture.md, "Threads"). A connection lives here first as a ClientHandshake
// (PROXY header, TLS), then as a ClientConnection (client_codec.h: the
// HTTP/1.1 codec today); the worker owns both and destroys them when they
// report the end.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "client_codec.h"
#include "client_handshake.h"
#include "config.h"
#include "counters.h"
#include "event_loop.h"
#include "worker_context.h"

namespace edgepin::nodeproxy {

class PeerTls;

// limits.max_connections, enforced by all workers together.
struct ConnectionLimit {
  uint64_t max = 0;  // 0: no limit
  std::atomic<uint64_t> active{0};
};

// What every worker shares (read-only, or atomics), owned by the Runtime.
struct WorkerShared {
  const config::NodeConfigSet* config = nullptr;
  const std::vector<ListenerSetup>* listeners = nullptr;
  NodeState* node = nullptr;
  ConnectionLimit* limit = nullptr;
  std::function<LocalResponse(bool json)> stats_page;
  // The peer link (null when affinity is off) and cookie mode's MAC.
  const PeerTls* peer_tls = nullptr;
  const affinity::CookieCodec* cookie_codec = nullptr;
};

// What a reload gives a worker for the requests it routes from then on.
struct WorkerRouting {
  // The reloaded configuration (cluster, self, upstream, peer link,
  // header policy, timeouts, limits); the runtime keeps it alive while any
  // connection is open.
  const config::NodeConfigSet* config = nullptr;
  // NodeState::peers as the reload left it, in order. A PeerState the
  // worker already links to keeps its pool (and its idle connections).
  std::vector<const PeerState*> peers;
  const affinity::CookieCodec* cookie_codec = nullptr;  // null outside cookie mode
  bool new_upstream_pool = false;  // the upstream address or pool settings changed
  bool new_peer_pools = false;     // the peer link's pool settings changed
};

class Worker {
 public:
  // Creates the loop and the upstream pool; binds nothing yet.
  Worker(int index, const WorkerShared& shared);
  ~Worker();  // stops the loop, then closes every connection
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Binds this worker's socket for every listener. Returns an empty string,
  // or "listener NAME: bind ADDRESS: reason" for the first failure.
  std::string bind();
  void start() { loop_.start(); }
  // Closes the listening sockets (the kernel then refuses new clients) and
  // asks every HTTP connection to close gracefully (idle ones at once, busy
  // ones after their current response). Safe from any thread.
  void stop_accepting();
  // Closes every connection now. Must run on this worker's loop thread.
  void shutdown_now();

  int index() const { return index_; }
  EventLoopThread& loop() { return loop_; }
  NodeCounters& counters() { return counters_; }
  const NodeCounters& counters() const { return counters_; }
  // Connections this worker holds (handshaking or HTTP); any thread.
  size_t connection_count() const { return connection_count_.load(std::memory_order_relaxed); }
  // The HTTP connections (at most `limit`), for `show sessions`, and how
  // many more are still in their PROXY/TLS handshake. Loop thread only.
  struct Connections {
    std::vector<ConnectionInfo> http;
    size_t handshaking = 0;
  };
  Connections describe_connections(size_t limit) const;
  // Reload (SIGHUP): connections accepted from now on read the new
  // configuration (header policy, timeouts, limits; established ones keep
  // the one they started with, which the runtime keeps alive), and
  // requests routed from now on use `routing` (the new Tomcat pool, peer
  // links, cookie codec and cluster settings).
  // Pools that are no longer linked are retired: their idle connections
  // close at once, their exchanges in flight finish on them, and they are
  // freed once no connection points to them (sweep_retired). The caller
  // keeps every PeerState of the old and the new list alive until this has
  // run. Loop thread only (post it).
  void reroute(const WorkerRouting& routing);

 private:
  struct Binding {
    Worker* worker = nullptr;
    const ListenerSetup* listener = nullptr;
    ListenerPtr socket;
  };
  static void accept_cb(evconnlistener*, evutil_socket_t fd, sockaddr* addr, int len, void* arg);
  static void resume_cb(evutil_socket_t, short, void* arg);
  static void sweep_cb(evutil_socket_t, short, void* arg);
  std::unique_ptr<UpstreamPool> make_peer_pool(const PeerState& peer,
                                               const config::PeerConfig& settings);
  void relink_peers();
  void retire(std::unique_ptr<UpstreamPool> pool);
  // Frees the retired pools that no connection's exchange points to.
  void sweep_retired();
  void on_accept(const ListenerSetup& listener, evutil_socket_t fd, const sockaddr* addr, int len);
  void on_handshake_done(ClientHandshake* handshake, BufferEventPtr client, ClientInfo info);
  void on_http_closed(ClientConnection* connection);
  void connection_ended();
  void update_count();
  void pause_listeners();

  const int index_;
  const WorkerShared& shared_;
  NodeCounters counters_;  // before the pool, which keeps a reference
  EventLoopThread loop_;
  std::unique_ptr<UpstreamPool> upstream_;
  // One per peer link, in NodeState::peers order (context_.peers mirrors it).
  struct PeerPool {
    const PeerState* state = nullptr;
    std::unique_ptr<UpstreamPool> pool;
  };
  std::vector<PeerPool> peer_pools_;
  // Pools a reload replaced. An exchange holds a raw pointer to its pool
  // (Destination::pool), so a retired pool is freed only when no
  // connection of this worker points to it: one scan of the connections
  // per second while any is left. This keeps the data path on plain
  // pointers and puts the whole cost of a reload on the reload.
  std::vector<std::unique_ptr<UpstreamPool>> retired_pools_;
  WorkerContext context_;
  std::vector<std::unique_ptr<Binding>> bindings_;
  std::unordered_map<ClientHandshake*, std::unique_ptr<ClientHandshake>> handshakes_;
  std::unordered_map<ClientConnection*, std::unique_ptr<ClientConnection>> connections_;
  std::atomic<size_t> connection_count_{0};
  EventPtr resume_timer_;  // re-enables listeners paused by max_connections
  EventPtr sweep_timer_;   // frees retired pools (sweep_retired)
  bool paused_ = false;
  bool accepting_ = true;
  bool shutting_down_ = false;
};

}  // namespace edgepin::nodeproxy
