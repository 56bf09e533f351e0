#pragma once
// One request's life in the node-proxy, whatever the client's protocol (the
// "stream" of HAProxy, Envoy's filter chain + router): created by the
// client codec (client_codec.h) when a request arrives, it
//   - answers what the proxy answers itself (builtin_responder.h);
//   - routes the request (the single routing point): the local Tomcat, or
//     the owner node's node-proxy over the peer link (affinity.h;
//     docs/stickiness.md, "L7 affinity in the node-proxy"), never a second
//     hop for a request that was relayed here;
//   - hands it to an UpstreamRequest (upstream_request.h), streams the body
//     both ways under back-pressure, and retries or falls back when that is
//     safe (below);
//   - turns a 101 into an UpgradeTunnel (upgrade_tunnel.h);
//   - counts the outcome and writes the access-log line (log_request).
//
// Phases:
//   Head ──▶ BufferingBody ──▶ Connecting ──▶ Proxying ──▶ Done
//                                   ▲ retry / fallback │  101 ▶ Tunnel ▶ Done
//                                   └─────────────────┘
//   BufferingBody reads a request body into a bounded side buffer
//                 (kPrebufferBytes) before choosing a connection, so that a
//                 body malformed in its first bytes, as every smuggling
//                 payload is, is answered 400/413 without any byte of the
//                 request reaching the upstream (HAProxy's
//                 http-buffer-request). Longer bodies stream from there on;
//                 a framing error later aborts the upstream mid-body.
//   Connecting    an idle pooled connection at once, or a new one within
//                 connect_timeout. Refused: 502 (503 when the health checker
//                 says the upstream is down); timed out: 504.
//   Proxying      head and body out, response head parsed, 1xx relayed,
//                 body streamed. response_timeout bounds upstream silence
//                 while a response is due: 504 before the response head
//                 went out, a cut connection after.
//
// Decisions worth knowing:
//   - Expect: 100-continue is forwarded and the upstream's 1xx relayed (the
//     codec drops them for HTTP/1.0 clients). The body is forwarded as it
//     arrives, whether or not a 100 came (RFC 9110 10.1.1).
//   - Retry before the first byte (HAProxy's retry-on conn-failure
//     empty-response, then redispatch): a request sent on a *reused* pooled
//     connection that closes or resets before any response byte is sent
//     once more on a new connection; if the local Tomcat refuses, resets or
//     times out the connect, or a new connection closes before any response
//     byte, the request goes to a healthy peer over the peer link instead
//     (failover_link: the first healthy node after this one in cluster.json
//     order), marked X-Edgepin-Failover so that the peer's response records
//     the peer as the owner. Requests whose bytes may have reached Tomcat go
//     again only if their method is idempotent (RFC 9110 9.2.2) and their
//     whole body is still held (a body that fit in the pre-buffer is kept);
//     a request relayed here is never sent on (one hop). Anything else gets
//     its 502/503/504.
//   - Passive health: a failed connect to the local Tomcat marks it down at
//     once (NodeState::tomcat_up: the health endpoint says 503 from then
//     on, the checker needs `rise` successes to bring it back), and while
//     it is down requests go straight to a peer (tomcat_down). A peer that
//     refuses the peer link is marked down the same way.
//   - A response that arrives before the request body was fully read (an
//     early 413 from Tomcat) is relayed with "Connection: close".
//   - After an error answered before the response began (502, 503, 504),
//     the connection stays open if the request was fully read; parse
//     errors, body errors and 408 close it.
//   - Affinity: route() calls affinity::decide() for every proxied request.
//     Local, no or bad cookie, unknown or down owner: the local Tomcat.
//     Relay: the owner's peer link, with the client's facts in X-Forwarded-*
//     and the marker X-Edgepin-Relayed (header_policy.h). A relay whose
//     peer connection fails before any byte was sent is served locally
//     instead (owner_down, relay_fallbacks). On the peer listener
//     (ClientInfo::peer_node) every request is served locally: one hop at
//     most. When a locally served response starts a session (Set-Cookie of
//     the session cookie) and the request had no valid affinity cookie for
//     this node, the response gets the affinity cookie too (cookie mode).
//   - Access log: one line per request (info; with the access log off,
//     failed requests still get theirs as a warning), key=value:
//       http client= listener= tls= resumed= sni= method= path= status=
//            bytes_in= bytes_out= upstream= reused= connect_ms= upstream_ms=
//            [retried=1] [affinity=] [relayed_from=] [cookie=issued]
//            total_ms= end= [error="..."]
//     path is the target as received, %-escaped outside visible ASCII and
//     cut at kLogTargetMax; upstream_ms runs from the request head written
//     to the response head received; end is the RequestEnd (counters.h).
//     Passing health checks are counted, not logged (HAProxy's monitor-uri).
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "affinity.h"
#include "client_codec.h"
#include "client_info.h"
#include "counters.h"
#include "event_ptr.h"
#include "http1.h"
#include "upgrade_tunnel.h"
#include "upstream_request.h"
#include "worker_context.h"

