#pragma once
// One client connection through the lb, from accept to close. It owns both
// sockets and moves through explicit states:
//
//   Inspecting ──▶ Connecting ──▶ Relaying ──▶ (destroyed)
//       │  (tcp frontends skip      │ retry / redispatch
//       │   inspection)             ▼
//       └──────────────────────▶ closed with a reason
//
// Inspecting reads the ClientHello without consuming it (bounded buffer,
// deadline); Connecting opens the server connection (deadline, retries,
// redispatch); Relaying sends the PROXY header and then relays bytes both
// ways while watching the server's flight to learn the stick table. Every
// session ends with one log line and one counter per termination reason.
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "event_ptr.h"
#include "frontend.h"
#include "net_address.h"
#include "relay.h"
#include "router.h"
#include "server_queue.h"
#include "tls_hello.h"

namespace edgepin::lb {

class Worker;

// What `show sessions` lists about one session (a copy, taken on the
// session's worker thread).
struct SessionInfo {
  const Frontend* frontend = nullptr;
  SocketAddress client;
  const ServerState* server = nullptr;  // null until routed
  uint8_t state = 0;                    // a Session::State
  RouteReason route = RouteReason::None;
  std::chrono::milliseconds age{0};
  uint64_t bytes_in = 0;   // relayed so far, client -> server
  uint64_t bytes_out = 0;  // relayed so far, server -> client
};

class Session final : private ServerQueue::Waiter {
 public:
  enum class State : uint8_t { Inspecting, Queued, Connecting, Relaying, Closed };

  Session(Worker& worker, const Frontend& frontend, evutil_socket_t fd, const SocketAddress& client,
          const SocketAddress& local);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void start();
  ServerState* server() const { return server_state_; }
  // Ends the session now (worker shutdown past the grace period).
  void abort(End why);

  State state() const { return state_; }
  const Frontend& frontend() const { return frontend_; }
  SessionInfo info() const;

 private:
  static void client_read_cb(bufferevent* bev, void* arg);
  static void client_event_cb(bufferevent* bev, short what, void* arg);
  static void server_event_cb(bufferevent* bev, short what, void* arg);
  static void timer_cb(evutil_socket_t, short, void* arg);

  void on_client_bytes();
  void on_inspect_failed(End why, const std::string& detail);
  void route_and_connect(const tls::ClientHello* hello);
  void connect_to(ServerState* server);
  void open_connection();
  // Holds a slot on the server it queued for (ServerQueue::Waiter).
  void on_slot() override;
  void on_connect_failed(int error);
  void on_connected();
  void observe_server(std::span<const uint8_t> bytes);
  void finish(End why, int error = 0);
  void arm_timer(const timeval& tv);

  Worker& worker_;
  const Frontend& frontend_;
  SocketAddress client_addr_;
  SocketAddress local_addr_;
  std::chrono::steady_clock::time_point started_;
  State state_ = State::Inspecting;

  BufferEventPtr client_;
  BufferEventPtr server_;
  EventPtr timer_;  // inspect or connect deadline
  std::unique_ptr<Relay> relay_;

  tls::ClientHelloParser hello_parser_;
  size_t inspected_ = 0;  // client bytes fed to the parser so far
  bool hello_ok_ = false;
  std::string inspect_error_;  // for the log line
  std::unique_ptr<tls::ServerFlightParser> flight_;
  bool learned_server_hello_ = false;
  uint16_t tls_version_ = 0;  // selected by the server, else offered max

  ServerState* server_state_ = nullptr;  // the server being tried or used
  bool holds_slot_ = false;              // counted in server_state_->active
  RouteDecision route_;
  int attempts_ = 0;  // connects tried
  int error_ = 0;     // errno of the last failure
};

// "inspecting", "queued", "connecting", "relaying", "closed".
const char* to_string(Session::State s);

}  // namespace edgepin::lb
