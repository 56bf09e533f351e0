#include "stats.h"

#include <nlohmann/json.hpp>

#include <utility>
#include <vector>

#include "edgepin/version.h"
#include "stats_http_server.h"
#include "time_util.h"
#include "tls_context.h"

namespace edgepin::nodeproxy {
namespace {

constexpr const char* kClassNames[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};

// One counter as both renderings show it: its key in the JSON object of its
// section and its row label on the HTML page. Each section lists its
// counters once (below), so the two renderings cannot drift apart.
struct Field {
  const char* key;
  const char* label;
  uint64_t value;
};
using Fields = std::vector<Field>;

Fields connection_fields(const StatsSnapshot& s) {
  return {
      {"accepted", "accepted", s.connections_accepted},
      {"active", "active", s.connections_active},
      {"refused_untrusted", "refused (untrusted source)", s.connections_refused_untrusted},
      {"refused_limit", "refused (max_connections)", s.connections_refused_limit},
      {"proxy_header_errors", "PROXY header errors", s.proxy_header_errors},
      {"proxy_header_timeouts", "PROXY header timeouts", s.proxy_header_timeouts},
      {"proxy_header_closed", "PROXY header closed early", s.proxy_header_closed},
  };
}

Fields upstream_fields(const StatsSnapshot& s) {
  return {
      {"connects", "connects", s.upstream_connects},
      {"reuses", "reuses", s.upstream_reuses},
      {"connect_errors", "connect errors", s.upstream_connect_errors},
      {"timeouts", "timeouts", s.upstream_timeouts},
  };
}

Fields tls_fields(const StatsSnapshot& s) {
  return {
      {"handshakes_full", "full handshakes", s.tls_handshakes_full},
      {"handshakes_resumed", "resumed handshakes", s.tls_handshakes_resumed},
      {"handshake_errors", "handshake errors", s.tls_handshake_errors},
      {"handshake_timeouts", "handshake timeouts", s.tls_handshake_timeouts},
      {"handshake_closed", "closed mid-handshake", s.tls_handshake_closed},
  };
}

Fields peer_link_fields(const StatsSnapshot& s) {
  return {
      {"connections_accepted", "connections accepted", s.peer_connections_accepted},
      {"connections_refused", "connections refused", s.peer_connections_refused},
      {"connects", "connects", s.peer_connects},
      {"reuses", "reuses", s.peer_reuses},
      {"connect_errors", "connect errors", s.peer_connect_errors},
      {"timeouts", "timeouts", s.peer_timeouts},
      {"retries", "retries", s.peer_retries},
  };
}

nlohmann::ordered_json fields_json(const Fields& fields) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const Field& f : fields) j[f.key] = f.value;
  return j;
}

nlohmann::ordered_json to_json(const StatsSnapshot& s) {
  nlohmann::ordered_json j;
  j["node"] = s.node_name;
  j["tag"] = s.node_tag;
  j["cluster"] = s.cluster_name;
  j["version"] = s.version;
  j["uptime_s"] = s.uptime_s;
  j["workers"] = s.workers;
  j["draining"] = s.draining;
  j["tomcat"] = {{"address", s.upstream}, {"up", s.tomcat_up}};
  j["connections"] = fields_json(connection_fields(s));
  nlohmann::ordered_json by_class;
  for (size_t i = 0; i < s.responses_by_class.size(); ++i)
    by_class[kClassNames[i]] = s.responses_by_class[i];
  j["requests"] = {
      {"total", s.requests},    {"responses", by_class},    {"errors", s.request_errors},
      {"bytes_in", s.bytes_in}, {"bytes_out", s.bytes_out},
  };
  j["upstream"] = fields_json(upstream_fields(s));
  nlohmann::ordered_json tls = fields_json(tls_fields(s));
  if (s.tls) {
    tls["cached_sessions"] = s.tls_cached_sessions;
    tls["tickets"] = s.tickets_enabled;
    tls["ticket_key_epoch"] = s.ticket_key_epoch;
    tls["ticket_keys"] = s.ticket_keys;
  }
  j["tls"] = tls;
  nlohmann::ordered_json outcomes;
  for (size_t i = 0; i < s.affinity.size(); ++i)
    outcomes[affinity::to_string(static_cast<affinity::Outcome>(i))] = s.affinity[i];
  j["affinity"] = {
      {"mode", s.affinity_mode},
      {"outcomes", outcomes},
      {"cookies_issued", s.affinity_cookies_issued},
      {"relay_fallbacks", s.relay_fallbacks},
  };
  nlohmann::ordered_json failovers;
  for (size_t i = 0; i < s.failovers.size(); ++i)
    failovers[to_string(static_cast<FailoverReason>(i))] = s.failovers[i];
  j["failover"] = {
      {"to_peer", failovers},
      {"impossible", s.failovers_impossible},
      {"tomcat_passive_downs", s.tomcat_passive_downs},
      {"peer_passive_downs", s.peer_passive_downs},
      {"upstream_extra_bytes", s.upstream_extra_bytes},
      {"peer_extra_bytes", s.peer_extra_bytes},
  };
  nlohmann::ordered_json nodes = nlohmann::ordered_json::array();
  for (const PeerHealthSnapshot& p : s.peers)
    nodes.push_back({{"name", p.name}, {"address", p.address}, {"up", p.up}});
  nlohmann::ordered_json peer_link = fields_json(peer_link_fields(s));
  peer_link["peers"] = nodes;
  j["peer_link"] = peer_link;
  return j;
}

