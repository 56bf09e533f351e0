#include "runtime.h"

#include <future>
#include <stdexcept>
#include <thread>

#include "log.h"
#include "time_util.h"

namespace edgepin::lb {

namespace {

Algorithm algorithm_of(const config::BalanceConfig& b) {
  switch (b.algorithm) {
    case config::BalanceAlgorithm::RoundRobin:
      return Algorithm::RoundRobin;
    case config::BalanceAlgorithm::LeastConn:
      return Algorithm::LeastConn;
    case config::BalanceAlgorithm::Hash:
      break;
  }
  return b.hash_function == config::HashFunction::Ring ? Algorithm::Ring : Algorithm::Maglev;
}

CheckType check_type_of(config::HealthCheckType t) {
  switch (t) {
    case config::HealthCheckType::Tcp:
      return CheckType::Tcp;
    case config::HealthCheckType::TlsHello:
      return CheckType::TlsHello;
    case config::HealthCheckType::Http:
      return CheckType::Http;
  }
  return CheckType::Tcp;
}

ProxyProtocolMode proxy_mode_of(config::ProxyProtocol p) {
  return p == config::ProxyProtocol::V2   ? ProxyProtocolMode::V2
         : p == config::ProxyProtocol::V1 ? ProxyProtocolMode::V1
                                          : ProxyProtocolMode::None;
}

// What the health checker probes: the server set with its addresses and
// the check settings. A reload rebuilds the checker only when this changed
// (a rebuilt checker starts its rise/fall counts over).
bool same_health_inputs(const config::HealthCheckConfig& a, const std::vector<config::Node>& na,
                        const config::HealthCheckConfig& b, const std::vector<config::Node>& nb) {
  auto tie = [](const config::HealthCheckConfig& h) {
    return std::tie(h.enabled, h.type, h.port, h.path, h.proxy_protocol, h.interval, h.timeout,
                    h.rise, h.fall);
  };
  if (tie(a) != tie(b) || na.size() != nb.size()) return false;
  for (size_t i = 0; i < na.size(); ++i) {
    if (std::tie(na[i].name, na[i].address, na[i].tls_port, na[i].http_port) !=
        std::tie(nb[i].name, nb[i].address, nb[i].tls_port, nb[i].http_port))
      return false;
  }
  return true;
}

}  // namespace

Runtime::Runtime(const config::ClusterConfig& cluster, const config::LbConfig& lb) {
  for (const config::Node& n : cluster.nodes) {
    auto s = std::make_shared<ServerState>();
    s->id = static_cast<uint32_t>(servers_.size());
    s->name = n.name;
    s->tag = n.tag;
    s->weight.store(n.weight, std::memory_order_relaxed);
    servers_.push_back(std::move(s));
    nodes_.push_back(n);
  }
  if (lb.stick_table.size > 0) {
    StickTable::Options o;
    o.capacity = lb.stick_table.size;
    o.expire = std::chrono::duration_cast<std::chrono::milliseconds>(lb.stick_table.expire);
    stick_table_ = std::make_unique<StickTable>(o);
  }
  std::vector<uint32_t> slots;
  // The config loader caps nothing here; a first config with more
  // frontends than slots cannot run.
  if (!assign_slots(lb, frontend_names_, slots))
    throw std::runtime_error("more than " + std::to_string(kFrontendSlots) + " frontends");
  std::vector<ServerState*> by_id;
  for (const auto& s : servers_) by_id.push_back(s.get());
  snapshot_ = build(cluster, lb, by_id, nodes_, slots, stick_table_.get());
  limits_.maxconn = lb.maxconn;

  unsigned threads = lb.threads ? lb.threads : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < threads; ++i)
    workers_.push_back(std::make_unique<Worker>(static_cast<int>(i), kFrontendSlots, limits_));
  health_config_ = lb.health_check;
  health_nodes_ = cluster.nodes;
  health_ = make_health(cluster, lb);
}

Runtime::~Runtime() { stop(std::chrono::milliseconds(0)); }

bool Runtime::assign_slots(const config::LbConfig& lb, std::vector<std::string>& names,
                           std::vector<uint32_t>& slots) const {
  for (const config::Frontend& fc : lb.frontends) {
    size_t i = 0;
    while (i < names.size() && names[i] != fc.name) ++i;
    if (i == names.size()) {
      if (names.size() >= kFrontendSlots) return false;
      names.push_back(fc.name);
    }
    slots.push_back(static_cast<uint32_t>(i));
  }
  return true;
}

