#pragma once
// The client side of the node-proxy's request path, as two narrow
// interfaces (HAProxy's connection / stream split, Envoy's codec):
//
//   ClientConnection  what a Worker holds: one client connection after the
//                     PROXY header and TLS, speaking one protocol. HTTP/1.1
//                     is H1Connection (h1_connection.h); an HTTP/2 codec
//                     implements the same interface. It reads requests,
//                     creates one Exchange per request (per stream in
//                     HTTP/2) and writes back what the exchange answers.
//   ClientStream      what an Exchange (exchange.h) sees of its client: the
//                     request body coming in, the response going out, and
//                     the end of the exchange. HTTP/1.1 has one stream at a
//                     time per connection; HTTP/2 one per stream.
//
// Who calls whom (all on the worker's loop thread; nothing crosses threads):
//   Worker           -> ClientConnection  start, shutdown, describe, ...
//   codec            -> Exchange          on_head / reject / ... when a
//                                         request arrives, step() whenever
//                                         something moved (client readable
//                                         or writable, an upstream event)
//   Exchange         -> ClientStream      read_body, send_*, finish/abort
//   UpstreamRequest  -> ClientStream      wake() after recording an event:
//                                         the codec runs its loop, which
//                                         calls Exchange::step()
// Ownership: the worker owns the ClientConnection; the connection owns its
// exchanges; an exchange owns its UpstreamRequest and UpgradeTunnel. An
// exchange never outlives its connection, and the codec frees a finished
// exchange only from its own loop, never inside a call into the exchange.
//
// The request head an exchange gets is an http1::RequestHead (common/wire):
// an HTTP/2 codec builds one from its pseudo-headers (`:authority` as Host,
// joined cookies). Its framing field says how the request body reaches
// read_body(): bytes in HTTP/1.1 framing (Content-Length, or chunked), so
// the upstream side, always HTTP/1.1, forwards them as they are.
#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "client_info.h"
#include "event_ptr.h"
#include "http1.h"

namespace edgepin::nodeproxy {

class UpstreamPool;
struct WorkerContext;

// Bytes queued towards one side before the proxy stops reading the other.
inline constexpr size_t kHighWatermark = 64 * 1024;
// Queued bytes below which reading the other side resumes.
inline constexpr size_t kLowWatermark = 16 * 1024;

// One line of the admin socket's `show sessions`.
struct ConnectionInfo {
  ClientInfo client;
  const char* state = "";
  uint64_t requests = 0;  // finished on this connection
  std::chrono::milliseconds age{0};
  std::string request;      // "METHOD target" in progress, empty when idle
  std::string destination;  // where it went: "tomcat" or the owner node
};

class ClientConnection {
 public:
  virtual ~ClientConnection() = default;
  // Starts serving, including bytes already in the client's input buffer.
  virtual void start() = 0;
  // Graceful close: finishes the requests in progress (their responses say
  // the connection closes), then closes; an idle connection closes at once.
  virtual void shutdown() = 0;
  virtual ConnectionInfo describe() const = 0;
  // Bytes this connection holds in its buffers now (client, upstream,
  // pre-buffered bodies, tunnel); bounded by a few watermarks.
  virtual size_t buffered_bytes() const = 0;
  // True while an exchange of this connection holds `pool` (a reload frees
  // a retired pool only when no connection uses it: Worker::sweep_retired).
  virtual bool uses_pool(const UpstreamPool* pool) const = 0;
  // Requests finished on this connection (each logged once).
  virtual uint64_t requests() const = 0;
};

// Makes the codec for a client connection whose handshake is done (plain
// or OpenSSL bufferevent): HTTP/1.1 today; the place where ALPN "h2"
// will choose the HTTP/2 codec. `on_closed` runs once, from the event
// loop, after the connection closed; the owner destroys it there or later.
std::unique_ptr<ClientConnection> make_client_connection(
    WorkerContext& ctx, BufferEventPtr client, ClientInfo info,
    std::function<void(ClientConnection*)> on_closed);

class ClientStream {
 public:
  virtual ~ClientStream() = default;

  // The connection's facts (X-Forwarded-*, the log).
  virtual const ClientInfo& client() const = 0;

  // --- request body, in the framing of the head the exchange got ---
  struct BodyRead {
    http1::Error error = http1::Error::None;
    size_t bytes = 0;  // bytes appended to `dst` (framing included)
  };
  // Appends validated request body bytes to `dst`, at most `room` bytes of
  // data (framing comes along). Stops at the end of the body; reading the
  // client's body stops once it is complete.
  virtual BodyRead read_body(evbuffer* dst, size_t room) = 0;
  virtual bool body_done() const = 0;
  // The client went away before its body was complete: nothing more comes.
  virtual bool body_abandoned() const = 0;
  // Back-pressure on the request body: false stops reading the client
  // (the upstream is full), true resumes.
  virtual void set_body_flow(bool on) = 0;

  // --- response ---
  // Relays an interim (1xx) response. Returns the bytes written (0 when the
  // client cannot take one: an HTTP/1.0 client).
  virtual size_t send_interim(const http1::ResponseHead& head) = 0;
  struct ResponseStart {
    bool close = false;      // the connection closes after this response
    bool data_only = false;  // body bytes go to the sink without framing
    size_t head_bytes = 0;
  };
  // Writes the final response head for `head` (received from the upstream
  // with body framing `framing`), with `extra` fields (the affinity cookie).
  // `must_close`: the exchange cannot leave the connection in sync (its
  // request body was not read to its end).
  virtual ResponseStart start_response(const http1::ResponseHead& head,
                                       const http1::BodyFraming& framing, bool must_close,
                                       std::span<const http1::Field> extra) = 0;
  // Where response body bytes go (after start_response), and how many more
  // it takes now; 0: wait for the next step (the client drained).
  virtual evbuffer* response_sink() = 0;
  virtual size_t response_room() const = 0;
  struct LocalSent {
    bool close = false;
    size_t bytes = 0;
  };
  // A complete response the proxy makes (errors, health, stats), with
  // `extra` fields (the peer link's markers).
  virtual LocalSent send_local(int status, std::string_view content_type, std::string_view body,
                               bool close, std::span<const http1::Field> extra) = 0;
  // Hands the client's transport to a tunnel after writing the 101 head
  // for `head` (`head_bytes` set); null when the protocol cannot tunnel.
  virtual BufferEventPtr take_for_tunnel(const http1::ResponseHead& head, size_t& head_bytes) = 0;

  // --- the end of the exchange (exactly one of these, once) ---
  // The exchange is over and its response queued: the connection goes on
  // with the next request, or closes (`close`, or the protocol says so).
  virtual void finish(bool close) = 0;
  // The exchange cannot complete: the connection closes now; a response
  // that began is cut with a reset so that it never looks complete.
  virtual void abort(bool response_started) = 0;

  // Something happened that the exchange must look at (an upstream event):
  // the codec runs Exchange::step() from its loop. Callers touch nothing of
  // their own after it returns (the exchange may be over).
  virtual void wake() = 0;
  // The connection is closing gracefully (shutdown or client EOF).
  virtual bool closing_soon() const = 0;
};

}  // namespace edgepin::nodeproxy
