// common/config_diff.*: what a reload reports as applied and what needs a
// restart, for the lb and the node-proxy. The inputs are typed config sets
// built here (the loader has its own tests in test_config.cpp).
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "common/config_diff.h"

namespace config = edgepin::config;
using edgepin::IpAddress;
using edgepin::SocketAddress;

namespace {

config::Node node(const std::string& name, uint16_t tag, uint16_t weight = 100) {
  config::Node n;
  n.name = name;
  n.tag = tag;
  n.address = IpAddress::loopbackV4();
  n.tls_port = static_cast<uint16_t>(8443 + tag);
  n.http_port = static_cast<uint16_t>(8080 + tag);
  n.peer_port = static_cast<uint16_t>(9000 + tag);
  n.weight = weight;
  return n;
}

config::LbConfigSet lbSet() {
  config::LbConfigSet s;
  s.cluster.name = "t";
  s.cluster.nodes = {node("node1", 1), node("node2", 2)};
  config::Frontend f;
  f.name = "https";
  f.bind = {SocketAddress(IpAddress::loopbackV4(), 443)};
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
  const auto a = lbSet();
  const auto d = config::diffLb(a, a);
  CHECK(d.empty());
  CHECK(d.summary() == "no changes");
}

TEST_CASE("lb diff: servers by name (added, removed, weight), frontends by name") {
  const auto a = lbSet();
  auto b = lbSet();
  b.cluster.nodes = {node("node2", 2, 250), node("node3", 3)};
  config::Frontend http;
  http.name = "http";
  http.mode = config::FrontendMode::Tcp;
  http.bind = {SocketAddress(IpAddress::loopbackV4(), 80)};
  b.lb.frontends.push_back(http);
  b.lb.balance.algorithm = config::BalanceAlgorithm::LeastConn;
  b.lb.timeouts.connect = std::chrono::milliseconds(1234);
  b.lb.health_check.interval = std::chrono::milliseconds(500);
  const auto d = config::diffLb(a, b);
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
  const auto a = lbSet();
  auto b = lbSet();
  b.lb.frontends[0].bind = {SocketAddress(IpAddress::loopbackV4(), 8443)};
  b.lb.threads = 4;
  b.lb.maxconn = 5;
  b.lb.stick_table.size = 10;
  const auto d = config::diffLb(a, b);
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
  CHECK(config::diffNodeProxy(a, b).empty());

  b.proxy.tls->certificates = {{"/etc/edgepin/pki/node1-2027.pem", "/etc/edgepin/pki/node1-2027.pem"}};
  b.proxy.headers.x_real_ip = true;
  b.proxy.timeouts.client_idle = std::chrono::milliseconds(1000);
  b.proxy.upstream.pool_size = 3;
  b.peers.push_back(node("node3", 3));
  b.proxy.shutdown_grace = std::chrono::milliseconds(5000);
  const auto d = config::diffNodeProxy(a, b);
  INFO(d.summary());
  CHECK(has(d.applied, "certificates (1)"));
  CHECK(has(d.applied, "header policy"));
  CHECK(has(d.applied, "timeouts (new connections)"));
  CHECK(has(d.applied, "shutdown_grace 30000 ms -> 5000 ms"));
  CHECK(has(d.needs_restart, "upstream settings (restart to apply)"));
  CHECK(has(d.needs_restart, "peer node3 added (restart to apply)"));
  CHECK(d.applied.size() == 4);
  CHECK(d.needs_restart.size() == 2);
}