std::shared_ptr<Snapshot> Runtime::build(const config::ClusterConfig& cluster,
                                         const config::LbConfig& lb,
                                         const std::vector<ServerState*>& by_id,
                                         const std::vector<config::Node>& nodes,
                                         const std::vector<uint32_t>& slots, StickTable* table) {
  auto snap = std::make_shared<Snapshot>();
  snap->by_id = by_id;
  for (const config::Node& n : cluster.nodes) {
    for (ServerState* s : by_id)
      if (s->name == n.name) snap->active.push_back(s);
  }
  snap->balancer = make_balancer(algorithm_of(lb.balance), snap->active);
  Router::Options ro;
  ro.source_affinity = lb.source_affinity.enabled;
  ro.source_hash =
      lb.balance.hash_function == config::HashFunction::Ring ? Algorithm::Ring : Algorithm::Maglev;
  ro.ipv4_prefix = lb.source_affinity.ipv4_prefix;
  ro.ipv6_prefix = lb.source_affinity.ipv6_prefix;
  // The router resolves stick-table entries by server id, so it gets every
  // known server; removed ones are never usable (ServerState::removed).
  snap->router = std::make_unique<Router>(snap->by_id, *snap->balancer, table, ro);

  for (size_t k = 0; k < lb.frontends.size(); ++k) {
    const config::Frontend& fc = lb.frontends[k];
    Frontend f;
    f.name = fc.name;
    f.index = slots[k];
    f.inspect_tls = fc.mode == config::FrontendMode::Tls;
    f.binds = fc.bind;
    f.inspect_buffer = fc.inspect.buffer_bytes;
    f.inspect_timeout = to_timeval(fc.inspect.timeout);
    f.on_inspect_failure = fc.inspect.on_failure == config::InspectFailure::Reject
                               ? InspectFailurePolicy::Reject
                               : InspectFailurePolicy::Balance;
    f.proxy_protocol = proxy_mode_of(fc.proxy_protocol);
    // By server id; a removed server keeps its last address (sessions that
    // use it are already connected).
    for (const config::Node& n : nodes) f.server_addresses.push_back(n.endpoint(fc.server_port));
    f.connect_timeout = to_timeval(lb.timeouts.connect);
    // As in HAProxy: the client and server timeouts while the relay waits
    // for one side, the tunnel timeout (0: none) for both once bytes have
    // flowed both ways.
    f.client_timeout = to_timeval(lb.timeouts.client);
    f.server_timeout = to_timeval(lb.timeouts.server);
    f.tunnel_timeout = to_timeval(lb.timeouts.tunnel);
    f.retries = static_cast<int>(lb.retries);
    f.redispatch = lb.redispatch;
    f.router = snap->router.get();
    f.server_maxconn = lb.server_maxconn;
    f.queue_size = lb.queue_size;
    f.queue_timeout = to_timeval(lb.timeouts.queue);
    f.access_log = lb.log.access_log;
    snap->frontends.push_back(std::move(f));
  }
  return snap;
}

FrontendList Runtime::frontend_list(const std::shared_ptr<const Snapshot>& s) {
  FrontendList out;
  // Aliasing constructor: points at one frontend, owns the snapshot.
  for (const Frontend& f : s->frontends) out.push_back(std::shared_ptr<const Frontend>(s, &f));
  return out;
}

std::unique_ptr<HealthChecker> Runtime::make_health(const config::ClusterConfig& cluster,
                                                    const config::LbConfig& lb) const {
  if (!lb.health_check.enabled) return nullptr;
  HealthCheckSettings hs;
  hs.type = check_type_of(lb.health_check.type);
  hs.path = lb.health_check.path;
  hs.interval = to_timeval(lb.health_check.interval);
  hs.timeout = to_timeval(lb.health_check.timeout);
  hs.rise = static_cast<int>(lb.health_check.rise);
  hs.fall = static_cast<int>(lb.health_check.fall);
  hs.proxy_protocol = proxy_mode_of(lb.health_check.proxy_protocol);
  std::vector<CheckTarget> targets;
  for (const config::Node& n : cluster.nodes) {
    for (const auto& s : servers_) {
      if (s->name == n.name && !s->removed.load(std::memory_order_relaxed))
        targets.push_back({s.get(), SocketAddress(n.address, lb.health_check.port.resolve(n))});
    }
  }
  return std::make_unique<HealthChecker>(hs, std::move(targets));
}

std::shared_ptr<const Snapshot> Runtime::snapshot() const {
  std::lock_guard lock(mu_);
  return snapshot_;
}

std::vector<std::shared_ptr<ServerState>> Runtime::servers() const {
  std::lock_guard lock(mu_);
  return servers_;
}

void Runtime::on_workers(const std::function<void(Worker&)>& fn) {
  for (auto& w : workers_) {
    std::promise<void> done;
    auto f = done.get_future();
    Worker* raw = w.get();
    w->loop().post([raw, &fn, &done] {
      fn(*raw);
      done.set_value();
    });
    f.wait();
  }
}

std::string Runtime::start() {
  const FrontendList list = frontend_list(snapshot());
  for (auto& w : workers_) {
    if (std::string err = w->prepare(list); !err.empty()) return err;
    w->commit(list);
  }
  for (auto& w : workers_) w->start();
  if (health_) health_->start();
  started_ = true;
  std::string fe;
  for (const auto& f : snapshot()->frontends) {
    fe += (fe.empty() ? "" : ", ") + f.name + (f.inspect_tls ? " (tls)" : " (tcp)") + " on";
    for (const auto& b : f.binds) {
      fe += ' ';  // not `" " + b.to_string()`: GCC 12 -O3 -Wrestrict false positive
      fe += b.to_string();
    }
  }
  log::info("started " + std::to_string(workers_.size()) + " workers, " +
            std::to_string(servers_.size()) + " servers; frontends: " + fe);
  return {};
}

