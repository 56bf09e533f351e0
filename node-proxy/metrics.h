#pragma once
// The node-proxy's Prometheus metrics and its metrics listener.
//
// The listener (node-proxy.json "metrics", or "stats.metrics_bind") is the
// shared operator HTTP server of common/io/stats_http_server.h: /metrics in
// Prometheus text format, and the same stats page as the stats path on the
// client listeners (HTML at / and /stats, JSON at /stats;json). Unlike the
// stats path it needs no PROXY header, so a Prometheus server or the local
// demo scrape it directly; keep it on a private address.
//
// Names follow Prometheus conventions: prefix edgepin_node_, counters end
// in _total (added by the writer), units in the name (_bytes, _seconds),
// one family per quantity with the outcome as a label.
#include <functional>
#include <memory>
#include <string>

#include "net_address.h"
#include "prometheus.h"
#include "stats.h"
#include "stats_http_server.h"

namespace edgepin::nodeproxy {

// The exposition: the summed snapshot of `source`, plus the per-outcome
// arrays (request ends, parser errors, PROXY header errors) read from each
// worker's counters. Safe from any thread (counters are atomics).
prometheus::Exposition node_exposition(const StatsSource& source);
std::string render_prometheus(const StatsSource& source);

// A metrics listener on `bind` reading `source()` for each request (on the
// listener's own thread). Call start() on the result.
std::unique_ptr<StatsHttpServer> make_metrics_server(const SocketAddress& bind,
                                                     std::function<StatsSource()> source);

}  // namespace edgepin::nodeproxy
