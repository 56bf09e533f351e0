#include "runtime.h"

#include <algorithm>
#include <future>
#include <thread>
#include <tuple>

#include "config_diff.h"
#include "log.h"

namespace edgepin::nodeproxy {
namespace {

// How often stop() looks whether the last connections have ended.
constexpr std::chrono::milliseconds kDrainPoll{50};

}  // namespace

Runtime::Runtime(const config::NodeConfigSet& config) : config_(config), current_(&config) {
  const config::NodeProxyConfig& np = config.proxy;
  bool any_tls = false;
  for (const config::Listener& l : np.listeners) any_tls = any_tls || l.tls;
  if (any_tls) {
    if (!np.tls)
      throw TlsSetupError("a listener terminates TLS but node-proxy.json has no \"tls\" section");
    tls_ = TlsContext::create(*np.tls, config.self.tag, config.self.name);
  }
  for (const config::Listener& l : np.listeners) {
    ListenerSetup s;
    s.config = &l;
    s.tls = l.tls ? tls_.get() : nullptr;
    s.setup_timeout = l.tls ? np.timeouts.tls_handshake : np.timeouts.client_header;
    listeners_.push_back(s);
  }
  if (np.peer.enabled) {
    peer_tls_ = PeerTls::create(config.cluster, np.peer);
    // The peer port speaks only the peer link: no PROXY header (peers
    // connect directly), mutual TLS instead of the public certificates.
    peer_listener_.name = "peer";
    peer_listener_.tls = true;
    peer_listener_.bind = config.self.endpoint(config::NodePort::Peer);
    peer_listener_.proxy_protocol = config::AcceptProxy::None;
    peer_listener_.public_port = config.self.peer_port;
    ListenerSetup s;
    s.config = &peer_listener_;
    s.peer = peer_tls_.get();
    s.setup_timeout = np.timeouts.tls_handshake;
    listeners_.push_back(s);
    for (const config::Node& n : config.peers)
      node_.peers.push_back(std::make_unique<PeerState>(n));
  }
  if (config.cluster.affinity.mode == config::AffinityMode::Cookie) {
    cookie_codec_ =
        std::make_unique<affinity::CookieCodec>(config.cluster_key.bytes(), config.cluster.name);
  }
  limit_.max = np.limits.max_connections;

  shared_.config = &config_;
  shared_.listeners = &listeners_;
  shared_.node = &node_;
  shared_.limit = &limit_;
  shared_.stats_page = [this](bool json) { return stats_page(json); };
  shared_.peer_tls = peer_tls_.get();
  shared_.cookie_codec = cookie_codec_.get();

  const unsigned threads =
      np.threads ? np.threads : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < threads; ++i)
    workers_.push_back(std::make_unique<Worker>(static_cast<int>(i), shared_));
  health_ = std::make_unique<TomcatHealthChecker>(np.health, np.upstream.address, node_);
  if (peer_tls_ && !node_.peers.empty())
    peer_health_ = std::make_unique<PeerHealthChecker>(np.peer, np.health, *peer_tls_, node_);
}

Runtime::~Runtime() { stop(std::chrono::milliseconds(0)); }

std::string Runtime::start() {
  for (auto& w : workers_) {
    if (std::string err = w->bind(); !err.empty()) return err;
  }
  for (auto& w : workers_) w->start();
  health_->start();
  if (peer_health_) peer_health_->start();
  started_ = true;
  std::string what;
  for (const ListenerSetup& l : listeners_) {
    what += (what.empty() ? "" : ", ") + l.config->name + " on " + l.config->bind.to_string() +
            (l.peer        ? " (peer link, mutual tls"
             : l.tls.get() ? " (tls"
                           : " (http") +
            (l.config->proxy_protocol == config::AcceptProxy::None
                 ? ")"
                 : ", proxy " + std::string(config::to_string(l.config->proxy_protocol)) + ")");
  }
  log::info("node " + config_.self.name + " (tag " + std::to_string(config_.self.tag) +
            "): started " + std::to_string(workers_.size()) + " workers; listeners: " + what +
            "; Tomcat at " + config_.proxy.upstream.address.to_string());
  if (tls_) {
    std::string certs;
    for (const auto& c : tls_->certificates()) {
      certs += (certs.empty() ? "" : ", ") + c.cert_file.filename().string() + " (" +
               std::string(to_string(c.kind)) + (c.is_default ? ", default" : "") + ")";
    }
    log::info("tls: " + std::to_string(tls_->certificates().size()) + " certificates: " + certs);
  }
  return {};
}

