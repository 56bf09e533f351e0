#pragma once
// One client connection of the node-proxy, after PROXY and TLS: HTTP/1.1
// requests in, answered in order, either by the proxy itself (health,
// stats, errors) or by the upstream (Tomcat through the worker's
// UpstreamPool), with bodies streamed under back-pressure both ways.
//
// States (one request at a time; pipelined bytes wait in the input buffer):
//
//        ┌──────────────────────── keep-alive ◀───────────────────────────┐
//        ▼                                                                 │
//   ReadingHead ──head──▶ BufferingBody ──▶ Connecting ──▶ Proxying ──done──┤
//     │  │  (a short body is read      │      ▲   │            │ 101       │
//     │  │   before anything is sent   │      └───┘ retry once ▼           │
//     │  │   upstream; Expect skips it)│                     Tunnel ──▶ Closed
//     │  └─ health / stats / error: answered at once ──────────────────────┘
//     │                                                       close ▼
//     └── idle or client gone ──────────────────────────────▶ Closing ──▶ Closed
//
//   ReadingHead   parsing the next request head (http1::RequestParser) under
//                 a deadline: `client_header` from the first byte (from
//                 accept for the first request; 408 if some bytes came,
//                 silent close otherwise), `client_idle` between requests
//                 (silent close).
//   BufferingBody reading a request body into a bounded side buffer
//                 (kPrebufferBytes) before choosing a connection, so that a
//                 body that is malformed in its first bytes, as every
//                 smuggling payload is, is answered 400/413 without any byte
//                 of the request reaching the upstream (HAProxy's
//                 http-buffer-request). Longer bodies are streamed from
//                 there on; a framing error later aborts the upstream
//                 connection mid-body (it never sees a complete request).
//   Connecting    waiting for an upstream connection: an idle pooled one at
//                 once, or a new one within connect_timeout. Refused: 502
//                 (503 when the health checker says the upstream is down);
//                 timed out: 504.
//   Proxying      the request head is written, the body streams
//                 client→upstream, the response head is parsed
//                 (http1::ResponseParser), 1xx are relayed, and the body
//                 streams upstream→client. response_timeout bounds upstream
//                 silence while a response is due: 504 before the response
//                 head went out, a cut connection after.
//   Tunnel        after a 101 to an Upgrade request: common/io/relay.h owns both
//                 sockets (timeouts.tunnel idle limit); the upstream
//                 connection never returns to the pool.
//   Closing       the last response is flushed, then the write side is shut
//                 (TLS: close_notify) and input is read and dropped for a
//                 short while (lingering close), so that a client still
//                 sending does not get a reset that destroys the response.
//   Closed        sockets freed; on_closed runs from the event loop (never
//                 from inside a call into this object).
//
// Decisions worth knowing:
//   - Expect: 100-continue is forwarded; the upstream's 100 (and any other
//     1xx) is relayed to HTTP/1.1 clients. The body is forwarded as it
//     arrives, whether or not a 100 came (RFC 9110 10.1.1 lets the client
//     send it anyway).
//   - Request bodies: the validated bytes are passed through as received
//     (chunk extensions and trailers included); the framing field is the
//     proxy's own (Content-Length from the parsed value or
//     "Transfer-Encoding: chunked").
//   - Responses: passed through the same way. A chunked response to an
//     HTTP/1.0 client is de-chunked and close-delimited; a close-delimited
//     response closes the client connection after it.
//   - Retry: a request sent on a *reused* pooled connection that closes or
//     resets before any byte of the response arrived is sent once more, on a
//     new connection, if its method is idempotent and no byte of its body
//     was written to the dead connection. Anything else gets its 502.
//   - A response that arrives before the request body was fully read (an
//     early 413 from Tomcat) is relayed with "Connection: close"; both
//     connections close after it.
//   - After an error answered before the response began (502, 503, 504),
//     the client connection stays open if its request was fully read;
//     parse errors, body errors and 408 always close it.
//   - Access log: one line per request (info; with the access log off,
//     failed requests still get theirs as a warning), key=value:
//       http client= listener= tls= resumed= sni= method= path= status=
//            bytes_in= bytes_out= upstream= reused= connect_ms= upstream_ms=
//            total_ms= end= [retried=1] [error="..."]
//     path is the target as received, %-escaped outside visible ASCII and
//     cut at kLogTargetMax; upstream_ms runs from the request head written
//     to the response head received (the upstream's think time); end is
//     the RequestEnd (counters.h). Passing health checks are counted, not
//     logged (HAProxy's monitor-uri).
//   - Affinity (node-proxy/affinity.h, DESIGN.md mechanism 3): route()
//     calls affinity::decide() for every proxied request. Local, no or bad
//     cookie, unknown or down owner: the local Tomcat. Relay: the owner's
//     peer link, with the client's facts in X-Forwarded-* and the marker
//     X-Edgepin-Relayed (header_policy.h). A relay whose peer connection
//     fails before any byte was sent is served locally instead (counted as
//     owner_down and relay_fallbacks): the owner is as good as down. On the
//     peer listener (ClientInfo::peer_node set) every request is served
//     locally: one hop at most. When a locally served response starts a
//     session (Set-Cookie of the session cookie) and the request had no
//     valid affinity cookie for this node, the response gets the affinity
//     cookie too (cookie mode). The access log adds affinity=<outcome>,
//     relayed_from=<node> on the peer listener and cookie=issued.
//   - shutdown() finishes the request in progress (its response says
//     "Connection: close") and closes; an idle connection closes at once; a
//     tunnel runs on until it ends or the owner destroys the connection.
#include <sys/time.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "affinity.h"
#include "client_info.h"
#include "counters.h"
#include "event_ptr.h"
#include "http1.h"
#include "relay.h"
#include "worker_context.h"

