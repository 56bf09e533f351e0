// common/config/config_diff.*: what a reload reports as applied and what needs a
// restart, for the lb and the node-proxy. The inputs are typed config sets
// built here (the loader has its own tests in test_config.cpp).
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "config_diff.h"

namespace config = edgepin::config;
using edgepin::IpAddress;
using edgepin::SocketAddress;

namespace {

config::Node node(const std::string& name, uint16_t tag, uint16_t weight = 100) {
  config::Node n;
  n.name = name;
  n.tag = tag;
  n.address = IpAddress::loopback_v4();
  n.tls_port = static_cast<uint16_t>(8443 + tag);
  n.http_port = static_cast<uint16_t>(8080 + tag);
  n.peer_port = static_cast<uint16_t>(9000 + tag);
  n.weight = weight;
  return n;
}

config::LbConfigSet lb_set() {
  config::LbConfigSet s;
  s.cluster.name = "t";
  s.cluster.nodes = {node("node1", 1), node("node2", 2)};
  config::Frontend f;
  f.name = "https";
  f.bind = {SocketAddress(IpAddress::loopback_v4(), 443)};
  s.lb.frontends = {f};
  return s;
}

bool has(const std::vector<std::string>& v, const std::string& item) {
  for (const auto& x : v)
    if (x == item) return true;
  return false;
}

}  // namespace

TEST_CASE("lb diff: identical configs have no changes") {
  const auto a = lb_set();
  const auto d = config::diff_lb(a, a);
  CHECK(d.empty());
  CHECK(d.summary() == "no changes");
}

TEST_CASE("lb diff: servers by name (added, removed, weight), frontends by name") {
  const auto a = lb_set();
  auto b = lb_set();
  b.cluster.nodes = {node("node2", 2, 250), node("node3", 3)};
  config::Frontend http;
  http.name = "http";
  http.mode = config::FrontendMode::Tcp;
  http.bind = {SocketAddress(IpAddress::loopback_v4(), 80)};
  b.lb.frontends.push_back(http);
  b.lb.balance.algorithm = config::BalanceAlgorithm::LeastConn;
  b.lb.timeouts.connect = std::chrono::milliseconds(1234);
  b.lb.health_check.interval = std::chrono::milliseconds(500);
  const auto d = config::diff_lb(a, b);
  INFO(d.summary());
  CHECK(has(d.applied, "server node1 removed"));
  CHECK(has(d.applied, "server node3 added"));
  CHECK(has(d.applied, "server node2 weight 100 -> 250"));
  CHECK(has(d.applied, "frontend http added (127.0.0.1:80)"));
  CHECK(has(d.applied, "balance roundrobin -> leastconn"));
  CHECK(has(d.applied, "timeouts (new connections)"));
  CHECK(has(d.applied, "health_check"));
  CHECK(d.needs_restart.empty());
  // Nothing else: the unchanged frontend and node2's other fields are quiet.
  CHECK(d.applied.size() == 7);
}

TEST_CASE("lb diff: a moved frontend bind and restart-only keys") {
  const auto a = lb_set();
  auto b = lb_set();
  b.lb.frontends[0].bind = {SocketAddress(IpAddress::loopback_v4(), 8443)};
  b.lb.threads = 4;
  b.lb.maxconn = 5;
  b.lb.stick_table.size = 10;
  const auto d = config::diff_lb(a, b);
  INFO(d.summary());
  CHECK(has(d.applied, "frontend https bind 127.0.0.1:443 -> 127.0.0.1:8443"));
  CHECK(has(d.needs_restart, "threads 0 -> 4 (restart to apply)"));
  CHECK(has(d.needs_restart, "maxconn 10000 -> 5 (restart to apply)"));
  CHECK(has(d.needs_restart, "stick_table (restart to apply)"));
  // The summary lists applied items first.
  CHECK(d.summary().rfind("frontend https bind", 0) == 0);
}

TEST_CASE("node-proxy diff: applied vs restart-only") {
  config::NodeConfigSet a;
  a.cluster.name = "t";
  a.self = node("node1", 1);
  a.peers = {node("node2", 2)};
  a.proxy.tls.emplace();
  a.proxy.tls->certificates = {{"/etc/edgepin/pki/node1.pem", "/etc/edgepin/pki/node1.pem"}};
  config::NodeConfigSet b = a;
  CHECK(config::diff_node_proxy(a, b).empty());

  b.proxy.tls->certificates = {
      {"/etc/edgepin/pki/node1-2027.pem", "/etc/edgepin/pki/node1-2027.pem"}};
  b.proxy.headers.x_real_ip = true;
  b.proxy.timeouts.client_idle = std::chrono::milliseconds(1000);
  b.proxy.upstream.pool_size = 3;
  b.peers.push_back(node("node3", 3));
  b.proxy.shutdown_grace = std::chrono::milliseconds(5000);
  b.proxy.threads = 4;
  const auto d = config::diff_node_proxy(a, b);
  INFO(d.summary());
  CHECK(has(d.applied, "certificates (1)"));
  CHECK(has(d.applied, "header policy"));
  CHECK(has(d.applied, "timeouts (new connections)"));
  CHECK(has(d.applied, "shutdown_grace 30000 ms -> 5000 ms"));
  // Upstream pools and peers are rebuilt live since reloads apply them.
  CHECK(has(d.applied, "upstream settings"));
  CHECK(has(d.applied, "peer node3 added"));
  CHECK(has(d.needs_restart, "threads 0 -> 4 (restart to apply)"));
  CHECK(d.applied.size() == 6);
  CHECK(d.needs_restart.size() == 1);
}

