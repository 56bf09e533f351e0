#pragma once
// The lb's stats listener (lb.json "stats"): the HTML page, JSON and
// Prometheus metrics of lb/stats.*, served by the shared operator HTTP
// server (common/io/stats_http_server.h says which path gives what and how
// requests are bounded).
#include <cstdint>
#include <functional>
#include <string>

#include "stats.h"
#include "stats_http_server.h"

namespace edgepin::lb {

// The routing and limits live in common/; these names stay for callers.
using edgepin::kMaxStatsClients;
using edgepin::kMaxStatsRequestFields;
using edgepin::kMaxStatsRequestHead;
using edgepin::kStatsConnectionDeadline;
using edgepin::stats_page_for;
using edgepin::StatsPage;

class StatsServer {
 public:
  // Called on the stats thread for each page served.
  using Source = std::function<LbStats()>;

  struct Options {
    SocketAddress bind;
    timeval deadline = kStatsConnectionDeadline;
    size_t max_clients = kMaxStatsClients;
  };

  StatsServer(Options options, Source source);
  StatsServer(const StatsServer&) = delete;
  StatsServer& operator=(const StatsServer&) = delete;

  // Binds and starts the thread. Returns an empty string or the error
  // ("stats: bind 127.0.0.1:8888: Address already in use").
  std::string start() { return server_.start(); }
  // Closes the listener and every connection and joins the thread.
  void stop() { server_.stop(); }
  // The bound port (the configured one, or the kernel's choice for port 0).
  uint16_t port() const { return server_.port(); }

 private:
  StatsHttpServer server_;
};

}  // namespace edgepin::lb
