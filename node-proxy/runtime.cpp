#include "node-proxy/runtime.h"

#include <future>
#include <thread>

#include "common/log.h"

namespace edgepin::nodeproxy {
namespace {

// How often stop() looks whether the last connections have ended.
constexpr std::chrono::milliseconds kDrainPoll{50};

}  // namespace

Runtime::Runtime(const config::NodeConfigSet& config) : config_(config) {
  const config::NodeProxyConfig& np = config.proxy;
  bool any_tls = false;
  for (const config::Listener& l : np.listeners) any_tls = any_tls || l.tls;
  if (any_tls) {
    if (!np.tls) throw TlsSetupError("a listener terminates TLS but node-proxy.json has no \"tls\" section");
    tls_ = TlsContext::create(*np.tls, config.self.tag, config.self.name);
  }
  for (const config::Listener& l : np.listeners) {
    ListenerSetup s;
    s.config = &l;
    s.tls = l.tls ? tls_.get() : nullptr;
    s.setup_timeout = l.tls ? np.timeouts.tls_handshake : np.timeouts.client_header;
    listeners_.push_back(s);
  }
  limit_.max = np.limits.max_connections;

  shared_.config = &config_;
  shared_.listeners = &listeners_;
  shared_.node = &node_;
  shared_.limit = &limit_;
  shared_.stats_page = [this](bool json) { return stats_page(json); };

  const unsigned threads = np.threads ? np.threads : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < threads; ++i) workers_.push_back(std::make_unique<Worker>(static_cast<int>(i), shared_));
  health_ = std::make_unique<TomcatHealthChecker>(np.health, np.upstream.address, node_);
}

Runtime::~Runtime() { stop(std::chrono::milliseconds(0)); }

std::string Runtime::start() {
  for (auto& w : workers_) {
    if (std::string err = w->bind(); !err.empty()) return err;
  }
  for (auto& w : workers_) w->start();
  health_->start();
  started_ = true;
  std::string what;
  for (const ListenerSetup& l : listeners_) {
    what += (what.empty() ? "" : ", ") + l.config->name + " on " + l.config->bind.toString() +
            (l.tls ? " (tls" : " (http") +
            (l.config->proxy_protocol == config::AcceptProxy::None
                 ? ")"
                 : ", proxy " + std::string(config::to_string(l.config->proxy_protocol)) + ")");
  }
  log::info("node " + config_.self.name + " (tag " + std::to_string(config_.self.tag) + "): started " +
            std::to_string(workers_.size()) + " workers; listeners: " + what + "; Tomcat at " +
            config_.proxy.upstream.address.toString());
  if (tls_) {
    std::string certs;
    for (const auto& c : tls_->certificates()) {
      certs += (certs.empty() ? "" : ", ") + c.cert_file.filename().string() + " (" + std::string(to_string(c.kind)) +
               (c.is_default ? ", default" : "") + ")";
    }
    log::info("tls: " + std::to_string(tls_->certificates().size()) + " certificates: " + certs);
  }
  return {};
}

void Runtime::tick() {
  if (!tls_) return;
  const tagging::RotateOutcome r = tls_->maybe_rotate_tickets(tagging::Clock::now());
  if (r == tagging::RotateOutcome::Rotated) {
    log::info("tls: ticket key rotated, epoch " + std::to_string(tls_->ticket_keys()->current_epoch()) + ", " +
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
  StatsSource src;
  src.node_name = config_.self.name;
  src.node_tag = config_.self.tag;
  src.cluster_name = config_.cluster.name;
  src.upstream = config_.proxy.upstream.address.toString();
  src.node = &node_;
  for (const auto& w : workers_) src.workers.push_back(&w->counters());
  src.tls = tls_.get();
  return render_stats(collect_stats(src), json);
}

void Runtime::stop(std::chrono::milliseconds grace) {
  if (!started_) return;
  started_ = false;
  // A stopping node is a draining node: its health check fails, so the lb
  // sends no new clients while the last requests finish.
  node_.draining.store(true, std::memory_order_relaxed);
  for (auto& w : workers_) w->stop_accepting();
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (active_connections() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(kDrainPoll);
  if (size_t left = active_connections())
    log::info("grace period over: closing " + std::to_string(left) + " connections");
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
  workers_.clear();
  health_.reset();
}

}  // namespace edgepin::nodeproxy