void Runtime::tick() {
  // Contexts and configurations replaced by reloads, once nothing uses them.
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(retired_tls_, [now](const RetiredTls& r) { return r.free_after <= now; });
  if (reloaded_.size() > 1 && active_connections() == 0)
    reloaded_.erase(reloaded_.begin(), reloaded_.end() - 1);
  if (!tls_) return;
  const tagging::RotateOutcome r = tls_->maybe_rotate_tickets(tagging::Clock::now());
  if (r == tagging::RotateOutcome::Rotated) {
    log::info("tls: ticket key rotated, epoch " +
              std::to_string(tls_->ticket_keys()->current_epoch()) + ", " +
              std::to_string(tls_->ticket_keys()->size()) + " keys held");
  } else if (r != tagging::RotateOutcome::NotDue) {
    log::error("tls: ticket key rotation failed (" + std::string(tagging::to_string(r)) +
               "): the current key stays in use");
  }
}

size_t Runtime::active_connections() const {
  size_t n = 0;
  for (const auto& w : workers_) n += w->connection_count();
  return n;
}

LocalResponse Runtime::stats_page(bool json) const {
  return render_stats(collect_stats(stats_source()), json);
}

StatsSource Runtime::stats_source() const {
  StatsSource src;
  src.node_name = config_.self.name;
  src.node_tag = config_.self.tag;
  src.cluster_name = config_.cluster.name;
  src.node = &node_;
  for (const auto& w : workers_) src.workers.push_back(&w->counters());
  {
    std::lock_guard lock(tls_mu_);
    src.tls = tls_.get();
    src.upstream = current_->proxy.upstream.address.to_string();
    src.affinity_mode = current_->cluster.affinity.mode;
  }
  return src;
}

std::string Runtime::reload(std::shared_ptr<const config::NodeConfigSet> next) {
  if (!started_) return "not running";
  const config::NodeProxyConfig& np = next->proxy;
  // The listener set itself needs a restart (config::diffNodeProxy): only
  // swap TLS contexts when every listener still has the same TLS setting.
  bool same_listeners = np.listeners.size() == config_.proxy.listeners.size();
  for (size_t i = 0; same_listeners && i < np.listeners.size(); ++i)
    same_listeners = np.listeners[i].tls == config_.proxy.listeners[i].tls;
  std::unique_ptr<TlsContext> tls;
  if (tls_ && np.tls && same_listeners) {
    try {
      // The same ring: tickets and tagged session IDs issued before the
      // reload keep resuming.
      tls = TlsContext::create(*np.tls, config_.self.tag, config_.self.name, tls_->ticket_keys());
    } catch (const std::exception& e) {
      return e.what();
    }
  }
  if (tls) {
    std::chrono::milliseconds longest{0};
    for (size_t i = 0; i < config_.proxy.listeners.size(); ++i) {
      if (!listeners_[i].tls.get()) continue;
      listeners_[i].tls = tls.get();
      longest = std::max(longest, listeners_[i].setup_timeout);
    }
    std::lock_guard lock(tls_mu_);
    // A handshake that read the old context just before the swap ends
    // within its setup timeout; a second covers the read itself.
    retired_tls_.push_back(
        {std::chrono::steady_clock::now() + longest + std::chrono::seconds(1), std::move(tls_)});
    tls_ = std::move(tls);
  }
  // Everything below only builds objects and hands them over: nothing can
  // fail any more, so a reload is applied whole or (above) not at all.
  const config::NodeConfigSet& prev = *current_;
  auto upstream_tie = [](const config::UpstreamConfig& u) {
    return std::tie(u.address, u.pool_size, u.connect_timeout, u.response_timeout, u.idle_timeout);
  };
  auto peer_pool_tie = [](const config::PeerConfig& p) {
    return std::tie(p.pool_size, p.connect_timeout, p.response_timeout, p.idle_timeout);
  };
  auto peer_check_tie = [](const config::PeerConfig& p) {
    return std::tie(p.check_interval, p.check_timeout, p.rise, p.fall);
  };
  auto health_tie = [](const config::NodeHealthConfig& h) {
    return std::tie(h.check_path, h.check_interval, h.check_timeout, h.rise, h.fall);
  };
  const bool new_upstream_pool = upstream_tie(prev.proxy.upstream) != upstream_tie(np.upstream);
  const bool new_peer_pools = peer_pool_tie(prev.proxy.peer) != peer_pool_tie(np.peer);
  const bool tomcat_check_changed = health_tie(prev.proxy.health) != health_tie(np.health) ||
                                    prev.proxy.upstream.address != np.upstream.address;
  const bool peer_check_changed = peer_check_tie(prev.proxy.peer) != peer_check_tie(np.peer) ||
                                  prev.proxy.health.path != np.health.path;

  // The peers. Only a node-proxy started with the peer link has peers (the
  // link's listener and TLS need a restart).
  std::vector<config::Node> running_peers;
  for (const auto& p : node_.peers) running_peers.push_back(*p->node);
  const std::vector<config::Node> no_peers;
  const config::PeerPlan plan =
      config::plan_peers(running_peers, peer_tls_ ? next->peers : no_peers);
  bool peers_changed = plan.kept_from.size() != running_peers.size() || !plan.retired.empty();
  for (size_t i = 0; i < plan.kept_from.size() && !peers_changed; ++i)
    peers_changed = plan.kept_from[i] != i;

  // The checker reads every PeerState it checks: it stops before any of
  // them goes, and a new one starts on the new list.
  const bool restart_peer_checks = peers_changed || peer_check_changed;
  if (restart_peer_checks && peer_health_) {
    peer_health_->stop();
    peer_health_.reset();
  }
  // Our peer listener accepts the certificates of the new node list.
  if (peer_tls_) peer_tls_->set_nodes(next->cluster);
  std::vector<std::unique_ptr<PeerState>> removed;
  std::vector<bool> kept_state;
  if (peers_changed) {
    std::vector<std::unique_ptr<PeerState>> list;
    for (size_t i = 0; i < plan.kept_from.size(); ++i) {
      const size_t from = plan.kept_from[i];
      kept_state.push_back(from != config::kNewPeer);
      list.push_back(from != config::kNewPeer ? std::move(node_.peers[from])
                                              : std::make_unique<PeerState>(next->peers[i]));
    }
    for (size_t i : plan.retired) removed.push_back(std::move(node_.peers[i]));
    std::lock_guard lock(node_.peers_mu);
    node_.peers = std::move(list);
  } else {
    kept_state.assign(node_.peers.size(), true);
  }

  // A new MAC for every reload: the key or the cluster name may have
  // changed, and a new key makes the cookies issued under the old one
  // unknown (their sessions are then served where they land and get a new
  // cookie), which is what rotating the key is for.
  std::unique_ptr<affinity::CookieCodec> codec;
  if (next->cluster.affinity.mode == config::AffinityMode::Cookie)
    codec = std::make_unique<affinity::CookieCodec>(next->cluster_key.bytes(), next->cluster.name);

  // New connections read the new configuration; established ones keep
  // theirs (kept alive in reloaded_).
  reloaded_.push_back(next);
  {
    std::lock_guard lock(tls_mu_);
    current_ = reloaded_.back().get();
  }
  std::swap(cookie_codec_, codec);
  shared_.cookie_codec = cookie_codec_.get();
  reroute_workers(*reloaded_.back(), new_upstream_pool, new_peer_pools);
  // No worker links the removed peers or reads the old codec any more
  // (connections read the codec through their worker's context).
  removed.clear();
  codec.reset();

  if (restart_peer_checks && peer_tls_ && !node_.peers.empty()) {
    peer_health_ =
        std::make_unique<PeerHealthChecker>(np.peer, np.health, *peer_tls_, node_, kept_state);
    peer_health_->start();
  }
  if (tomcat_check_changed) {
    health_->stop();
    health_ = std::make_unique<TomcatHealthChecker>(np.health, np.upstream.address, node_, true);
    health_->start();
  }
  return {};
}