void row(std::string& html, std::string_view name, const std::string& value) {
  html += "<tr><th>" + html_escape(name) + "</th><td>" + html_escape(value) + "</td></tr>\n";
}
void row(std::string& html, std::string_view name, uint64_t value) {
  row(html, name, std::to_string(value));
}
void rows(std::string& html, const Fields& fields) {
  for (const Field& f : fields) row(html, f.label, f.value);
}

std::string up_badge(bool up) {
  return up ? "<b class=\"up\">UP</b>" : "<b class=\"down\">DOWN</b>";
}

std::string to_html(const StatsSnapshot& s) {
  std::string h;
  h += "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>edgepin node-proxy " +
       html_escape(s.node_name) +
       "</"
       "title>\n<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;"
       "margin-bottom:1em}"
       "th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left}th{background:#f4f4f4}"
       ".up{color:#080}.down{color:#b00}</style></head><body>\n";
  h += "<h1>edgepin node-proxy: " + html_escape(s.node_name) + "</h1>\n";
  h += "<p>cluster " + html_escape(s.cluster_name) + ", tag " + std::to_string(s.node_tag) +
       ", version " + html_escape(s.version) + ", up " + format_duration(s.uptime_s) + ", " +
       std::to_string(s.workers) + " workers</p>\n";
  h += std::string("<p>Tomcat ") + html_escape(s.upstream) + ": " + up_badge(s.tomcat_up) +
       (s.draining ? " &mdash; <b class=\"down\">draining</b>" : "") + "</p>\n";

  h += "<h2>Connections</h2><table>\n";
  rows(h, connection_fields(s));
  h += "</table>\n<h2>Requests</h2><table>\n";
  row(h, "requests", s.requests);
  for (size_t i = 1; i < s.responses_by_class.size(); ++i)
    row(h, kClassNames[i], s.responses_by_class[i]);
  row(h, "other status", s.responses_by_class[0]);
  row(h, "rejected requests", s.request_errors);
  row(h, "bytes from clients", s.bytes_in);
  row(h, "bytes to clients", s.bytes_out);
  h += "</table>\n<h2>Tomcat connections</h2><table>\n";
  rows(h, upstream_fields(s));
  h += "</table>\n<h2>TLS</h2><table>\n";
  rows(h, tls_fields(s));
  if (s.tls) {
    row(h, "cached sessions", std::to_string(s.tls_cached_sessions));
    row(h, "tickets", s.tickets_enabled ? "on" : "off");
    row(h, "ticket key epoch", s.ticket_key_epoch);
    row(h, "ticket keys held", s.ticket_keys);
  }
  h += "</table>\n<h2>Affinity (" + html_escape(s.affinity_mode) + ")</h2><table>\n";
  for (size_t i = 0; i < s.affinity.size(); ++i)
    row(h, affinity::to_string(static_cast<affinity::Outcome>(i)), s.affinity[i]);
  row(h, "cookies issued", s.affinity_cookies_issued);
  row(h, "relays served locally (owner unreachable)", s.relay_fallbacks);
  h += "</table>\n<h2>Failover (Tomcat failed: served by a peer)</h2><table>\n";
  for (size_t i = 0; i < s.failovers.size(); ++i)
    row(h, to_string(static_cast<FailoverReason>(i)), s.failovers[i]);
  row(h, "no peer could take it", s.failovers_impossible);
  row(h, "Tomcat marked down by the data path", s.tomcat_passive_downs);
  row(h, "peers marked down by the data path", s.peer_passive_downs);
  row(h, "upstream connections closed: bytes after a response",
      s.upstream_extra_bytes + s.peer_extra_bytes);
  h += "</table>\n<h2>Peer link</h2><table>\n";
  rows(h, peer_link_fields(s));
  for (const PeerHealthSnapshot& p : s.peers)
    h += "<tr><th>" + html_escape(p.name) + " " + html_escape(p.address) + "</th><td>" +
         up_badge(p.up) + "</td></tr>\n";
  h += "</table>\n</body></html>\n";
  return h;
}

}  // namespace

