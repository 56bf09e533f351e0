#pragma once
// One attempt of one request on one upstream connection (the local Tomcat,
// or a peer node-proxy over the peer link): the upstream side of an
// Exchange (exchange.h). It
//   - takes an idle connection from the worker's UpstreamPool or opens a
//     new one (connect_timeout; with TLS the handshake is part of it);
//   - writes the request head and the body bytes the exchange gives it;
//   - parses the response head (http1::ResponseParser) and moves the body
//     to the client's sink, as received or de-chunked (data only);
//   - bounds upstream silence by `response_timeout` while a response is due;
//   - at the end gives the connection back to the pool only if both
//     messages were complete, keep-alive, and nothing follows the response:
//     an upstream that sends bytes beyond the end of its response (a second
//     response, garbage) is closed, never reused, since those bytes would
//     be taken for the answer to the next request on it.
// It decides nothing about retries, errors or the client: its libevent
// callbacks only record what happened and wake the exchange's codec
// (ClientStream::wake), whose loop runs Exchange::step(), which reads the
// recorded facts. Lives on the worker's loop; not thread-safe.
#include <sys/time.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "event_ptr.h"
#include "http1.h"

namespace edgepin::nodeproxy {

class ClientStream;
class UpstreamPool;

// Response heads may be larger than what clients are allowed (Set-Cookie,
// CSP): at least this much, or the configured request head limit if larger.
inline constexpr size_t kMinResponseHeadBytes = 32 * 1024;

class UpstreamRequest {
 public:
  using Clock = std::chrono::steady_clock;

  UpstreamRequest(UpstreamPool& pool, const http1::Limits& response_limits, ClientStream& waker);
  ~UpstreamRequest();
  UpstreamRequest(const UpstreamRequest&) = delete;
  UpstreamRequest& operator=(const UpstreamRequest&) = delete;

  enum class Start : uint8_t {
    Ready,       // an idle pooled connection: send() at once
    Connecting,  // a new connection: wait for connect_state()
    Failed,      // no socket at all: error() says why
  };
  // `fresh`: never take a pooled connection (the retry after one died).
  Start start(bool fresh);
  bool reused() const { return reused_; }

  enum class ConnectState : uint8_t { Pending, Connected, Failed, TimedOut };
  ConnectState connect_state() const { return connect_; }
  int error() const { return error_; }                         // errno of a failure
  const std::string& tls_error() const { return tls_error_; }  // TLS handshake failure
  std::optional<Clock::time_point> connected_at() const { return connected_at_; }

  // Writes the request head, then the bytes of `staged` (moved), and starts
  // reading the response.
  void send(std::string_view head, evbuffer* staged);
  // Where further request body bytes go.
  evbuffer* request_sink() const;
  // True while the response is due: upstream silence is bounded by
  // response_timeout (writes always are).
  void set_waiting(bool waiting);
  // True once if the response timeout fired since the last call.
  bool take_timeout();
  // Back-pressure on the response.
  void set_reading(bool on);

  struct HeadStep {
    enum class Kind : uint8_t {
      NeedMore,   // wait for bytes
      Head,       // head() is complete, `consumed` bytes long
      Gone,       // closed or reset before any byte of this head
      Truncated,  // closed in the middle of the head
      Invalid,    // `error`
    };
    Kind kind = Kind::NeedMore;
    http1::Error error = http1::Error::None;
    size_t consumed = 0;
  };
  HeadStep parse_head();
  const http1::ResponseHead& head() const { return parser_.head(); }
  // Any byte of a response arrived on this connection.
  bool any_response_bytes() const { return response_bytes_; }
  // An interim (1xx) head was relayed: drops it, a final head follows.
  void skip_head(size_t consumed);
  // The final head was relayed: drops it and decodes the body by `framing`.
  void begin_body(size_t consumed, const http1::BodyFraming& framing);

  struct BodyStep {
    http1::Error error = http1::Error::None;
    bool done = false;  // the body is complete
  };
  // Moves response body bytes to `dst`: at most `room` bytes of data, with
  // their chunked framing unless `data_only`.
  BodyStep move_body(evbuffer* dst, size_t room, bool data_only);
  enum class BodyEnd : uint8_t { Open, Clean, Cut };
  // After move_body: the upstream closed and every byte was moved. Clean
  // when that ends the body (close-delimited); a reset never does.
  BodyEnd body_end();
  int socket_error() const { return socket_error_; }

  // The exchange is over: with `keep_alive` (both messages complete and
  // keep-alive) the connection goes back to the pool, unless the upstream
  // closed it or said more than its response; otherwise it is closed.
  // Returns true when bytes beyond the response made it unusable.
  bool release(bool keep_alive);
  // The connection, for a tunnel after a 101 (the head already consumed).
  BufferEventPtr take();
  // Drops `n` bytes of input (the 101 head before a tunnel).
  void drain(size_t n);
  size_t buffered_bytes() const;

 private:
  static void read_cb(bufferevent* bev, void* arg);
  static void write_cb(bufferevent* bev, void* arg);
  static void event_cb(bufferevent* bev, short what, void* arg);

  UpstreamPool& pool_;
  ClientStream& waker_;
  BufferEventPtr bev_;
  http1::Limits limits_;
  size_t input_cap_;
  timeval response_timeout_{};
  http1::ResponseParser parser_;
  std::optional<http1::BodyDecoder> body_;
  ConnectState connect_ = ConnectState::Pending;
  std::optional<Clock::time_point> connected_at_;
  int error_ = 0;
  std::string tls_error_;
  bool reused_ = false;
  bool sending_ = false;  // send() ran: events are about the exchange
  bool timed_out_ = false;
  bool eof_ = false;
  int socket_error_ = 0;
  bool reading_ = false;
  bool response_bytes_ = false;
};

}  // namespace edgepin::nodeproxy
