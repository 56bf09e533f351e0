#include "worker.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <algorithm>

#include "client_codec.h"
#include "listener.h"
#include "log.h"
#include "peer_tls.h"
#include "upstream_pool.h"

namespace edgepin::nodeproxy {
namespace {

constexpr int kBacklog = 1024;
// How often a worker paused by max_connections looks whether it may accept
// again (connections ending on other workers free capacity too).
constexpr timeval kResumeCheck{0, 50 * 1000};
// How often a worker looks whether the exchanges still using pools retired
// by a reload have ended.
constexpr timeval kSweepInterval{1, 0};

}  // namespace

Worker::Worker(int index, const WorkerShared& shared)
    : index_(index), shared_(shared), loop_("np-worker-" + std::to_string(index)) {
  const config::NodeConfigSet& cfg = *shared_.config;
  upstream_ = std::make_unique<UpstreamPool>(loop_.base(), cfg.proxy.upstream, counters_);
  context_.base = loop_.base();
  context_.worker_index = index;
  context_.cluster = &cfg.cluster;
  context_.self = &cfg.self;
  context_.config = &cfg.proxy;
  context_.node = shared_.node;
  context_.counters = &counters_;
  context_.upstream = upstream_.get();
  context_.stats_page = shared_.stats_page;
  context_.cookie_codec = shared_.cookie_codec;
  if (shared_.peer_tls) {
    for (const auto& peer : shared_.node->peers)
      peer_pools_.push_back(PeerPool{peer.get(), make_peer_pool(*peer, cfg.proxy.peer)});
  }
  relink_peers();
  resume_timer_.reset(evtimer_new(loop_.base(), resume_cb, this));
  sweep_timer_.reset(evtimer_new(loop_.base(), sweep_cb, this));
}

std::unique_ptr<UpstreamPool> Worker::make_peer_pool(const PeerState& peer,
                                                     const config::PeerConfig& pc) {
  // One pool per peer: a relay is an upstream request to the owner's
  // peer port over mutual TLS, with the peer link's own limits.
  config::UpstreamConfig uc;
  uc.address = peer.node->endpoint(config::NodePort::Peer);
  uc.pool_size = pc.pool_size;
  uc.connect_timeout = pc.connect_timeout;
  uc.response_timeout = pc.response_timeout;
  uc.idle_timeout = pc.idle_timeout;
  const PeerTls* tls = shared_.peer_tls;
  const std::string name = peer.node->name;
  return std::make_unique<UpstreamPool>(loop_.base(), uc, counters_.peer_connects,
                                        counters_.peer_reuses,
                                        [tls, name] { return tls->new_client_ssl(name); });
}

void Worker::relink_peers() {
  context_.peers.clear();
  for (const PeerPool& p : peer_pools_)
    context_.peers.push_back(WorkerContext::PeerLink{p.state, p.pool.get()});
}

void Worker::reroute(const WorkerRouting& r) {
  const config::NodeConfigSet& cfg = *r.config;
  context_.cluster = &cfg.cluster;
  context_.self = &cfg.self;
  context_.config = &cfg.proxy;
  context_.cookie_codec = r.cookie_codec;
  if (r.new_upstream_pool) {
    retire(std::move(upstream_));
    upstream_ = std::make_unique<UpstreamPool>(loop_.base(), cfg.proxy.upstream, counters_);
    context_.upstream = upstream_.get();
  }
  std::vector<PeerPool> next;
  if (shared_.peer_tls) {
    for (const PeerState* state : r.peers) {
      auto same = std::find_if(peer_pools_.begin(), peer_pools_.end(),
                               [state](const PeerPool& p) { return p.state == state && p.pool; });
      if (same != peer_pools_.end() && !r.new_peer_pools) {
        next.push_back(std::move(*same));
      } else {
        next.push_back(PeerPool{state, make_peer_pool(*state, cfg.proxy.peer)});
      }
    }
  }
  for (PeerPool& old : peer_pools_)
    if (old.pool) retire(std::move(old.pool));
  peer_pools_ = std::move(next);
  relink_peers();
}

void Worker::retire(std::unique_ptr<UpstreamPool> pool) {
  if (!pool) return;
  pool->retire();
  retired_pools_.push_back(std::move(pool));
  // Whatever no exchange uses goes now; the rest at the next sweeps.
  sweep_retired();
}

void Worker::sweep_cb(evutil_socket_t, short, void* arg) {
  static_cast<Worker*>(arg)->sweep_retired();
}

void Worker::sweep_retired() {
  std::erase_if(retired_pools_, [this](const std::unique_ptr<UpstreamPool>& pool) {
    for (const auto& [raw, connection] : connections_)
      if (connection->uses_pool(pool.get())) return false;
    return true;
  });
  if (!retired_pools_.empty() && !evtimer_pending(sweep_timer_.get(), nullptr))
    evtimer_add(sweep_timer_.get(), &kSweepInterval);
}

Worker::~Worker() {
  loop_.stop();
  // The loop no longer runs: nothing re-enters while connections go.
  shutdown_now();
  context_.peers.clear();
  peer_pools_.clear();
  retired_pools_.clear();
  upstream_.reset();
}

std::string Worker::bind() {
  for (const ListenerSetup& l : *shared_.listeners) {
    auto b = std::make_unique<Binding>();
    b->worker = this;
    b->listener = &l;
    ListenResult r = listen_reuseport(loop_.base(), l.config->bind, kBacklog, accept_cb, b.get());
    if (!r.listener) return "listener " + l.config->name + ": " + r.error;
    b->socket = std::move(r.listener);
    bindings_.push_back(std::move(b));
  }
  return {};
}

void Worker::accept_cb(evconnlistener*, evutil_socket_t fd, sockaddr* addr, int len, void* arg) {
  auto* b = static_cast<Binding*>(arg);
  b->worker->on_accept(*b->listener, fd, addr, len);
}

void Worker::on_accept(const ListenerSetup& listener, evutil_socket_t fd, const sockaddr* addr,
                       int len) {
  counters_.connections_accepted.add();
  auto peer = SocketAddress::from_sockaddr(addr, static_cast<socklen_t>(len));
  if (!peer) {
    ::close(fd);
    return;
  }
  if (!is_trusted_source(*listener.config, peer->ip())) {
    // Only the lb may speak for clients: anyone else could forge a PROXY
    // header, and without one we would not know who the client is.
    counters_.connections_refused_untrusted.add();
    log::warning("listener " + listener.config->name + ": connection from " + peer->to_string() +
                 " refused: not a trusted PROXY source");
    ::close(fd);
    return;
  }
  ConnectionLimit& limit = *shared_.limit;
  if (limit.max && limit.active.load(std::memory_order_relaxed) >= limit.max) {
    // Over the limit: this client is dropped, and the worker stops
    // accepting so that the next ones wait in the kernel's backlog
    // (HAProxy's maxconn behaviour) until connections end.
    counters_.connections_refused_limit.add();
    log::warning("listener " + listener.config->name + ": max_connections " +
                 std::to_string(limit.max) + " reached, pausing accept");
    ::close(fd);
    pause_listeners();
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  limit.active.fetch_add(1, std::memory_order_relaxed);
  counters_.connections_active.add();

  auto h = std::make_unique<ClientHandshake>(
      loop_.base(), listener, counters_, fd, *peer,
      [this](ClientHandshake* self, BufferEventPtr client, ClientInfo info) {
        on_handshake_done(self, std::move(client), std::move(info));
      });
  ClientHandshake* raw = h.get();
  handshakes_.emplace(raw, std::move(h));
  update_count();
  raw->start();
}

void Worker::on_handshake_done(ClientHandshake* handshake, BufferEventPtr client, ClientInfo info) {
  auto it = handshakes_.find(handshake);
  if (it == handshakes_.end()) return;
  // Destroyed when this function returns; the handshake touches nothing of
  // its own after calling us.
  std::unique_ptr<ClientHandshake> owned = std::move(it->second);
  handshakes_.erase(it);
  if (!client || shutting_down_) {
    client.reset();
    connection_ended();
    return;
  }
  auto c = make_client_connection(context_, std::move(client), std::move(info),
                                  [this](ClientConnection* done) { on_http_closed(done); });
  ClientConnection* raw = c.get();
  connections_.emplace(raw, std::move(c));
  update_count();
  raw->start();
}

void Worker::on_http_closed(ClientConnection* connection) {
  auto it = connections_.find(connection);
  if (it == connections_.end()) return;  // already being destroyed
  std::unique_ptr<ClientConnection> owned = std::move(it->second);
  connections_.erase(it);
  connection_ended();
  // Destroyed outside the map: its destructor may end upstream exchanges
  // whose callbacks reach back into this worker.
  owned.reset();
}

void Worker::connection_ended() {
  shared_.limit->active.fetch_sub(1, std::memory_order_relaxed);
  counters_.connections_active.sub();
  update_count();
}

void Worker::update_count() {
  connection_count_.store(handshakes_.size() + connections_.size(), std::memory_order_relaxed);
}

void Worker::pause_listeners() {
  if (paused_) return;
  paused_ = true;
  for (auto& b : bindings_) evconnlistener_disable(b->socket.get());
  evtimer_add(resume_timer_.get(), &kResumeCheck);
}

void Worker::resume_cb(evutil_socket_t, short, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  if (!w->accepting_) return;
  const ConnectionLimit& limit = *w->shared_.limit;
  if (limit.active.load(std::memory_order_relaxed) < limit.max) {
    w->paused_ = false;
    for (auto& b : w->bindings_) evconnlistener_enable(b->socket.get());
    return;
  }
  evtimer_add(w->resume_timer_.get(), &kResumeCheck);
}

void Worker::stop_accepting() {
  loop_.post([this] {
    accepting_ = false;
    if (resume_timer_) evtimer_del(resume_timer_.get());
    // Closing the sockets (not just disabling them) makes the kernel refuse
    // new clients at once instead of queueing them on a dead listener.
    bindings_.clear();
    // Idle keep-alive connections close now; busy ones after their current
    // response ("Connection: close"). Their ends are reported from the
    // loop later, never from inside shutdown(), so the map stays valid.
    for (auto& [raw, connection] : connections_) connection->shutdown();
  });
}

void Worker::shutdown_now() {
  accepting_ = false;
  shutting_down_ = true;
  bindings_.clear();
  if (resume_timer_) evtimer_del(resume_timer_.get());
  // Moved out first: a destructor that reports its end finds nothing to
  // erase, and nothing new is admitted while shutting_down_.
  auto handshakes = std::move(handshakes_);
  auto connections = std::move(connections_);
  handshakes_.clear();
  connections_.clear();
  const size_t ended = handshakes.size() + connections.size();
  handshakes.clear();
  connections.clear();
  for (size_t i = 0; i < ended; ++i) connection_ended();
}

Worker::Connections Worker::describe_connections(size_t limit) const {
  Connections out;
  out.handshaking = handshakes_.size();
  for (const auto& [connection, _] : connections_) {
    if (out.http.size() >= limit) break;
    out.http.push_back(connection->describe());
  }
  return out;
}

}  // namespace edgepin::nodeproxy
