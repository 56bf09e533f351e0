#pragma once
// A small HTTP/1.1 server for an operator's stats pages, shared by the lb's
// stats listener (lb/stats_server.*) and the node-proxy's metrics listener
// (node-proxy/metrics.*), on an event loop thread of its own so that a slow
// scraper never delays a client:
//   GET / or /stats                    HTML
//   GET /stats;json, /stats?json,
//       or / and /stats with
//       "Accept: application/json"     JSON
//   GET /metrics                       Prometheus text, format 0.0.4
// HEAD is answered like GET without the body; other methods get 405, other
// paths 404, malformed requests the parser's status (400, 414, 431..).
// One request per connection (Connection: close): the request head is
// bounded (kMaxStatsRequestHead) and must arrive, and the answer be
// written, within the connection deadline. At most max_clients connections
// at once; more are closed at accept.
#include <sys/time.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "event_loop.h"
#include "net_address.h"

namespace edgepin {

inline constexpr size_t kMaxStatsRequestHead = 8 * 1024;
inline constexpr size_t kMaxStatsRequestFields = 64;
inline constexpr timeval kStatsConnectionDeadline{10, 0};
inline constexpr size_t kMaxStatsClients = 64;

// What a stats request asks for, from its target and Accept field.
enum class StatsPage : uint8_t { Html, Json, Metrics, NotFound };
// `target` is the request target (origin-form path and query); `accept` the
// Accept field's value (empty when absent).
StatsPage stats_page_for(std::string_view target, std::string_view accept);

// `s` with the five HTML-special characters escaped, for the stats pages
// (names and addresses come from the config and from clients).
std::string html_escape(std::string_view s);

class StatsHttpServer {
 public:
  // Each renders one page's body, on the server's thread, per request.
  struct Pages {
    std::function<std::string()> html;
    std::function<std::string()> json;
    std::function<std::string()> metrics;  // Prometheus text exposition
  };

  struct Options {
    SocketAddress bind;
    timeval deadline = kStatsConnectionDeadline;
    size_t max_clients = kMaxStatsClients;
    std::string name = "stats";         // starts error messages
    std::string thread_name = "stats";  // the event loop thread's name
  };

  StatsHttpServer(Options options, Pages pages);
  ~StatsHttpServer();  // stops
  StatsHttpServer(const StatsHttpServer&) = delete;
  StatsHttpServer& operator=(const StatsHttpServer&) = delete;

  // Binds and starts the thread. Returns an empty string or the error
  // ("stats: bind 127.0.0.1:8888: Address already in use").
  std::string start();
  // Closes the listener and every connection and joins the thread.
  void stop();
  // The bound port (the configured one, or the kernel's choice for port 0).
  uint16_t port() const { return port_; }

 private:
  struct Connection;
  static void accept_cb(evconnlistener*, evutil_socket_t fd, sockaddr*, int, void* arg);
  static void read_cb(bufferevent* bev, void* arg);
  static void write_cb(bufferevent* bev, void* arg);
  static void event_cb(bufferevent* bev, short what, void* arg);
  static void deadline_cb(evutil_socket_t, short, void* arg);

  void on_accept(evutil_socket_t fd);
  void on_read(Connection& c);
  // Writes the whole response and stops reading; write_cb closes once it
  // is flushed. `send_body` false answers a HEAD.
  void respond(Connection& c, int status, std::string_view content_type, std::string body,
               const std::string& extra_headers = {}, bool send_body = true);
  void close(Connection& c);

  Options options_;
  Pages pages_;
  EventLoopThread loop_;
  ListenerPtr listener_;
  std::unordered_map<Connection*, std::unique_ptr<Connection>> connections_;
  uint16_t port_ = 0;
};

}  // namespace edgepin