LocalResponse render_health(const NodeState& node, HealthAudience audience) {
  LocalResponse r;
  const bool up = node.tomcat_up.load(std::memory_order_relaxed);
  const bool draining =
      audience == HealthAudience::Balancer && node.draining.load(std::memory_order_relaxed);
  if (up && !draining) {
    r.status = 200;
    r.body = "UP\n";
  } else {
    r.status = 503;
    r.body = !up ? "DOWN: tomcat not responding\n" : "DOWN: draining\n";
  }
  return r;
}

StatsSnapshot collect_stats(const StatsSource& src) {
  StatsSnapshot s;
  s.node_name = src.node_name;
  s.node_tag = src.node_tag;
  s.cluster_name = src.cluster_name;
  s.version = kVersion;
  s.upstream = src.upstream;
  s.workers = src.workers.size();
  if (src.node) {
    s.uptime_s = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() -
                                                                  src.node->started)
                     .count();
    s.tomcat_up = src.node->tomcat_up.load(std::memory_order_relaxed);
    s.draining = src.node->draining.load(std::memory_order_relaxed);
  }
  for (const NodeCounters* c : src.workers) {
    s.connections_accepted += c->connections_accepted.get();
    s.connections_active += c->connections_active.get();
    s.connections_refused_untrusted += c->connections_refused_untrusted.get();
    s.connections_refused_limit += c->connections_refused_limit.get();
    s.proxy_header_errors += c->proxy_header_errors.get();
    s.proxy_header_timeouts += c->proxy_header_timeouts.get();
    s.proxy_header_closed += c->proxy_header_closed.get();
    s.requests += c->requests.get();
    for (size_t i = 0; i < s.responses_by_class.size(); ++i)
      s.responses_by_class[i] += c->responses_by_class[i].get();
    for (const Counter& e : c->request_errors) s.request_errors += e.get();
    s.bytes_in += c->bytes_in.get();
    s.bytes_out += c->bytes_out.get();
    s.upstream_connects += c->upstream_connects.get();
    s.upstream_reuses += c->upstream_reuses.get();
    s.upstream_connect_errors += c->upstream_connect_errors.get();
    s.upstream_timeouts += c->upstream_timeouts.get();
    s.tls_handshakes_full += c->tls_handshakes_full.get();
    s.tls_handshakes_resumed += c->tls_handshakes_resumed.get();
    s.tls_handshake_errors += c->tls_handshake_errors.get();
    s.tls_handshake_timeouts += c->tls_handshake_timeouts.get();
    s.tls_handshake_closed += c->tls_handshake_closed.get();
    for (size_t i = 0; i < s.affinity.size(); ++i) s.affinity[i] += c->affinity[i].get();
    s.affinity_cookies_issued += c->affinity_cookies_issued.get();
    s.relay_fallbacks += c->relay_fallbacks.get();
    s.peer_connections_accepted += c->peer_connections_accepted.get();
    s.peer_connections_refused += c->peer_connections_refused.get();
    s.peer_connects += c->peer_connects.get();
    s.peer_reuses += c->peer_reuses.get();
    s.peer_connect_errors += c->peer_connect_errors.get();
    s.peer_timeouts += c->peer_timeouts.get();
    s.peer_retries += c->peer_retries.get();
    for (size_t i = 0; i < s.failovers.size(); ++i) s.failovers[i] += c->failovers[i].get();
    s.failovers_impossible += c->failovers_impossible.get();
    s.tomcat_passive_downs += c->tomcat_passive_downs.get();
    s.peer_passive_downs += c->peer_passive_downs.get();
    s.upstream_extra_bytes += c->upstream_extra_bytes.get();
    s.peer_extra_bytes += c->peer_extra_bytes.get();
  }
  switch (src.affinity_mode) {
    case config::AffinityMode::Cookie:
      s.affinity_mode = "cookie";
      break;
    case config::AffinityMode::JvmRoute:
      s.affinity_mode = "jvmroute";
      break;
    case config::AffinityMode::None:
      s.affinity_mode = "none";
      break;
  }
  if (src.node) {
    std::lock_guard lock(src.node->peers_mu);  // a reload may replace the list
    for (const auto& p : src.node->peers)
      s.peers.push_back(PeerHealthSnapshot{p->node->name,
                                           p->node->endpoint(config::NodePort::Peer).to_string(),
                                           p->up.load(std::memory_order_relaxed)});
  }
  if (src.tls) {
    s.tls = true;
    s.tls_cached_sessions = src.tls->cached_sessions();
    s.tickets_enabled = src.tls->tickets_enabled();
    s.ticket_key_epoch = src.tls->ticket_keys()->current_epoch();
    s.ticket_keys = src.tls->ticket_keys()->size();
  }
  return s;
}

LocalResponse render_stats(const StatsSnapshot& stats, bool json) {
  LocalResponse r;
  r.status = 200;
  if (json) {
    r.content_type = "application/json";
    r.body = to_json(stats).dump(2) + "\n";
  } else {
    r.content_type = "text/html; charset=utf-8";
    r.body = to_html(stats);
  }
  return r;
}

}  // namespace edgepin::nodeproxy
