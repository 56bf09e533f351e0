#include "metrics.h"

#include <chrono>
#include <cstdint>
#include <utility>

#include "affinity.h"
#include "counters.h"
#include "http1.h"
#include "proxy_protocol.h"

namespace edgepin::nodeproxy {
namespace {

constexpr const char* kClassLabels[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};

uint64_t sum(const StatsSource& src, const Counter NodeCounters::*member) {
  uint64_t n = 0;
  for (const NodeCounters* c : src.workers) n += (c->*member).get();
  return n;
}

template <size_t N>
std::array<uint64_t, N> sum(const StatsSource& src,
                            const std::array<Counter, N> NodeCounters::*member) {
  std::array<uint64_t, N> out{};
  for (const NodeCounters* c : src.workers)
    for (size_t i = 0; i < N; ++i) out[i] += (c->*member)[i].get();
  return out;
}

}  // namespace

prometheus::Exposition node_exposition(const StatsSource& src) {
  using prometheus::MetricType;
  const auto C = MetricType::Counter;
  const auto G = MetricType::Gauge;
  const StatsSnapshot s = collect_stats(src);
  prometheus::Exposition e;

  e.declare("edgepin_node_info", G, "Build and identity information; the value is always 1.");
  e.add("edgepin_node_info",
        {{"version", s.version},
         {"node", s.node_name},
         {"cluster", s.cluster_name},
         {"tag", std::to_string(s.node_tag)}},
        uint64_t{1});
  e.declare("edgepin_node_uptime_seconds", G, "Seconds since the node-proxy started.");
  e.add("edgepin_node_uptime_seconds", {}, static_cast<uint64_t>(s.uptime_s));
  e.declare("edgepin_node_workers", G, "Worker threads.");
  e.add("edgepin_node_workers", {}, static_cast<uint64_t>(s.workers));
  e.declare("edgepin_node_tomcat_up", G, "1 while the node's own check of Tomcat succeeds.");
  e.add("edgepin_node_tomcat_up", {}, uint64_t{s.tomcat_up});
  e.declare("edgepin_node_draining", G, "1 while the node drains (its health check answers 503).");
  e.add("edgepin_node_draining", {}, uint64_t{s.draining});

  e.declare("edgepin_node_connections", C, "Client connections accepted.");
  e.add("edgepin_node_connections", {}, s.connections_accepted);
  e.declare("edgepin_node_current_connections", G, "Client connections open now.");
  e.add("edgepin_node_current_connections", {}, s.connections_active);
  e.declare("edgepin_node_connections_refused", C,
            "Client connections refused at accept, by reason.");
  e.add("edgepin_node_connections_refused", {{"reason", "untrusted_source"}},
        s.connections_refused_untrusted);
  e.add("edgepin_node_connections_refused", {{"reason", "max_connections"}},
        s.connections_refused_limit);

  e.declare("edgepin_node_proxy_header_failures", C,
            "Connections closed before a valid PROXY header, by reason.");
  const auto proxy_errors = sum(src, &NodeCounters::proxy_errors);
  for (size_t i = 0; i < proxy_errors.size(); ++i) {
    const auto err = static_cast<proxy::Error>(i);
    if (err == proxy::Error::None) continue;
    e.add("edgepin_node_proxy_header_failures", {{"reason", proxy::to_string(err)}},
          proxy_errors[i]);
  }
  e.add("edgepin_node_proxy_header_failures", {{"reason", "timeout"}}, s.proxy_header_timeouts);
  e.add("edgepin_node_proxy_header_failures", {{"reason", "closed"}}, s.proxy_header_closed);

  e.declare("edgepin_node_tls_handshakes", C, "Completed TLS handshakes, full or resumed.");
  e.add("edgepin_node_tls_handshakes", {{"kind", "full"}}, s.tls_handshakes_full);
  e.add("edgepin_node_tls_handshakes", {{"kind", "resumed"}}, s.tls_handshakes_resumed);
  e.declare("edgepin_node_tls_handshake_failures", C,
            "TLS handshakes that did not complete, by reason.");
  e.add("edgepin_node_tls_handshake_failures", {{"reason", "error"}}, s.tls_handshake_errors);
  e.add("edgepin_node_tls_handshake_failures", {{"reason", "timeout"}}, s.tls_handshake_timeouts);
  e.add("edgepin_node_tls_handshake_failures", {{"reason", "closed"}}, s.tls_handshake_closed);
  if (s.tls) {
    e.declare("edgepin_node_tls_cached_sessions", G,
              "TLS sessions in the server-side session cache.");
    e.add("edgepin_node_tls_cached_sessions", {}, static_cast<double>(s.tls_cached_sessions));
    e.declare("edgepin_node_tls_ticket_keys", G,
              "Session ticket keys held (current and in grace).");
    e.add("edgepin_node_tls_ticket_keys", {}, static_cast<uint64_t>(s.ticket_keys));
    e.declare("edgepin_node_tls_ticket_key_epoch", G, "Epoch of the current session ticket key.");
    e.add("edgepin_node_tls_ticket_key_epoch", {}, static_cast<uint64_t>(s.ticket_key_epoch));
  }

  e.declare("edgepin_node_requests", C, "HTTP requests received (heads parsed).");
  e.add("edgepin_node_requests", {}, s.requests);
  e.declare("edgepin_node_responses", C, "HTTP responses sent to clients, by status class.");
  for (size_t i = 1; i < s.responses_by_class.size(); ++i)
    e.add("edgepin_node_responses", {{"class", kClassLabels[i]}}, s.responses_by_class[i]);
  e.add("edgepin_node_responses", {{"class", kClassLabels[0]}}, s.responses_by_class[0]);
  e.declare("edgepin_node_request_errors", C, "Requests refused by the HTTP/1.1 parser, by error.");
  const auto request_errors = sum(src, &NodeCounters::request_errors);
  for (size_t i = 0; i < request_errors.size(); ++i) {
    const auto err = static_cast<http1::Error>(i);
    if (err == http1::Error::None) continue;
    e.add("edgepin_node_request_errors", {{"error", http1::to_string(err)}}, request_errors[i]);
  }
  e.declare("edgepin_node_request_ends", C, "Requests by how they ended (the access log's end=).");
  const auto ends = sum(src, &NodeCounters::request_ends);
  for (size_t i = 0; i < ends.size(); ++i)
    e.add("edgepin_node_request_ends", {{"end", to_string(static_cast<RequestEnd>(i))}}, ends[i]);
  e.declare("edgepin_node_local_responses", C,
            "Requests answered by the node-proxy itself (health, stats).");
  e.add("edgepin_node_local_responses", {}, sum(src, &NodeCounters::requests_local));
  e.declare("edgepin_node_tunnels", C, "Upgraded (101) tunnels opened.");
  e.add("edgepin_node_tunnels", {}, sum(src, &NodeCounters::tunnels));
  e.declare("edgepin_node_idle_timeouts", C, "Keep-alive client connections closed while idle.");
  e.add("edgepin_node_idle_timeouts", {}, sum(src, &NodeCounters::http_idle_timeouts));
  e.declare("edgepin_node_received_bytes", C, "Bytes received from clients.");
  e.add("edgepin_node_received_bytes", {}, s.bytes_in);
  e.declare("edgepin_node_sent_bytes", C, "Bytes sent to clients.");
  e.add("edgepin_node_sent_bytes", {}, s.bytes_out);

  e.declare("edgepin_node_affinity_requests", C, "Requests by the affinity layer's decision.");
  for (size_t i = 0; i < s.affinity.size(); ++i)
    e.add("edgepin_node_affinity_requests",
          {{"outcome", affinity::to_string(static_cast<affinity::Outcome>(i))}}, s.affinity[i]);
  e.declare("edgepin_node_affinity_cookies_issued", C, "Affinity cookies set on responses.");
  e.add("edgepin_node_affinity_cookies_issued", {}, s.affinity_cookies_issued);
  e.declare("edgepin_node_peer_up", G, "1 while the peer link's check of that node succeeds.");
  for (const PeerHealthSnapshot& p : s.peers)
    e.add("edgepin_node_peer_up", {{"peer", p.name}}, uint64_t{p.up});
  e.declare("edgepin_node_peer_connections", C,
            "Peer link connections from other nodes, by result.");
  e.add("edgepin_node_peer_connections", {{"result", "accepted"}}, s.peer_connections_accepted);
  e.add("edgepin_node_peer_connections", {{"result", "refused"}}, s.peer_connections_refused);
  e.declare("edgepin_node_peer_connects", C, "Peer link connections opened to other nodes.");
  e.add("edgepin_node_peer_connects", {}, s.peer_connects);
  e.declare("edgepin_node_peer_reuses", C, "Idle pooled peer link connections used again.");
  e.add("edgepin_node_peer_reuses", {}, s.peer_reuses);
  e.declare("edgepin_node_peer_connect_errors", C, "Peer link connects refused or timed out.");
  e.add("edgepin_node_peer_connect_errors", {}, s.peer_connect_errors);
  e.declare("edgepin_node_peer_timeouts", C,
            "Relayed requests whose owner did not answer in time.");
  e.add("edgepin_node_peer_timeouts", {}, s.peer_timeouts);
  e.declare("edgepin_node_peer_retries", C,
            "Relayed requests sent again after a reused connection died.");
  e.add("edgepin_node_peer_retries", {}, s.peer_retries);
  e.declare("edgepin_node_relay_fallbacks", C,
            "Relays whose peer connection failed before sending: served here instead.");
  e.add("edgepin_node_relay_fallbacks", {}, s.relay_fallbacks);

  e.declare("edgepin_node_upstream_connects", C, "New connections opened to Tomcat.");
  e.add("edgepin_node_upstream_connects", {}, s.upstream_connects);
  e.declare("edgepin_node_upstream_reuses", C, "Idle pooled Tomcat connections used again.");
  e.add("edgepin_node_upstream_reuses", {}, s.upstream_reuses);
  e.declare("edgepin_node_upstream_connect_errors", C, "Connects to Tomcat refused or timed out.");
  e.add("edgepin_node_upstream_connect_errors", {}, s.upstream_connect_errors);
  e.declare("edgepin_node_upstream_timeouts", C, "Tomcat responses that did not come in time.");
  e.add("edgepin_node_upstream_timeouts", {}, s.upstream_timeouts);
  e.declare("edgepin_node_upstream_retries", C,
            "Requests sent again after a reused connection died.");
  e.add("edgepin_node_upstream_retries", {}, sum(src, &NodeCounters::upstream_retries));
  e.declare("edgepin_node_failovers", C,
            "Requests served by a peer because the local Tomcat failed or is down, by reason.");
  for (size_t i = 0; i < s.failovers.size(); ++i)
    e.add("edgepin_node_failovers", {{"reason", to_string(static_cast<FailoverReason>(i))}},
          s.failovers[i]);
  e.declare("edgepin_node_failovers_impossible", C,
            "Requests Tomcat failed that no healthy peer could take.");
  e.add("edgepin_node_failovers_impossible", {}, s.failovers_impossible);
  e.declare("edgepin_node_passive_downs", C,
            "Targets marked down by the data path (a failed connect), before any check.");
  e.add("edgepin_node_passive_downs", {{"target", "tomcat"}}, s.tomcat_passive_downs);
  e.add("edgepin_node_passive_downs", {{"target", "peer"}}, s.peer_passive_downs);
  e.declare("edgepin_node_upstream_extra_bytes", C,
            "Upstream connections closed because bytes followed a response.");
  e.add("edgepin_node_upstream_extra_bytes", {{"upstream", "tomcat"}}, s.upstream_extra_bytes);
  e.add("edgepin_node_upstream_extra_bytes", {{"upstream", "peer"}}, s.peer_extra_bytes);
  return e;
}

std::string render_prometheus(const StatsSource& source) {
  return node_exposition(source).render();
}

std::unique_ptr<StatsHttpServer> make_metrics_server(const SocketAddress& bind,
                                                     std::function<StatsSource()> source) {
  return std::make_unique<StatsHttpServer>(
      StatsHttpServer::Options{.bind = bind, .name = "metrics", .thread_name = "np-metrics"},
      StatsHttpServer::Pages{
          .html = [source] { return render_stats(collect_stats(source()), false).body; },
          .json = [source] { return render_stats(collect_stats(source()), true).body; },
          .metrics = [source] { return render_prometheus(source()); },
      });
}

}  // namespace edgepin::nodeproxy
