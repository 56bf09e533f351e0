#include "lb/runtime.h"

#include <future>
#include <thread>

#include "common/log.h"

namespace edgepin::lb {

namespace {

timeval to_timeval(std::chrono::milliseconds ms) {
  return timeval{static_cast<time_t>(ms.count() / 1000), static_cast<suseconds_t>((ms.count() % 1000) * 1000)};
}

Algorithm algorithm_of(const config::BalanceConfig& b) {
  switch (b.algorithm) {
    case config::BalanceAlgorithm::RoundRobin: return Algorithm::RoundRobin;
    case config::BalanceAlgorithm::LeastConn: return Algorithm::LeastConn;
    case config::BalanceAlgorithm::Hash: break;
  }
  return b.hash_function == config::HashFunction::Ring ? Algorithm::Ring : Algorithm::Maglev;
}

CheckType check_type_of(config::HealthCheckType t) {
  switch (t) {
    case config::HealthCheckType::Tcp: return CheckType::Tcp;
    case config::HealthCheckType::TlsHello: return CheckType::TlsHello;
    case config::HealthCheckType::Http: return CheckType::Http;
  }
  return CheckType::Tcp;
}

}  // namespace

Runtime::Runtime(const config::ClusterConfig& cluster, const config::LbConfig& lb) {
  for (const config::Node& n : cluster.nodes) {
    auto s = std::make_unique<ServerState>();
    s->id = static_cast<uint32_t>(servers_.size());
    s->name = n.name;
    s->tag = n.tag;
    s->weight = n.weight;
    server_ptrs_.push_back(s.get());
    servers_.push_back(std::move(s));
  }
  if (lb.stick_table.size > 0) {
    StickTable::Options o;
    o.capacity = lb.stick_table.size;
    o.expire = std::chrono::duration_cast<std::chrono::milliseconds>(lb.stick_table.expire);
    stick_table_ = std::make_unique<StickTable>(o);
  }
  balancer_ = make_balancer(algorithm_of(lb.balance), server_ptrs_);
  Router::Options ro;
  ro.source_affinity = lb.source_affinity.enabled;
  ro.source_hash = lb.balance.hash_function == config::HashFunction::Ring ? Algorithm::Ring : Algorithm::Maglev;
  ro.ipv4_prefix = lb.source_affinity.ipv4_prefix;
  ro.ipv6_prefix = lb.source_affinity.ipv6_prefix;
  router_ = std::make_unique<Router>(server_ptrs_, *balancer_, stick_table_.get(), ro);

  for (const config::Frontend& fc : lb.frontends) {
    Frontend f;
    f.name = fc.name;
    f.index = static_cast<uint32_t>(frontends_.size());
    f.inspect_tls = fc.mode == config::FrontendMode::Tls;
    f.binds = fc.bind;
    f.inspect_buffer = fc.inspect.buffer_bytes;
    f.inspect_timeout = to_timeval(fc.inspect.timeout);
    f.on_inspect_failure = fc.inspect.on_failure == config::InspectFailure::Reject ? InspectFailurePolicy::Reject
                                                                                   : InspectFailurePolicy::Balance;
    f.proxy_protocol = fc.proxy_protocol == config::ProxyProtocol::V2   ? ProxyProtocolMode::V2
                       : fc.proxy_protocol == config::ProxyProtocol::V1 ? ProxyProtocolMode::V1
                                                                        : ProxyProtocolMode::None;
    for (const config::Node& n : cluster.nodes) f.server_addresses.push_back(n.endpoint(fc.server_port));
    f.connect_timeout = to_timeval(lb.timeouts.connect);
    // Once relaying, HAProxy's `timeout tunnel` supersedes the client and
    // server timeouts; our relay has one idle timer for both directions.
    f.idle_timeout = to_timeval(lb.timeouts.tunnel.count() > 0 ? lb.timeouts.tunnel
                                                               : std::max(lb.timeouts.client, lb.timeouts.server));
    f.retries = static_cast<int>(lb.retries);
    f.redispatch = lb.redispatch;
    f.router = router_.get();
    f.server_maxconn = lb.server_maxconn;
    f.queue_size = lb.queue_size;
    f.queue_timeout = to_timeval(lb.timeouts.queue);
    frontends_.push_back(std::move(f));
  }
  limits_.maxconn = lb.maxconn;

  unsigned threads = lb.threads ? lb.threads : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < threads; ++i)
    workers_.push_back(std::make_unique<Worker>(static_cast<int>(i), frontends_, limits_));

  if (lb.health_check.enabled) {
    HealthCheckSettings hs;
    hs.type = check_type_of(lb.health_check.type);
    hs.path = lb.health_check.path;
    hs.interval = to_timeval(lb.health_check.interval);
    hs.timeout = to_timeval(lb.health_check.timeout);
    hs.rise = static_cast<int>(lb.health_check.rise);
    hs.fall = static_cast<int>(lb.health_check.fall);
    hs.proxy_protocol = lb.health_check.proxy_protocol == config::ProxyProtocol::V2   ? ProxyProtocolMode::V2
                        : lb.health_check.proxy_protocol == config::ProxyProtocol::V1 ? ProxyProtocolMode::V1
                                                                                      : ProxyProtocolMode::None;
    std::vector<CheckTarget> targets;
    for (size_t i = 0; i < cluster.nodes.size(); ++i)
      targets.push_back({servers_[i].get(), SocketAddress(cluster.nodes[i].address,
                                                          lb.health_check.port.resolve(cluster.nodes[i]))});
    health_ = std::make_unique<HealthChecker>(hs, std::move(targets));
  }
}

Runtime::~Runtime() { stop(std::chrono::milliseconds(0)); }

std::string Runtime::start() {
  for (auto& w : workers_) {
    if (std::string err = w->bind(); !err.empty()) return err;
  }
  for (auto& w : workers_) w->start();
  if (health_) health_->start();
  started_ = true;
  std::string fe;
  for (const auto& f : frontends_) {
    fe += (fe.empty() ? "" : ", ") + f.name + (f.inspect_tls ? " (tls)" : " (tcp)") + " on";
    for (const auto& b : f.binds) fe += " " + b.toString();
  }
  log::info("started " + std::to_string(workers_.size()) + " workers, " + std::to_string(servers_.size()) +
            " servers; frontends: " + fe);
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

void Runtime::stop(std::chrono::milliseconds grace) {
  if (!started_) return;
  started_ = false;
  for (auto& w : workers_) w->stop_accepting();
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (active_sessions() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (size_t left = active_sessions())
    log::info("grace period over: closing " + std::to_string(left) + " connections");
  // End the rest on their own threads, and wait until each worker has.
  for (auto& w : workers_) {
    std::promise<void> ended;
    auto f = ended.get_future();
    w->loop().post([&w, &ended] {
      w->shutdown_now();
      ended.set_value();
    });
    f.wait();
  }
  if (health_) health_->stop();
  workers_.clear();
  health_.reset();
}

}  // namespace edgepin::lb
