#pragma once
// The lb's state as numbers, and the three ways it is shown: an HTML page
// for people, JSON for tools, and Prometheus text for scrapers (plus the
// plain-text table of the admin socket's `show stat`).
//
// collect_stats() reads the shared state from any thread: per-worker
// counters (summed here), server atomics and the stick table's own locked
// statistics (docs/architecture.md, "Ownership and shared state"). Each
// number is read once; numbers that change meanwhile may disagree by the
// few connections in flight, as in HAProxy's stats.
#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "frontend.h"
#include "health.h"
#include "prometheus.h"
#include "router.h"
#include "server.h"
#include "stick_table.h"
#include "time_util.h"  // format_duration, for the pages
#include "tls_hello.h"

namespace edgepin::lb {

class Runtime;

// A server as an operator sees it, from its admin state and its health;
// the most restrictive wins: MAINT, then DOWN, then DRAIN, then UP.
enum class ServerStatus : uint8_t { Up, Down, Drain, Maint };
const char* to_string(ServerStatus s);  // "UP", "DOWN", "DRAIN", "MAINT"
ServerStatus status_of(bool healthy, AdminState admin);

// When the process started serving (for uptime and the start time metric).
struct ProcessInfo {
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::chrono::system_clock::time_point started_wall = std::chrono::system_clock::now();
  pid_t pid = 0;
};

struct FrontendStats {
  std::string name;
  std::string mode;  // "tls" or "tcp"
  std::vector<std::string> binds;
  uint64_t current = 0;    // sessions open now
  uint64_t total = 0;      // sessions accepted
  uint64_t bytes_in = 0;   // client -> server, of ended sessions
  uint64_t bytes_out = 0;  // server -> client, of ended sessions
  std::array<uint64_t, kRouteReasonCount> routes{};
  std::array<uint64_t, kEndCount> ends{};
};

struct ServerStats {
  std::string name;
  uint16_t tag = 0;
  uint32_t weight = 0;
  ServerStatus status = ServerStatus::Up;
  bool healthy = true;
  AdminState admin = AdminState::Ready;
  CheckOutcome check = CheckOutcome::None;  // last health check
  uint16_t check_detail = 0;                // HTTP status, TLS version or alert
  uint32_t check_latency_us = 0;
  uint64_t current = 0;  // connections relayed or connecting
  uint64_t queued = 0;   // clients waiting for a slot
  uint64_t total = 0;    // connections established
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
};

struct StickTableStats {
  bool enabled = false;
  size_t capacity = 0;
  StickTable::Stats counters;  // entries is the fill
};

struct LbStats {
  std::string version;
  pid_t pid = 0;
  int64_t uptime_s = 0;
  int64_t start_time_unix = 0;
  size_t threads = 0;

  // Sums over frontends.
  uint64_t current = 0;
  uint64_t total = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  std::array<uint64_t, kRouteReasonCount> routes{};
  std::array<uint64_t, kEndCount> ends{};
  // Sums over workers.
  uint64_t connect_retries = 0;
  uint64_t redispatches = 0;
  uint64_t maxconn = 0;         // the configured global limit
  uint64_t maxconn_pauses = 0;  // times a worker stopped accepting at it
  std::array<uint64_t, tls::kHelloErrorCount> inspect_errors{};

  std::vector<FrontendStats> frontends;
  std::vector<ServerStats> servers;
  StickTableStats stick_table;
};

// Reads `runtime` (started or not; safe from any thread while its workers
// exist).
LbStats collect_stats(const Runtime& runtime, const ProcessInfo& process);

// A complete HTML page that refreshes itself every `refresh_s` seconds.
std::string render_html(const LbStats& s, int refresh_s = 5);
// JSON with stable keys, in this order: info, totals, frontends[],
// servers[], stick_table.
nlohmann::ordered_json to_json(const LbStats& s);
// The edgepin_lb_* metric families; render_prometheus() is its render().
// ok() is false only on a programming error (a bad name, a duplicate
// sample), which the unit tests rule out.
prometheus::Exposition lb_exposition(const LbStats& s);
// Prometheus text exposition, format 0.0.4.
std::string render_prometheus(const LbStats& s);
// Aligned plain-text tables for `show stat` (no empty line inside).
std::string render_text(const LbStats& s);

}  // namespace edgepin::lb