std::string Runtime::reload(const config::ClusterConfig& cluster, const config::LbConfig& lb) {
  if (!started_) return "not running";
  std::vector<std::string> names = frontend_names_;
  std::vector<uint32_t> slots;
  if (!assign_slots(lb, names, slots))
    return "more than " + std::to_string(kFrontendSlots) +
           " frontends over the process's life (restart to reset)";

  // The server list after the reload: known names keep their object (and
  // so their id, health, counters and stick-table entries); a node whose
  // tag changed is a different server on the wire, so it gets a new one.
  std::vector<std::shared_ptr<ServerState>> added;
  std::vector<config::Node> nodes = nodes_;
  std::vector<ServerState*> by_id;
  for (const auto& s : servers_) by_id.push_back(s.get());
  for (const config::Node& n : cluster.nodes) {
    bool known = false;
    for (size_t id = 0; id < servers_.size(); ++id) {
      if (servers_[id]->name == n.name && servers_[id]->tag == n.tag) {
        known = true;
        nodes[id] = n;
      }
    }
    if (known) continue;
    auto s = std::make_shared<ServerState>();
    s->id = static_cast<uint32_t>(by_id.size());
    s->name = n.name;
    s->tag = n.tag;
    s->weight.store(n.weight, std::memory_order_relaxed);
    by_id.push_back(s.get());
    nodes.push_back(n);
    added.push_back(std::move(s));
  }

  // Open the new listening sockets first, on every worker: a port in use
  // must fail the reload before anything changed.
  {
    // Weights are read by the balancer as it is built, so the snapshot is
    // built after they are set, below; the bindings need only names and
    // addresses, which the config already has.
    auto probe = std::make_shared<Snapshot>();
    for (size_t k = 0; k < lb.frontends.size(); ++k) {
      Frontend f;
      f.name = lb.frontends[k].name;
      f.index = slots[k];
      f.binds = lb.frontends[k].bind;
      probe->frontends.push_back(std::move(f));
    }
    const FrontendList wanted = frontend_list(probe);
    std::string error;
    on_workers([&](Worker& w) {
      if (error.empty()) error = w.prepare(wanted);
    });
    if (!error.empty()) {
      on_workers([](Worker& w) { w.abort_prepared(); });
      return error;
    }
  }

  // Commit. Weights and the removed flags change in place (atomics); the
  // old balancer may see a new weight for a moment, which only shifts one
  // pick.
  for (const config::Node& n : cluster.nodes) {
    for (auto& s : servers_) {
      if (s->name == n.name && s->tag == n.tag) {
        s->weight.store(n.weight, std::memory_order_relaxed);
        s->removed.store(false, std::memory_order_relaxed);
      }
    }
  }
  for (auto& s : servers_) {
    bool kept = false;
    for (const config::Node& n : cluster.nodes)
      kept = kept || (n.name == s->name && n.tag == s->tag);
    if (!kept) s->removed.store(true, std::memory_order_relaxed);
  }
  std::shared_ptr<Snapshot> next = build(cluster, lb, by_id, nodes, slots, stick_table_.get());
  {
    std::lock_guard lock(mu_);
    for (auto& s : added) servers_.push_back(std::move(s));
    snapshot_ = next;
  }
  nodes_ = std::move(nodes);
  frontend_names_ = std::move(names);
  const FrontendList list = frontend_list(next);
  on_workers([&list](Worker& w) { w.commit(list); });

  // Stick-table entries that point at removed servers are dropped lazily:
  // the router never routes to a removed server, and relearns the key.
  if (!same_health_inputs(health_config_, health_nodes_, lb.health_check, cluster.nodes)) {
    if (health_) health_->stop();
    health_ = make_health(cluster, lb);
    if (health_) health_->start();
    health_config_ = lb.health_check;
  }
  health_nodes_ = cluster.nodes;
  return {};
}

size_t Runtime::active_sessions() const {
  size_t n = 0;
  for (const auto& w : workers_) n += w->session_count();
  return n;
}

void Runtime::tick() {
  if (stick_table_) stick_table_->purge_expired(StickTable::Clock::now());
}

void Runtime::stop_accepting() {
  if (!started_) return;
  for (auto& w : workers_) w->stop_accepting();
}

void Runtime::close_all() {
  if (!started_) return;
  started_ = false;
  if (size_t left = active_sessions())
    log::info("closing " + std::to_string(left) + " remaining connections");
  // End the rest on their own threads, and wait until each worker has.
  on_workers([](Worker& w) { w.shutdown_now(); });
  if (health_) health_->stop();
  workers_.clear();
  health_.reset();
}

void Runtime::stop(std::chrono::milliseconds grace) {
  if (!started_) return;
  stop_accepting();
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (active_sessions() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  close_all();
}

}  // namespace edgepin::lb
