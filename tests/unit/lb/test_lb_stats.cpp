// The lb's stats snapshot and its renderings, the stats listener's page
// selection, and the admin commands, on a Runtime built from a config
// (workers not started unless a test needs them to answer).
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <sstream>
#include <string>
#include <vector>

#include "admin.h"
#include "runtime.h"
#include "stats.h"
#include "stats_server.h"

using namespace edgepin;
using namespace edgepin::lb;

namespace {

struct Configs {
  config::ClusterConfig cluster;
  config::LbConfig lb;
};

Configs make_configs() {
  Configs c;
  c.cluster.name = "unit";
  for (uint16_t i = 1; i <= 3; ++i) {
    config::Node n;
    n.name = "node" + std::to_string(i);
    n.tag = i;
    n.address = IpAddress::loopback_v4();
    n.tls_port = static_cast<uint16_t>(9440 + i);
    n.http_port = static_cast<uint16_t>(9480 + i);
    n.peer_port = static_cast<uint16_t>(9500 + i);
    c.cluster.nodes.push_back(n);
  }
  c.lb.threads = 2;
  config::Frontend tls;
  tls.name = "https";
  tls.mode = config::FrontendMode::Tls;
  tls.bind = {SocketAddress(IpAddress::loopback_v4(), 0)};
  config::Frontend tcp;
  tcp.name = "http";
  tcp.mode = config::FrontendMode::Tcp;
  tcp.server_port = config::NodePort::Http;
  tcp.bind = {SocketAddress(IpAddress::loopback_v4(), 0)};
  c.lb.frontends = {tls, tcp};
  c.lb.health_check.enabled = false;
  c.lb.stick_table.size = 1000;
  return c;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

bool has_line(const std::string& text, const std::string& line) {
  for (const auto& l : lines_of(text))
    if (l == line) return true;
  return false;
}

// Fills counters as traffic would: per worker and per frontend.
void simulate_traffic(const Runtime& rt) {
  FrontendCounters& w0_https = rt.workers()[0]->counters().frontends[0];
  FrontendCounters& w1_https = rt.workers()[1]->counters().frontends[0];
  FrontendCounters& w1_http = rt.workers()[1]->counters().frontends[1];
  w0_https.accepted.add(3);
  w0_https.active.add(1);
  w0_https.ends[static_cast<size_t>(End::Closed)].add(2);
  w0_https.routes[static_cast<size_t>(RouteReason::Tag)].add(2);
  w0_https.bytes_in.add(100);
  w0_https.bytes_out.add(1000);
  w1_https.accepted.add(2);
  w1_https.ends[static_cast<size_t>(End::Closed)].add(1);
  w1_https.ends[static_cast<size_t>(End::InspectTimeout)].add(1);
  w1_https.routes[static_cast<size_t>(RouteReason::Balance)].add(1);
  w1_https.routes[static_cast<size_t>(RouteReason::None)].add(1);
  w1_https.bytes_in.add(50);
  w1_https.bytes_out.add(500);
  w1_http.accepted.add(1);
  w1_http.ends[static_cast<size_t>(End::ServerTimeout)].add(1);
  rt.workers()[0]->counters().redispatches.add(2);
  rt.workers()[1]->counters().redispatches.add(1);
  rt.workers()[0]->counters().maxconn_pauses.add(2);
  rt.workers()[1]->counters().maxconn_pauses.add(5);
  rt.workers()[1]
      ->counters()
      .inspect_errors[static_cast<size_t>(tls::HelloError::NotHandshakeRecord)]
      .add(4);

  ServerState& node1 = *rt.servers()[0];
  node1.total_connections = 3;
  node1.active = 1;
  node1.bytes_in = 150;
  node1.bytes_out = 1500;
  node1.check_outcome = static_cast<uint8_t>(CheckOutcome::Ok);
  node1.check_detail = 200;
  node1.check_latency_us = 1500;
  rt.servers()[1]->admin = AdminState::Drain;
  rt.servers()[2]->healthy = false;
  rt.servers()[2]->check_outcome = static_cast<uint8_t>(CheckOutcome::ConnectFailed);
}

}  // namespace

TEST_CASE("server status: maintenance, then health, then drain") {
  CHECK(status_of(true, AdminState::Ready) == ServerStatus::Up);
  CHECK(status_of(true, AdminState::Drain) == ServerStatus::Drain);
  CHECK(status_of(false, AdminState::Drain) == ServerStatus::Down);
  CHECK(status_of(false, AdminState::Ready) == ServerStatus::Down);
  CHECK(status_of(false, AdminState::Maint) == ServerStatus::Maint);
  CHECK(status_of(true, AdminState::Maint) == ServerStatus::Maint);
  CHECK(std::string(to_string(ServerStatus::Drain)) == "DRAIN");
  CHECK(format_duration(0) == "0d 00h00m00s");
  CHECK(format_duration(3 * 86400 + 4 * 3600 + 5 * 60 + 6) == "3d 04h05m06s");
}

TEST_CASE("stats listener: which page a request gets") {
  CHECK(stats_page_for("/", "") == StatsPage::Html);
  CHECK(stats_page_for("/stats", "text/html,*/*;q=0.8") == StatsPage::Html);
  CHECK(stats_page_for("/stats;json", "") == StatsPage::Json);
  CHECK(stats_page_for("/stats?json", "") == StatsPage::Json);
  CHECK(stats_page_for("/stats?refresh=1&json", "") == StatsPage::Json);
  CHECK(stats_page_for("/?json", "") == StatsPage::Json);
  CHECK(stats_page_for("/stats", "Application/JSON") == StatsPage::Json);
  CHECK(stats_page_for("/stats?jsonx", "") == StatsPage::Html);
  CHECK(stats_page_for("/metrics", "") == StatsPage::Metrics);
  CHECK(stats_page_for("/metrics?x=1", "application/json") == StatsPage::Metrics);
  CHECK(stats_page_for("/metrics/", "") == StatsPage::NotFound);
  CHECK(stats_page_for("/stats/", "") == StatsPage::NotFound);
  CHECK(stats_page_for("/favicon.ico", "") == StatsPage::NotFound);
  CHECK(stats_page_for("*", "") == StatsPage::NotFound);
}

TEST_CASE("collect_stats sums per-worker, per-frontend counters and reads the servers") {
  Configs c = make_configs();
  Runtime rt(c.cluster, c.lb);
  simulate_traffic(rt);
  rt.stick_table()->learn(*StickKey::session_id(std::vector<uint8_t>(32, 0xab)), 1,
                          StickTable::Clock::now());

  ProcessInfo p;
  p.pid = 4242;
  LbStats s = collect_stats(rt, p);
  CHECK(s.pid == 4242);
  CHECK(s.threads == 2);
  REQUIRE(s.frontends.size() == 2);
  const FrontendStats& https = s.frontends[0];
  CHECK(https.name == "https");
  CHECK(https.mode == "tls");
  CHECK(https.total == 5);
  CHECK(https.current == 1);
  CHECK(https.bytes_in == 150);
  CHECK(https.bytes_out == 1500);
  CHECK(https.ends[static_cast<size_t>(End::Closed)] == 3);
  CHECK(https.routes[static_cast<size_t>(RouteReason::Tag)] == 2);
  CHECK(s.frontends[1].mode == "tcp");
  CHECK(s.frontends[1].total == 1);
  CHECK(s.total == 6);
  CHECK(s.current == 1);
  CHECK(s.ends[static_cast<size_t>(End::ServerTimeout)] == 1);
  CHECK(s.redispatches == 3);
  CHECK(s.maxconn_pauses == 7);
  CHECK(s.maxconn == c.lb.maxconn);
  CHECK(s.inspect_errors[static_cast<size_t>(tls::HelloError::NotHandshakeRecord)] == 4);

  REQUIRE(s.servers.size() == 3);
  CHECK(s.servers[0].status == ServerStatus::Up);
  CHECK(s.servers[0].total == 3);
  CHECK(s.servers[0].current == 1);
  CHECK(s.servers[0].check == CheckOutcome::Ok);
  CHECK(s.servers[0].check_detail == 200);
  CHECK(s.servers[1].status == ServerStatus::Drain);
  CHECK(s.servers[2].status == ServerStatus::Down);
  CHECK(s.stick_table.enabled);
  CHECK(s.stick_table.capacity == 1000);
  CHECK(s.stick_table.counters.entries == 1);
}

TEST_CASE("renderings of one snapshot") {
  Configs c = make_configs();
  Runtime rt(c.cluster, c.lb);
  simulate_traffic(rt);
  LbStats s = collect_stats(rt, ProcessInfo{});

  SECTION("Prometheus: every family valid, the numbers as collected") {
    prometheus::Exposition e = lb_exposition(s);
    INFO(e.error());
    REQUIRE(e.ok());
    const std::string text = e.render();
    CHECK(text == render_prometheus(s));
    CHECK(has_line(text, "# TYPE edgepin_lb_frontend_connections_total counter"));
    CHECK(has_line(text, "edgepin_lb_frontend_connections_total{frontend=\"https\"} 5"));
    CHECK(has_line(text, "edgepin_lb_frontend_connections_total{frontend=\"http\"} 1"));
    CHECK(has_line(text, "edgepin_lb_frontend_current_connections{frontend=\"https\"} 1"));
    CHECK(has_line(text, "edgepin_lb_frontend_routes_total{frontend=\"https\",reason=\"tag\"} 2"));
    CHECK(has_line(text, "edgepin_lb_frontend_routes_total{frontend=\"https\",reason=\"none\"} 1"));
    CHECK(has_line(
        text,
        "edgepin_lb_frontend_session_ends_total{frontend=\"http\",reason=\"server_timeout\"} 1"));
    CHECK(has_line(text, "edgepin_lb_maxconn_pauses_total 7"));
    CHECK(has_line(text, "edgepin_lb_maxconn " + std::to_string(c.lb.maxconn)));
    CHECK(has_line(text, "edgepin_lb_redispatches_total 3"));
    CHECK(has_line(text, "edgepin_lb_inspect_errors_total{reason=\"not_handshake_record\"} 4"));
    CHECK(has_line(text, "edgepin_lb_server_state{server=\"node2\",state=\"drain\"} 1"));
    CHECK(has_line(text, "edgepin_lb_server_state{server=\"node2\",state=\"up\"} 0"));
    CHECK(has_line(text, "edgepin_lb_server_state{server=\"node3\",state=\"down\"} 1"));
    CHECK(has_line(text, "edgepin_lb_server_healthy{server=\"node3\"} 0"));
    CHECK(has_line(
        text, "edgepin_lb_server_check_outcome{server=\"node3\",outcome=\"connect_failed\"} 1"));
    CHECK(has_line(text, "edgepin_lb_server_check_latency_seconds{server=\"node1\"} 0.0015"));
    CHECK(has_line(text, "edgepin_lb_server_connections_total{server=\"node1\"} 3"));
    CHECK(has_line(text, "edgepin_lb_server_bytes_out_total{server=\"node1\"} 1500"));
    CHECK(has_line(text, "edgepin_lb_stick_table_capacity 1000"));
    CHECK(has_line(text, "edgepin_lb_stick_table_entries 0"));
    // One HELP per family.
    size_t helps = 0, types = 0;
    for (const auto& l : lines_of(text)) {
      helps += l.rfind("# HELP ", 0) == 0;
      types += l.rfind("# TYPE ", 0) == 0;
    }
    CHECK(helps == types);
    CHECK(helps > 20);
  }

  SECTION("JSON: stable keys, info first") {
    auto j = to_json(s);
    CHECK(j.begin().key() == "info");
    CHECK(j["totals"]["connections_total"] == 6);
    CHECK(j["totals"]["ends"]["closed"] == 3);
    CHECK(j["totals"]["ends"]["server_timeout"] == 1);
    CHECK(j["totals"]["maxconn_pauses"] == 7);
    CHECK(j["frontends"][0]["routes"]["none"] == 1);
    CHECK(j["servers"][1]["state"] == "DRAIN");
    CHECK(j["servers"][1]["admin"] == "drain");
    CHECK(j["servers"][2]["healthy"] == false);
    CHECK(j["servers"][0]["check"]["outcome"] == "ok");
    CHECK(j["stick_table"]["capacity"] == 1000);
    CHECK(j["totals"]["inspect_errors"].contains("not_handshake_record"));
    CHECK_FALSE(j["totals"]["inspect_errors"].contains("none"));
  }

  SECTION("text: aligned tables without empty lines") {
    std::string t = render_text(s);
    CHECK(t.find("\n\n") == std::string::npos);
    auto lines = lines_of(t);
    CHECK(lines[0] == "# frontends");
    CHECK(lines[1].rfind("name   mode  current  total", 0) == 0);
    CHECK(lines[2].rfind("https  tls   1        5      150", 0) == 0);
    CHECK(t.find("node2  2    100     DRAIN  drain") != std::string::npos);
  }

  SECTION("HTML: a page with every name, escaped") {
    LbStats hostile = s;
    hostile.servers[0].name = "<script>&\"";
    std::string h = render_html(hostile, 7);
    CHECK(h.rfind("<!DOCTYPE html>", 0) == 0);
    CHECK(h.find("<meta http-equiv=\"refresh\" content=\"7\">") != std::string::npos);
    CHECK(h.find("<td>&lt;script&gt;&amp;&quot;</td>") != std::string::npos);
    CHECK(h.find("<script>") == std::string::npos);
    CHECK(h.find("<td>https</td>") != std::string::npos);
    CHECK(h.find("<td class=\"DOWN\">DOWN</td>") != std::string::npos);
  }
}

TEST_CASE("admin commands on a runtime") {
  Configs c = make_configs();
  Runtime rt(c.cluster, c.lb);
  AdminCommands admin(rt, ProcessInfo{});

  SECTION("set server changes the admin state and says what it was") {
    CHECK(admin.handle("set server node2 state drain") == "server node2: state drain (was ready)");
    CHECK(rt.servers()[1]->admin.load() == AdminState::Drain);
    CHECK_FALSE(rt.servers()[1]->usable_for_new());
    CHECK(rt.servers()[1]->usable_for_bound());
    CHECK(admin.handle("  set\tserver node2 state maint ") ==
          "server node2: state maint (was drain)");
    CHECK_FALSE(rt.servers()[1]->usable_for_bound());
    CHECK(admin.handle("set server node2 state ready") == "server node2: state ready (was maint)");
    CHECK(rt.servers()[1]->usable_for_new());
    CHECK(admin.handle("set server node9 state ready") == "error: no server named 'node9'");
    CHECK(admin.handle("set server node1 state up") ==
          "error: unknown state 'up' (expected ready, drain or maint)");
    CHECK(rt.servers()[0]->admin.load() == AdminState::Ready);
  }

  SECTION("show table and clear table") {
    auto now = StickTable::Clock::now();
    std::vector<uint8_t> id(32, 0x5a);
    rt.stick_table()->learn(*StickKey::session_id(id), 2, now);
    rt.stick_table()->learn(*StickKey::ticket(std::vector<uint8_t>(100, 1)), 0, now);
    std::string t = admin.handle("show table");
    auto lines = lines_of(t);
    REQUIRE(lines.size() == 3);
    CHECK(lines[0].rfind("# table: capacity 1000, entries 2, learned 2,", 0) == 0);
    std::string sid_hex;
    for (int i = 0; i < 32; ++i) sid_hex += "5a";
    bool found_sid = false, found_ticket = false;
    for (const auto& l : lines) {
      const std::string sid_prefix =
          "kind=session_id key=" + sid_hex + " server=node3 expires_in_ms=";
      if (l.rfind(sid_prefix, 0) == 0) {
        found_sid = true;
        long ms = std::stol(l.substr(sid_prefix.size()));
        CHECK(ms > 0);
        CHECK(ms <= 1800 * 1000);
      }
      // A ticket is keyed by its SHA-256: 64 hex digits.
      if (l.rfind("kind=ticket key=", 0) == 0 && l.find(" server=node1 ") == 16 + 64)
        found_ticket = true;
    }
    CHECK(found_sid);
    CHECK(found_ticket);
    auto j = nlohmann::json::parse(admin.handle("show table json"));
    CHECK(j["entries"] == 2);
    CHECK(j["list"].size() == 2);
    CHECK(j["truncated"] == false);
    CHECK(admin.handle("clear table") == "cleared 2 entries");
    CHECK(rt.stick_table()->stats().entries == 0);
    CHECK(lines_of(admin.handle("show table")).size() == 1);
  }

  SECTION("show info and show stat") {
    auto info = lines_of(admin.handle("show info"));
    CHECK(info[0] == "Name: edgepin-lb");
    CHECK(has_line(admin.handle("show info"), "Threads: 2"));
    CHECK(has_line(admin.handle("show info"), "Servers: 3"));
    CHECK(has_line(admin.handle("show info"), "Maxconn: " + std::to_string(c.lb.maxconn)));
    CHECK(has_line(admin.handle("show info"), "MaxconnPauses: 0"));
    CHECK(nlohmann::json::parse(admin.handle("show info json"))["threads"] == 2);
    CHECK(admin.handle("show stat").rfind("# frontends\n", 0) == 0);
    CHECK(nlohmann::json::parse(admin.handle("show stat json"))["servers"].size() == 3);
  }

  SECTION("refused commands") {
    CHECK(admin.handle("nope") == "error: unknown command 'nope'; try 'help'");
    CHECK(admin.handle("show stat csv") == "error: unknown option 'csv' (only 'json')");
    CHECK(admin.handle("show \x01\x7f") ==
          "error: unknown command 'show ?"
          "?'; try 'help'");
    CHECK(admin.handle(std::string(100, 'a')) ==
          "error: unknown command '" + std::string(64, 'a') + "...'; try 'help'");
    CHECK(admin.handle("help").find("set server NAME state ready|drain|maint") !=
          std::string::npos);
    CHECK(admin.handle("help").find("\n\n") == std::string::npos);
  }

  SECTION("show sessions waits a bounded time for workers that do not answer") {
    // The workers' loops are not running: the answer still comes, and says so.
    auto t0 = std::chrono::steady_clock::now();
    std::string s = admin.handle("show sessions");
    auto waited = std::chrono::steady_clock::now() - t0;
    CHECK(waited >= kWorkerAnswerTimeout - std::chrono::milliseconds(50));
    CHECK(waited < kWorkerAnswerTimeout + std::chrono::seconds(2));
    CHECK(s.find("# worker 0 did not answer within 2000 ms") != std::string::npos);
    CHECK(s.find("# worker 1 did not answer within 2000 ms") != std::string::npos);
  }
}

TEST_CASE("show sessions on running workers") {
  Configs c = make_configs();
  Runtime rt(c.cluster, c.lb);
  REQUIRE(rt.start().empty());
  AdminCommands admin(rt, ProcessInfo{});
  std::string s = admin.handle("show sessions");
  CHECK(lines_of(s) == std::vector<std::string>{"# sessions: 0", "worker 0: 0", "worker 1: 0",
                                                "frontend https: 0", "frontend http: 0",
                                                "server node1: 0 current, 0 queued",
                                                "server node2: 0 current, 0 queued",
                                                "server node3: 0 current, 0 queued", "# list"});
  auto j = nlohmann::json::parse(admin.handle("show sessions json"));
  CHECK(j["unanswered_workers"].empty());
  CHECK(j["list"].empty());
  rt.stop(std::chrono::milliseconds(0));
}