namespace edgepin::nodeproxy {

// Bytes queued towards one side before the proxy stops reading the other.
inline constexpr size_t kHighWatermark = 64 * 1024;
// Queued bytes below which reading the other side resumes.
inline constexpr size_t kLowWatermark = 16 * 1024;
// Request body bytes read before the upstream is chosen (see BufferingBody).
inline constexpr size_t kPrebufferBytes = 64 * 1024;
// Response heads may be larger than what clients are allowed (Set-Cookie,
// CSP): at least this much, or the configured request head limit if larger.
inline constexpr size_t kMinResponseHeadBytes = 32 * 1024;
// How long a closing connection keeps draining input after its last response.
inline constexpr std::chrono::milliseconds kLingerTimeout{2000};
// Longest request target written to the access log (longer ones are cut).
inline constexpr size_t kLogTargetMax = 256;

// Where a request goes: the worker's Tomcat pool, or (affinity relay) the
// worker's pool to the owner node's peer listener. Both are UpstreamPools
// and the same forwarding code serves both; a peer is an upstream with TLS.
struct Destination {
  UpstreamPool* pool = nullptr;
  std::string name;         // for the log: "tomcat", or the owner's node name
  bool known_down = false;  // its health check fails: a refused connect is 503
  std::string address;      // for the log
  bool peer = false;        // the peer link (relayed out)
};

// One line of the admin socket's `show sessions`.
struct ConnectionInfo {
  ClientInfo client;
  const char* state = "";
  uint64_t requests = 0;  // finished on this connection
  std::chrono::milliseconds age{0};
  std::string request;      // "METHOD target" in progress, empty when idle
  std::string destination;  // where it went: "tomcat" or the owner node
};

class HttpConnection {
 public:
  enum class State : uint8_t {
    ReadingHead,
    BufferingBody,
    Connecting,
    Proxying,
    Tunnel,
    Closing,
    Closed,
  };

