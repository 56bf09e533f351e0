#pragma once
// The HTTP/1.1 client codec: one client connection of the node-proxy after
// PROXY and TLS. It reads request heads (http1::RequestParser), hands each
// request to an Exchange (exchange.h), one at a time (pipelined bytes wait
// in the input buffer), and writes back what the exchange answers, in
// HTTP/1.1. It owns the client transport, its deadlines, keep-alive and the
// lingering close; everything about where a request goes and what comes
// back is the exchange's.
//
// States:
//        ┌──────────── next request (keep-alive) ◀────────────┐
//        ▼                                                     │
//   ReadingHead ──head──▶ Exchange ──(finish)──────────────────┤
//     │                     │   101 ▶ Tunnel ──▶ Closed         │ close
//     └── idle, client gone, drain ───────────────────────▶ Closing ──▶ Closed
//
//   ReadingHead   parsing the next request head under a deadline:
//                 `client_header` from the first byte (from accept for the
//                 first request; 408 if some bytes came, silent close
//                 otherwise), `client_idle` between requests (silent close).
//   Exchange      an exchange runs (its phase is shown by describe()); the
//                 request body is read on its demand (read_body), the
//                 client's read timeout applies while a body is due, the
//                 write timeout always (a client that stops reading its
//                 response is dropped after `client`).
//   Tunnel        after a 101 to an Upgrade request the exchange's
//                 UpgradeTunnel owns the client transport.
//   Closing       the last response is flushed, then the write side is shut
//                 (TLS: close_notify) and input is read and dropped for a
//                 short while (lingering close), so that a client still
//                 sending does not get a reset that destroys the response.
//   Closed        transports freed; on_closed runs from the event loop
//                 (never from inside a call into this object).
//
// HTTP/1.1 specifics it applies to what the exchange sends: interim (1xx)
// responses go to HTTP/1.1 clients only; a chunked response to an HTTP/1.0
// client is de-chunked and close-delimited; a close-delimited response
// closes the connection after it; "Connection: close" once the request or
// the proxy (shutdown, client EOF) ends the connection.
//
// shutdown() finishes the request in progress (its response says
// "Connection: close") and closes; an idle connection closes at once; a
// tunnel runs on until it ends or the owner destroys the connection.
#include <sys/time.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "client_codec.h"
#include "client_info.h"
#include "event_ptr.h"
#include "http1.h"
#include "worker_context.h"

namespace edgepin::nodeproxy {

class Exchange;

// How long a closing connection keeps draining input after its last response.
inline constexpr std::chrono::milliseconds kLingerTimeout{2000};

class H1Connection final : public ClientConnection, public ClientStream {
 public:
  enum class State : uint8_t { ReadingHead, Exchange, Tunnel, Closing, Closed };

  // Takes the connected client bufferevent (plain or OpenSSL, handshake
  // done). `on_closed` is called once, from the event loop, after the
  // connection closed; the owner destroys the object there (or later).
  H1Connection(WorkerContext& ctx, BufferEventPtr client, ClientInfo info,
               std::function<void(ClientConnection*)> on_closed);
  ~H1Connection() override;
  H1Connection(const H1Connection&) = delete;
  H1Connection& operator=(const H1Connection&) = delete;

  // ClientConnection.
  void start() override;
  void shutdown() override;
  ConnectionInfo describe() const override;
  size_t buffered_bytes() const override;
  bool uses_pool(const UpstreamPool* pool) const override;
  uint64_t requests() const override { return requests_; }

  State state() const { return state_; }
  const ClientInfo& info() const { return info_; }

  // ClientStream (called by the exchange).
  const ClientInfo& client() const override { return info_; }
  BodyRead read_body(evbuffer* dst, size_t room) override;
  bool body_done() const override { return body_done_; }
  bool body_abandoned() const override;
  void set_body_flow(bool on) override { set_client_reading(on); }
  size_t send_interim(const http1::ResponseHead& head) override;
  ResponseStart start_response(const http1::ResponseHead& head, const http1::BodyFraming& framing,
                               bool must_close, std::span<const http1::Field> extra) override;
  evbuffer* response_sink() override;
  size_t response_room() const override;
  LocalSent send_local(int status, std::string_view content_type, std::string_view body, bool close,
                       std::span<const http1::Field> extra) override;
  BufferEventPtr take_for_tunnel(const http1::ResponseHead& head, size_t& head_bytes) override;
  void finish(bool close) override;
  void abort(bool response_started) override;
  void wake() override { advance(); }
  bool closing_soon() const override { return draining_ || client_eof_; }

 private:
  enum class TimerKind : uint8_t { None, Header, Idle, Linger };

  static void client_read_cb(bufferevent* bev, void* arg);
  static void client_write_cb(bufferevent* bev, void* arg);
  static void client_event_cb(bufferevent* bev, short what, void* arg);
  static void timer_cb(evutil_socket_t, short, void* arg);
  static void destroy_cb(evutil_socket_t, short, void* arg);

  // Runs the state machine until it waits for an event. Re-entrant calls
  // (a callback fired from inside a libevent call) only ask for another round.
  void advance();
  void step_read_head();
  void step_closing();
  void on_head(size_t consumed);
  // The exchange for the request in progress, made on first need (a
  // request that fails before its head is complete is logged too).
  Exchange& current();
  void on_client_timeout(bool writing);

  void next_request();
  void begin_closing();
  void start_linger();
  void finish_connection();

  void arm_timer(TimerKind kind, std::chrono::milliseconds after);
  void cancel_timer();
  void set_client_reading(bool on);
  // Entering or leaving a request body: client read timeout and input cap.
  void set_reading_body(bool on);

  WorkerContext& ctx_;
  const config::NodeProxyConfig& cfg_;
  ClientInfo info_;
  std::function<void(ClientConnection*)> on_closed_;

  BufferEventPtr client_;
  EventPtr timer_;
  EventPtr destroy_ev_;

  State state_ = State::ReadingHead;
  TimerKind timer_kind_ = TimerKind::None;
  http1::Limits request_limits_;
  size_t head_input_cap_;  // client input between bodies: one head
  size_t body_input_cap_;  // client input while a body streams
  timeval client_timeout_{};
  http1::RequestParser request_parser_;
  std::optional<http1::BodyDecoder> request_body_;
  std::unique_ptr<Exchange> exchange_;
  // The last exchange that ended: freed when the next one starts or with
  // the connection, never while a call into it may be on the stack.
  std::unique_ptr<Exchange> finished_;

  // The request in progress.
  std::chrono::steady_clock::time_point started_;
  bool http10_ = false;
  bool keep_alive_ = false;  // the client allows another request after this one
  bool head_method_ = false;
  bool body_done_ = true;

  bool head_started_ = false;  // a byte of the current request head arrived
  bool client_eof_ = false;
  bool client_reading_ = false;
  bool draining_ = false;  // shutdown() was called
  bool lingering_ = false;
  bool in_advance_ = false;
  bool again_ = false;
  uint64_t requests_ = 0;
  const std::chrono::steady_clock::time_point accepted_ = std::chrono::steady_clock::now();
};

const char* to_string(H1Connection::State s);

}  // namespace edgepin::nodeproxy