namespace edgepin::nodeproxy {

// Request body bytes read before the upstream is chosen (BufferingBody).
inline constexpr size_t kPrebufferBytes = 64 * 1024;
// Longest request target written to the access log (longer ones are cut).
inline constexpr size_t kLogTargetMax = 256;
// Written by a node whose Tomcat failed on a request it sends to a peer
// (failover, beside X-Edgepin-Relayed): the peer becomes the owner and, in
// cookie mode, records itself in the response if its Tomcat starts a
// session. A client's copy is dropped like every X-Edgepin-* field.
inline constexpr std::string_view kFailoverField = "X-Edgepin-Failover";

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

class Exchange {
 public:
  using Clock = std::chrono::steady_clock;
  enum class Phase : uint8_t { Head, BufferingBody, Connecting, Proxying, Tunnel, Done };

  // `started`: the first byte of the request (or the accept, for the first
  // request of a connection). `cfg` is the configuration the connection
  // started with.
  Exchange(WorkerContext& ctx, const config::NodeProxyConfig& cfg, ClientStream& client,
           Clock::time_point started);
  ~Exchange();
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  // --- from the codec: how the request arrived ---
  // A complete head (`head_bytes` long on the wire). Its views are valid
  // during the call only.
  void on_head(const http1::RequestHead& head, size_t head_bytes);
  // The head was rejected by the parser (answered, the connection closes).
  void reject(http1::Error error);
  // The head did not arrive within client_header: 408.
  void head_timed_out();
  // The client closed in the middle of the head.
  void client_closed_mid_head();
  // The client's transport failed (reset, TLS error): `err` is the errno.
  void client_failed(int err);
  // The client did not send (`writing` false) or read in time.
  void client_timed_out(bool writing);

  // Runs the exchange until it waits for an event. Called by the codec's
  // loop whenever something moved.
  void step();

  Phase phase() const { return phase_; }
  bool done() const { return phase_ == Phase::Done; }
  const char* phase_name() const;
  // "METHOD target", empty before the head.
  std::string request_line() const;
  // Where it went ("tomcat" or the owner node), empty before routing.
  std::string destination() const;
  const UpstreamPool* pool() const { return dest_.pool; }
  size_t buffered_bytes() const;

 private:
  enum class ResponsePhase : uint8_t { Head, Body, Done };

  // Routing (the single routing point).
  Destination route(const http1::RequestHead& head);
  Destination local_destination() const;
  void fall_back_locally(const std::string& why);
  // Failover (issue 11): the healthy peer that serves this request in
  // place of the local Tomcat, or null (affinity off, no peer up, or the
  // request was relayed here: one hop at most).
  const WorkerContext::PeerLink* failover_link() const;
  // Every body byte sent so far is still held (a retry can resend it).
  bool body_held() const { return body_sent_ == 0 || body_copy_ != nullptr; }
  // Points the exchange at a peer instead of the local Tomcat; false when
  // none can take it. fail_over() also starts the attempt.
  bool switch_to_peer(FailoverReason why);
  bool fail_over(FailoverReason why);
  // Puts the kept copy of the body back into the pre-buffer (a new attempt).
  void restore_body();
  // Passive health: the data path saw the local Tomcat or a peer fail.
  void report_tomcat_failure(const std::string& why);
  void report_peer_failure(const std::string& why);
  std::string default_host(const ClientInfo& client) const;