  // Takes the connected client bufferevent (plain or OpenSSL, handshake
  // done). `on_closed` is called once, from the event loop, after the
  // connection closed; the owner destroys the object there (or later).
  HttpConnection(WorkerContext& ctx, BufferEventPtr client, ClientInfo info,
                 std::function<void(HttpConnection*)> on_closed);
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // Starts serving, including bytes already in the client's input buffer.
  void start();
  // Graceful close: finishes the current request (its response carries
  // "Connection: close"), then closes; closes an idle connection at once.
  void shutdown();

  State state() const { return state_; }
  const ClientInfo& info() const { return info_; }
  // Requests finished on this connection (each logged once).
  uint64_t requests() const { return requests_; }
  // Bytes this connection holds in its buffers now (both bufferevents'
  // input and output, the body pre-buffer); bounded by a few watermarks.
  size_t buffered_bytes() const;
  ConnectionInfo describe() const;
  // The pool the current (or last) exchange uses, null before the first
  // request is routed. A worker frees a pool a reload retired only when no
  // connection returns it here (Worker::sweep_retired).
  const UpstreamPool* destination_pool() const { return ex_.dest.pool; }

 private:
  enum class TimerKind : uint8_t { None, Header, Idle, Linger };
  enum class ResponsePhase : uint8_t { Head, Body, Done };

  // Everything about the request in progress; reset between requests.
  struct Exchange {
    std::chrono::steady_clock::time_point started;
    std::string method;
    std::string target;  // for the log, already sanitised and bounded
    bool http10 = false;
    bool keep_alive = false;  // the client allows another request after this one
    bool expect_continue = false;
    bool upgrade = false;
    bool body_done = false;  // request body fully read from the client
    uint64_t body_sent = 0;  // body bytes written towards the upstream
    uint64_t bytes_in = 0;   // request bytes read from the client
    uint64_t bytes_out = 0;  // response bytes written to the client
    Destination dest;
    std::string upstream_head;  // kept until the response starts: a retry resends it
    // Affinity: set by route() for proxied requests.
    bool routed = false;
    affinity::Outcome affinity = affinity::Outcome::Disabled;
    bool issue_cookie = false;  // add our cookie if the response starts a session
    bool cookie_issued = false;
    std::string fallback_head;  // relayed out: the head for the local Tomcat
    // On the peer listener: the client the relaying node served.
    std::optional<ClientInfo> relayed;
    int attempts = 0;
    bool reused = false;
    bool retried = false;
    std::optional<std::chrono::steady_clock::time_point> connect_started, sent, response_head;
    std::optional<std::chrono::steady_clock::time_point> connected;
    // Response.
    ResponsePhase phase = ResponsePhase::Head;
    bool response_bytes = false;    // any byte of a response arrived
    bool got_interim = false;       // a 1xx arrived
    bool response_started = false;  // a final head went to the client
    bool dechunk = false;           // strip chunked framing (HTTP/1.0 client)
    bool upstream_keep_alive = false;
    bool close_after = false;
    int status = 0;
    std::string error;   // detail for the log
    bool quiet = false;  // not logged unless it failed (health checks)
  };

  static void client_read_cb(bufferevent* bev, void* arg);
  static void client_write_cb(bufferevent* bev, void* arg);
  static void client_event_cb(bufferevent* bev, short what, void* arg);
  static void upstream_read_cb(bufferevent* bev, void* arg);
  static void upstream_write_cb(bufferevent* bev, void* arg);
  static void upstream_event_cb(bufferevent* bev, short what, void* arg);
  static void timer_cb(evutil_socket_t, short, void* arg);
  static void destroy_cb(evutil_socket_t, short, void* arg);

  // Runs the state machine until it waits for an event. Re-entrant calls
  // (a callback fired from inside a libevent call) only ask for another round.
  void advance();
  void step_read_head();
  void step_buffer_body();
  void step_connecting();
  void step_proxy();
  void step_closing();

