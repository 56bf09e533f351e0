// The health answer and the stats page: per-worker counters summed, the
// JSON keys tools read, and HTML that escapes what it prints.
#include "stats.h"

#include <nlohmann/json.hpp>

#include <catch2/catch.hpp>

using namespace edgepin::nodeproxy;

TEST_CASE("health: 200 while Tomcat is up and the node is not draining", "[stats]") {
  NodeState node;
  node.tomcat_up = true;
  LocalResponse up = render_health(node);
  CHECK(up.status == 200);
  CHECK(up.body == "UP\n");
  CHECK(up.content_type.starts_with("text/plain"));

  node.tomcat_up = false;
  LocalResponse down = render_health(node);
  CHECK(down.status == 503);
  CHECK(down.body.find("tomcat") != std::string::npos);

  node.tomcat_up = true;
  node.draining = true;
  LocalResponse draining = render_health(node);
  CHECK(draining.status == 503);
  CHECK(draining.body.find("draining") != std::string::npos);

  // Peers keep relaying to a draining node: it still serves its sessions.
  CHECK(render_health(node, HealthAudience::Peer).status == 200);
  node.tomcat_up = false;
  CHECK(render_health(node, HealthAudience::Peer).status == 503);
}

TEST_CASE("stats: counters are summed over workers and rendered as JSON and HTML", "[stats]") {
  NodeState node;
  node.tomcat_up = true;
  NodeCounters a, b;
  a.connections_accepted.add(3);
  b.connections_accepted.add(4);
  a.tls_handshakes_full.add(2);
  b.tls_handshakes_resumed.add(5);
  a.requests.add(10);
  a.responses_by_class[2].add(9);
  b.responses_by_class[5].add(1);
  b.proxy_header_errors.add(1);

  StatsSource src;
  src.node_name = "node<1>";
  src.node_tag = 9;
  src.cluster_name = "demo";
  src.upstream = "127.0.0.1:8080";
  src.node = &node;
  src.workers = {&a, &b};
  const StatsSnapshot s = collect_stats(src);
  CHECK(s.connections_accepted == 7);
  CHECK(s.tls_handshakes_full == 2);
  CHECK(s.tls_handshakes_resumed == 5);
  CHECK(s.workers == 2);
  CHECK_FALSE(s.tls);  // no TLS context given

  const LocalResponse json = render_stats(s, true);
  CHECK(json.status == 200);
  CHECK(json.content_type == "application/json");
  const auto j = nlohmann::json::parse(json.body);
  CHECK(j["node"] == "node<1>");
  CHECK(j["tag"] == 9);
  CHECK(j["tomcat"]["up"] == true);
  CHECK(j["draining"] == false);
  CHECK(j["connections"]["accepted"] == 7);
  CHECK(j["connections"]["proxy_header_errors"] == 1);
  CHECK(j["requests"]["total"] == 10);
  CHECK(j["requests"]["responses"]["2xx"] == 9);
  CHECK(j["requests"]["responses"]["5xx"] == 1);
  CHECK(j["tls"]["handshakes_full"] == 2);
  CHECK(j["tls"]["handshakes_resumed"] == 5);
  CHECK(j["uptime_s"].get<int64_t>() >= 0);

  const LocalResponse html = render_stats(s, false);
  CHECK(html.content_type.starts_with("text/html"));
  CHECK(html.body.find("node&lt;1&gt;") != std::string::npos);
  CHECK(html.body.find("node<1>") == std::string::npos);
  CHECK(html.body.find("<th>resumed handshakes</th><td>5</td>") != std::string::npos);
}

TEST_CASE("stats: affinity outcomes, the peer link and each peer's health", "[stats]") {
  edgepin::config::Node n2, n3;
  n2.name = "node2";
  n2.tag = 2;
  n2.address = *edgepin::IpAddress::parse("127.0.0.12");
  n2.peer_port = 9443;
  n3 = n2;
  n3.name = "node3";
  n3.tag = 3;
  n3.address = *edgepin::IpAddress::parse("127.0.0.13");
  NodeState node;
  node.peers.push_back(std::make_unique<PeerState>(n2));
  node.peers.push_back(std::make_unique<PeerState>(n3));
  node.peers[0]->up = true;

  NodeCounters a, b;
  a.affinity[static_cast<size_t>(affinity::Outcome::Relay)].add(4);
  b.affinity[static_cast<size_t>(affinity::Outcome::Relay)].add(1);
  b.affinity[static_cast<size_t>(affinity::Outcome::Relayed)].add(2);
  a.affinity[static_cast<size_t>(affinity::Outcome::BadMac)].add(3);
  a.affinity_cookies_issued.add(6);
  b.relay_fallbacks.add(1);
  a.peer_connections_accepted.add(2);
  b.peer_connections_refused.add(7);

  StatsSource src;
  src.node_name = "node1";
  src.node = &node;
  src.workers = {&a, &b};
  src.affinity_mode = edgepin::config::AffinityMode::Cookie;
  const StatsSnapshot s = collect_stats(src);
  const auto j = nlohmann::json::parse(render_stats(s, true).body);
  CHECK(j["affinity"]["mode"] == "cookie");
  const auto& o = j["affinity"]["outcomes"];
  CHECK(o.size() == affinity::kOutcomeCount);
  CHECK(o["relayed_out"] == 5);
  CHECK(o["relayed_in"] == 2);
  CHECK(o["bad_mac"] == 3);
  CHECK(o["local"] == 0);
  CHECK(o["no_cookie"] == 0);
  CHECK(o["owner_down"] == 0);
  CHECK(o["unknown_owner"] == 0);
  CHECK(j["affinity"]["cookies_issued"] == 6);
  CHECK(j["affinity"]["relay_fallbacks"] == 1);
  CHECK(j["peer_link"]["connections_accepted"] == 2);
  CHECK(j["peer_link"]["connections_refused"] == 7);
  REQUIRE(j["peer_link"]["peers"].size() == 2);
  CHECK(j["peer_link"]["peers"][0]["name"] == "node2");
  CHECK(j["peer_link"]["peers"][0]["address"] == "127.0.0.12:9443");
  CHECK(j["peer_link"]["peers"][0]["up"] == true);
  CHECK(j["peer_link"]["peers"][1]["up"] == false);

  const std::string html = render_stats(s, false).body;
  CHECK(html.find("<th>relayed_out</th><td>5</td>") != std::string::npos);
  CHECK(html.find("node3 127.0.0.13:9443</th><td><b class=\"down\">DOWN</b>") != std::string::npos);
}