  void step_buffer_body();
  void step_connecting();
  void step_proxy();
  void start_upstream(bool fresh);
  void on_upstream_ready();
  void on_connect_failed(int error, bool timeout);
  void on_upstream_gone();
  void on_upstream_timeout();
  void on_body_error(http1::Error error);
  void pump_response();
  bool on_response_head(size_t consumed);
  void start_tunnel(size_t consumed);
  void on_tunnel_end(const UpgradeTunnel::Outcome& outcome);
  void complete_proxied();
  void update_upstream_timeouts();

  // Answers with a response the proxy makes, then ends the exchange.
  void send_local(int status, std::string_view content_type, std::string_view body, bool close,
                  RequestEnd end);
  void send_error(int status, std::string_view detail, bool close, RequestEnd end);
  // The upstream failed before the response began: answer `status` (after
  // a response began: cut the connection).
  void fail_upstream(RequestEnd end, int status, std::string detail);
  // The request cannot be completed: log it and close the connection now.
  void abort_request(RequestEnd end, std::string detail);
  // Counts the outcome and logs the request; the exchange is Done.
  void end_request(RequestEnd end);
  // The access-log line (the one place that writes it).
  void log_request(RequestEnd end, Clock::time_point now) const;

  WorkerContext& ctx_;
  const config::NodeProxyConfig& cfg_;
  ClientStream& client_;
  Phase phase_ = Phase::Head;
  ResponsePhase response_phase_ = ResponsePhase::Head;

  // The request.
  Clock::time_point started_;
  std::string method_;
  std::string target_;  // for the log, already sanitised and bounded
  bool expect_continue_ = false;
  bool upgrade_ = false;
  uint64_t body_sent_ = 0;  // body bytes written towards the upstream
  uint64_t bytes_in_ = 0;   // request bytes read from the client
  uint64_t bytes_out_ = 0;  // response bytes written to the client
  EvBufferPtr prebuffer_;   // BufferingBody's side buffer, made on demand
  // A copy of the whole body, kept when it fit in the pre-buffer: a retry
  // on a new connection or on a peer resends it.
  EvBufferPtr body_copy_;

  // Routing.
  Destination dest_;
  std::string upstream_head_;  // kept until the response starts: a retry resends it
  bool routed_ = false;
  affinity::Outcome affinity_ = affinity::Outcome::Disabled;
  bool issue_cookie_ = false;  // add our cookie if the response starts a session
  bool cookie_issued_ = false;
  std::string fallback_head_;               // relayed out: the head for the local Tomcat
  std::optional<FailoverReason> failover_;  // sent to a peer in place of Tomcat
  // Relayed here and this Tomcat refused: the 503 says so to the relaying node.
  std::optional<FailoverReason> owner_unavailable_;
  // On the peer listener: the client the relaying node served.
  std::optional<ClientInfo> relayed_;

  // The upstream.
  std::optional<UpstreamRequest> up_;
  std::unique_ptr<UpgradeTunnel> tunnel_;
  int attempts_ = 0;
  bool reused_ = false;
  bool retried_ = false;  // the one retry on a new connection was used
  int retries_ = 0;       // for the log: attempts after a failure
  std::optional<Clock::time_point> connect_started_, connected_, sent_, response_head_;

  // The response.
  bool got_interim_ = false;       // a 1xx arrived
  bool response_started_ = false;  // a final head went to the client
  bool data_only_ = false;         // strip chunked framing (the codec asked)
  bool upstream_keep_alive_ = false;
  bool close_after_ = false;
  int status_ = 0;
  std::string error_;   // detail for the log
  bool quiet_ = false;  // not logged unless it failed (health checks)
};

}  // namespace edgepin::nodeproxy