  void on_request_head(size_t consumed);
  void on_request_error(http1::Error error);
  bool answer_builtin(const http1::RequestHead& head, size_t consumed);
  // Decides where the request goes (affinity) and records why in ex_.
  Destination route(const http1::RequestHead& head);
  Destination local_destination() const;
  // A relay could not reach its owner: serve the request here instead.
  void fall_back_locally(const std::string& why);
  std::string default_host(const ClientInfo& client) const;

  void start_upstream(bool fresh);
  void on_upstream_ready();
  void on_connect_failed(int error, bool timeout);
  void on_upstream_gone();
  void on_upstream_timeout();
  void on_client_timeout(bool writing);
  void on_body_error(http1::Error error);

  // Moves validated request body bytes from the client input to `dst`:
  // at most `room` body bytes (framing comes along). Returns the body
  // decoder's error, or None.
  http1::Error move_request_body(evbuffer* dst, size_t room);
  // Same for the response body, from the upstream input to the client.
  http1::Error move_response_body(evbuffer* dst, size_t room);
  void pump_response();
  bool on_response_head(size_t consumed);
  void start_tunnel(size_t consumed);
  void on_tunnel_end(const Relay::Result& result);
  void complete_proxied();

  // Answers the current request with a response the proxy makes, then goes
  // on with the next request or closes (`close`, or the client asked).
  void send_local(int status, std::string_view content_type, std::string_view body, bool close,
                  RequestEnd end);
  void send_error(int status, std::string_view detail, bool close, RequestEnd end);
  // The upstream failed before the response began: answer `status` (after a
  // response began: cut the connection).
  void fail_upstream(RequestEnd end, int status, std::string detail);
  // The request cannot be completed: log it and close now.
  void abort_request(RequestEnd end, std::string detail);

  void end_request(RequestEnd end);
  void next_request();
  void begin_closing();
  void start_linger();
  void finish_connection();

  void arm_timer(TimerKind kind, std::chrono::milliseconds after);
  void cancel_timer();
  void set_client_reading(bool on);
  // Entering or leaving a request body: client read timeout and input cap.
  void set_reading_body(bool on);
  void update_upstream_timeouts();
  void set_upstream_reading(bool on);

  WorkerContext& ctx_;
  const config::NodeProxyConfig& cfg_;
  ClientInfo info_;
  std::function<void(HttpConnection*)> on_closed_;

  BufferEventPtr client_;
  BufferEventPtr upstream_;
  std::unique_ptr<Relay> relay_;
  EventPtr timer_;
  EventPtr destroy_ev_;
  EvBufferPtr prebuffer_;

  State state_ = State::ReadingHead;
  TimerKind timer_kind_ = TimerKind::None;
  http1::Limits request_limits_;
  http1::Limits response_limits_;
  size_t head_input_cap_;      // client input between bodies: one head
  size_t body_input_cap_;      // client input while a body streams
  size_t upstream_input_cap_;  // a whole response head, or a watermark
  timeval client_timeout_{};
  timeval response_timeout_{};
  http1::RequestParser request_parser_;
  http1::ResponseParser response_parser_;
  std::optional<http1::BodyDecoder> request_body_;
  std::optional<http1::BodyDecoder> response_body_;
  Exchange ex_;

  bool head_started_ = false;  // a byte of the current request head arrived
  bool client_eof_ = false;
  bool client_reading_ = false;
  bool upstream_eof_ = false;
  int upstream_error_ = 0;
  std::string upstream_tls_error_;  // why a TLS upstream's handshake failed
  bool upstream_reading_ = false;
  bool draining_ = false;  // shutdown() was called
  bool lingering_ = false;
  bool in_advance_ = false;
  bool again_ = false;
  uint64_t requests_ = 0;
  const std::chrono::steady_clock::time_point accepted_ = std::chrono::steady_clock::now();
};

const char* to_string(HttpConnection::State s);

}  // namespace edgepin::nodeproxy