TEST_CASE("node-proxy diff: upstream, peers, affinity and checks are applied live") {
  config::NodeConfigSet a;
  a.cluster.name = "t";
  a.self = node("node1", 1);
  a.peers = {node("node2", 2), node("node3", 3)};
  a.proxy.upstream.address = SocketAddress(IpAddress::loopback_v4(), 8080);
  config::NodeConfigSet b = a;
  b.proxy.upstream.address = SocketAddress(IpAddress::loopback_v4(), 18080);
  b.peers.erase(b.peers.begin());  // node2 removed
  b.peers[0].peer_port = 9999;     // node3 readdressed
  b.cluster.affinity.mode = config::AffinityMode::JvmRoute;
  b.cluster.affinity.max_age = std::chrono::seconds(60);
  b.proxy.health.rise = 5;
  b.proxy.peer.check_interval = std::chrono::milliseconds(500);
  b.proxy.peer.pool_size = 2;
  const auto d = config::diff_node_proxy(a, b);
  INFO(d.summary());
  CHECK(has(d.applied, "upstream address 127.0.0.1:8080 -> 127.0.0.1:18080"));
  CHECK(has(d.applied, "peer node2 removed"));
  CHECK(has(d.applied, "peer node3 ports"));
  CHECK(has(d.applied, "affinity mode cookie -> jvmroute"));
  CHECK(has(d.applied, "affinity cookie settings"));
  CHECK(has(d.applied, "health"));
  CHECK(has(d.applied, "peer checks"));
  CHECK(has(d.applied, "peer link pool"));
  CHECK(d.needs_restart.empty());
  CHECK(d.summary().find("restart") == std::string::npos);
}

TEST_CASE("node-proxy diff: key rotation, own entry and peer tls") {
  config::NodeConfigSet a;
  a.cluster.name = "t";
  a.self = node("node1", 1);
  config::NodeConfigSet b = a;
  b.cluster.affinity.key_file = "/etc/edgepin/cluster-2.key";
  b.self.peer_port = 9100;
  b.proxy.peer.cert_file = "/etc/edgepin/pki/other.pem";
  b.proxy.limits.max_connections = 7;
  const auto d = config::diff_node_proxy(a, b);
  INFO(d.summary());
  CHECK(has(d.applied, "affinity key (cookies issued before are no longer honoured)"));
  CHECK(has(d.needs_restart, "this node's entry (node1) (restart to apply)"));
  CHECK(has(d.needs_restart, "peer link tls (restart to apply)"));
  CHECK(has(d.needs_restart, "limits.max_connections 10000 -> 7 (restart to apply)"));
  CHECK(d.applied.size() == 1);
  CHECK(d.needs_restart.size() == 3);
}

TEST_CASE("planPeers keeps unchanged links and retires the others") {
  const std::vector<config::Node> from = {node("node2", 2), node("node3", 3), node("node4", 4)};

  SECTION("same list: everything kept in place") {
    const auto p = config::plan_peers(from, from);
    CHECK(p.kept_from == std::vector<size_t>{0, 1, 2});
    CHECK(p.retired.empty());
  }
  SECTION("added, removed and reordered") {
    const std::vector<config::Node> to = {node("node4", 4), node("node5", 5), node("node2", 2)};
    const auto p = config::plan_peers(from, to);
    CHECK(p.kept_from == std::vector<size_t>{2, config::kNewPeer, 0});
    CHECK(p.retired == std::vector<size_t>{1});
  }
  SECTION("a readdressed or retagged node is a new link; weight and public ports are not") {
    std::vector<config::Node> to = from;
    to[0].address = IpAddress::loopback_v6();
    to[1].tag = 13;
    to[2].weight = 0;
    to[2].tls_port = 1;
    to[2].http_port = 2;
    const auto p = config::plan_peers(from, to);
    CHECK(p.kept_from == std::vector<size_t>{config::kNewPeer, config::kNewPeer, 2});
    CHECK(p.retired == std::vector<size_t>{0, 1});
  }
  SECTION("empty lists") {
    CHECK(config::plan_peers({}, from).kept_from == std::vector<size_t>(3, config::kNewPeer));
    CHECK(config::plan_peers(from, {}).retired == std::vector<size_t>{0, 1, 2});
  }
}