void Runtime::reroute_workers(const config::NodeConfigSet& next, bool new_upstream_pool,
                              bool new_peer_pools) {
  WorkerRouting routing;
  routing.config = &next;
  for (const auto& p : node_.peers) routing.peers.push_back(p.get());
  routing.cookie_codec = cookie_codec_.get();
  routing.new_upstream_pool = new_upstream_pool;
  routing.new_peer_pools = new_peer_pools;
  for (auto& w : workers_) {
    std::promise<void> done;
    auto f = done.get_future();
    Worker* raw = w.get();
    w->loop().post([raw, &routing, &done] {
      raw->reroute(routing);
      done.set_value();
    });
    f.wait();
  }
}

void Runtime::stop_accepting() {
  if (!started_) return;
  // A stopping node is a draining node: its health check fails, so the lb
  // sends no new clients while the last requests finish.
  node_.draining.store(true, std::memory_order_relaxed);
  for (auto& w : workers_) w->stop_accepting();
}

void Runtime::close_all() {
  if (!started_) return;
  started_ = false;
  if (size_t left = active_connections())
    log::info("closing " + std::to_string(left) + " remaining connections");
  // Close the rest on their own threads, and wait until each worker has.
  for (auto& w : workers_) {
    std::promise<void> ended;
    auto f = ended.get_future();
    w->loop().post([&w, &ended] {
      w->shutdown_now();
      ended.set_value();
    });
    f.wait();
  }
  health_->stop();
  if (peer_health_) peer_health_->stop();
  workers_.clear();
  health_.reset();
  peer_health_.reset();
}

void Runtime::stop(std::chrono::milliseconds grace) {
  if (!started_) return;
  stop_accepting();
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (active_connections() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(kDrainPoll);
  close_all();
}

}  // namespace edgepin::nodeproxy
