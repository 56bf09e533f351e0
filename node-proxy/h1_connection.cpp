#include "h1_connection.h"
#include "time_util.h"

#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "exchange.h"
#include "header_policy.h"

namespace edgepin::nodeproxy {

namespace {

using Clock = std::chrono::steady_clock;
using http1::BodyFraming;

std::span<const uint8_t> first_segment(evbuffer* buf) {
  evbuffer_iovec v;
  if (evbuffer_peek(buf, -1, nullptr, &v, 1) < 1) return {};
  return {static_cast<const uint8_t*>(v.iov_base), v.iov_len};
}

http1::Limits request_limits(const config::NodeProxyConfig& cfg) {
  http1::Limits l;
  l.max_head_bytes = cfg.limits.max_header_bytes;
  l.max_fields = cfg.limits.max_headers;
  l.max_body_bytes =
      cfg.limits.max_body_bytes == 0 ? http1::kUnlimitedBody : cfg.limits.max_body_bytes;
  return l;
}

bool has_body(const BodyFraming& f) {
  return f.kind == BodyFraming::Kind::Chunked ||
         (f.kind == BodyFraming::Kind::ContentLength && f.length > 0);
}

}  // namespace

std::unique_ptr<ClientConnection> make_client_connection(
    WorkerContext& ctx, BufferEventPtr client, ClientInfo info,
    std::function<void(ClientConnection*)> on_closed) {
  return std::make_unique<H1Connection>(ctx, std::move(client), std::move(info),
                                        std::move(on_closed));
}

const char* to_string(H1Connection::State s) {
  switch (s) {
    case H1Connection::State::ReadingHead:
      return "reading_head";
    case H1Connection::State::Exchange:
      return "exchange";
    case H1Connection::State::Tunnel:
      return "tunnel";
    case H1Connection::State::Closing:
      return "closing";
    case H1Connection::State::Closed:
      return "closed";
  }
  return "?";
}

// ---------------------------------------------------------------------------
// Life cycle.

H1Connection::H1Connection(WorkerContext& ctx, BufferEventPtr client, ClientInfo info,
                           std::function<void(ClientConnection*)> on_closed)
    : ctx_(ctx),
      cfg_(*ctx.config),
      info_(std::move(info)),
      on_closed_(std::move(on_closed)),
      client_(std::move(client)),
      timer_(evtimer_new(ctx.base, timer_cb, this)),
      destroy_ev_(evtimer_new(ctx.base, destroy_cb, this)),
      request_limits_(request_limits(cfg_)),
      head_input_cap_(request_limits_.max_head_bytes),
      body_input_cap_(std::max(request_limits_.max_head_bytes, kHighWatermark)),
      client_timeout_(to_timeval(cfg_.timeouts.client)),
      request_parser_(request_limits_) {}

// The exchanges go first: they may hold the client's transport (tunnel).
H1Connection::~H1Connection() {
  exchange_.reset();
  finished_.reset();
}

void H1Connection::start() {
  bufferevent* c = client_.get();
  bufferevent_setcb(c, client_read_cb, client_write_cb, client_event_cb, this);
  bufferevent_setwatermark(c, EV_WRITE, kLowWatermark, 0);
  set_reading_body(false);
  bufferevent_enable(c, EV_WRITE);
  set_client_reading(true);
  // The first request's header deadline runs from the accept (after the
  // handshake): a connection that never sends a request is not kept.
  started_ = Clock::now();
  arm_timer(TimerKind::Header, cfg_.timeouts.client_header);
  advance();
}

void H1Connection::shutdown() {
  draining_ = true;
  // An idle connection closes now (step_read_head); a request in progress
  // is finished first.
  advance();
}

ConnectionInfo H1Connection::describe() const {
  ConnectionInfo out;
  out.client = info_;
  out.state = state_ == State::Exchange && exchange_ ? exchange_->phase_name() : to_string(state_);
  out.requests = requests_;
  out.age = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - accepted_);
  if (exchange_) {
    out.request = exchange_->request_line();
    out.destination = exchange_->destination();
  }
  return out;
}

size_t H1Connection::buffered_bytes() const {
  size_t n = 0;
  if (bufferevent* b = client_.get()) {
    n += evbuffer_get_length(bufferevent_get_input(b)) +
         evbuffer_get_length(bufferevent_get_output(b));
  }
  if (exchange_) n += exchange_->buffered_bytes();
  return n;
}

bool H1Connection::uses_pool(const UpstreamPool* pool) const {
  return exchange_ && exchange_->pool() == pool;
}

// ---------------------------------------------------------------------------
// Callbacks: each records what happened and runs the state machine.

void H1Connection::client_read_cb(bufferevent*, void* arg) {
  static_cast<H1Connection*>(arg)->advance();
}

void H1Connection::client_write_cb(bufferevent*, void* arg) {
  static_cast<H1Connection*>(arg)->advance();
}

void H1Connection::client_event_cb(bufferevent*, short what, void* arg) {
  auto* self = static_cast<H1Connection*>(arg);
  if (what & BEV_EVENT_EOF) {
    self->client_eof_ = true;
    self->client_reading_ = false;  // libevent stops reading at EOF
    self->advance();
    return;
  }
  if (what & BEV_EVENT_TIMEOUT) {
    self->on_client_timeout((what & BEV_EVENT_WRITING) != 0);
  } else if (what & BEV_EVENT_ERROR) {
    // A reset or TLS failure: nothing more can be written to this client.
    const int err = EVUTIL_SOCKET_ERROR();
    if (self->state_ == State::Closing ||
        (self->state_ == State::ReadingHead && !self->head_started_)) {
      self->finish_connection();
    } else {
      self->current().client_failed(err);
    }
  }
  self->advance();
}

void H1Connection::timer_cb(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<H1Connection*>(arg);
  const TimerKind kind = self->timer_kind_;
  self->timer_kind_ = TimerKind::None;
  switch (kind) {
    case TimerKind::None:
      return;
    case TimerKind::Idle:
      self->ctx_.counters->http_idle_timeouts.add();
      self->begin_closing();
      break;
    case TimerKind::Linger:
      self->finish_connection();
      break;
    case TimerKind::Header:
      if (self->state_ != State::ReadingHead) return;
      if (!self->head_started_) {
        // Nothing of a request arrived: a pre-connected or abandoned
        // connection, closed without an answer (like an idle one).
        self->ctx_.counters->http_idle_timeouts.add();
        self->begin_closing();
      } else {
        self->current().head_timed_out();
      }
      break;
  }
  self->advance();
}

void H1Connection::destroy_cb(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<H1Connection*>(arg);
  auto done = std::move(self->on_closed_);
  if (done) done(self);  // may destroy this
}

// ---------------------------------------------------------------------------
// The state machine.

void H1Connection::advance() {
  if (in_advance_) {
    again_ = true;
    return;
  }
  in_advance_ = true;
  do {
    again_ = false;
    const State before = state_;
    switch (state_) {
      case State::ReadingHead:
        step_read_head();
        break;
      case State::Exchange:
        exchange_->step();
        break;
      case State::Closing:
        step_closing();
        break;
      case State::Tunnel:
      case State::Closed:
        break;
    }
    if (state_ != before) again_ = true;
  } while (again_ && state_ != State::Closed && state_ != State::Tunnel);
  in_advance_ = false;
}

Exchange& H1Connection::current() {
  if (!exchange_) {
    finished_.reset();
    exchange_ = std::make_unique<Exchange>(ctx_, cfg_, *this, started_);
  }
  return *exchange_;
}

void H1Connection::step_read_head() {
  evbuffer* in = bufferevent_get_input(client_.get());
  const size_t len = evbuffer_get_length(in);
  if (len == 0) {
    // Answers already queued still go out (begin_closing flushes them).
    if (client_eof_ || draining_) begin_closing();
    return;
  }
  // Pipelined requests wait while earlier answers pile up unread.
  if (evbuffer_get_length(bufferevent_get_output(client_.get())) >= kHighWatermark) return;
  if (!head_started_) {
    head_started_ = true;
    if (timer_kind_ != TimerKind::Header) {
      started_ = Clock::now();
      arm_timer(TimerKind::Header, cfg_.timeouts.client_header);
    }
  }
  // The parser decides within max_head_bytes: never show it more.
  const size_t n = std::min(len, request_limits_.max_head_bytes);
  const uint8_t* p = evbuffer_pullup(in, static_cast<ev_ssize_t>(n));
  const http1::HeadResult r = request_parser_.parse({p, n});
  switch (r.status) {
    case ParseStatus::NeedMore:
      // (A draining connection still waits for the rest of this head,
      // bounded by the header deadline.)
      if (client_eof_) current().client_closed_mid_head();
      return;
    case ParseStatus::Error:
      current().reject(r.error);
      return;
    case ParseStatus::Done:
      on_head(r.consumed);
      return;
  }
}

void H1Connection::on_head(size_t consumed) {
  const http1::RequestHead& h = request_parser_.head();
  cancel_timer();
  http10_ = h.version == http1::Version::Http10;
  keep_alive_ = http1::request_keep_alive(h);
  head_method_ = h.method == "HEAD";
  request_body_.emplace(h.framing, request_limits_);
  body_done_ = !has_body(h.framing);
  state_ = State::Exchange;
  if (!body_done_) set_reading_body(true);
  Exchange& ex = current();
  ex.on_head(h, consumed);
  // The head's views die with these bytes; the exchange copied what it
  // needs (and may have answered already: its answer is in the output).
  if (client_) evbuffer_drain(bufferevent_get_input(client_.get()), consumed);
}

void H1Connection::on_client_timeout(bool writing) {
  if (state_ == State::Closing || (state_ == State::ReadingHead && !head_started_)) {
    finish_connection();
    return;
  }
  current().client_timed_out(writing);
}

// ---------------------------------------------------------------------------
// The request body.

H1Connection::BodyRead H1Connection::read_body(evbuffer* dst, size_t room) {
  BodyRead out;
  evbuffer* in = bufferevent_get_input(client_.get());
  size_t moved_data = 0;
  while (!body_done_) {
    const std::span<const uint8_t> seg = first_segment(in);
    const http1::BodyResult r = request_body_->decode(seg, room - moved_data);
    if (r.status == ParseStatus::Error) {
      out.error = r.error;
      return out;
    }
    if (r.consumed) {
      evbuffer_remove_buffer(in, dst, r.consumed);
      out.bytes += r.consumed;
    }
    moved_data += r.data.size();
    if (r.status == ParseStatus::Done) {
      body_done_ = true;
      set_reading_body(false);
      break;
    }
    if (r.consumed == 0) break;  // waits for bytes, or for room
  }
  return out;
}

bool H1Connection::body_abandoned() const {
  return !body_done_ && client_eof_ && client_ &&
         evbuffer_get_length(bufferevent_get_input(client_.get())) == 0;
}

// ---------------------------------------------------------------------------
// Responses.

size_t H1Connection::send_interim(const http1::ResponseHead& h) {
  // RFC 9110 15.2: never to an HTTP/1.0 client.
  if (http10_) return 0;
  std::string head;
  ClientResponseOptions o;
  o.framing = BodyFraming::none();
  o.connection = ClientResponseOptions::Connection::Omit;
  build_client_response(h, o, head);
  evbuffer_add(bufferevent_get_output(client_.get()), head.data(), head.size());
  return head.size();
}

H1Connection::ResponseStart H1Connection::start_response(const http1::ResponseHead& h,
                                                         const BodyFraming& framing,
                                                         bool must_close,
                                                         std::span<const http1::Field> extra) {
  ResponseStart s;
  BodyFraming towards_client = framing;
  s.close = must_close || !keep_alive_ || draining_ || client_eof_;
  if (framing.kind == BodyFraming::Kind::Chunked && http10_) {
    // HTTP/1.0 has no chunked coding: send the data, end it by closing.
    s.data_only = true;
    towards_client = BodyFraming::until_close();
    s.close = true;
  }
  if (framing.kind == BodyFraming::Kind::UntilClose) s.close = true;
  std::string head;
  ClientResponseOptions o;
  o.framing = towards_client;
  o.connection = s.close ? ClientResponseOptions::Connection::Close
                         : ClientResponseOptions::Connection::KeepAlive;
  o.client_http10 = http10_;
  o.extra_fields = extra;
  build_client_response(h, o, head);
  evbuffer_add(bufferevent_get_output(client_.get()), head.data(), head.size());
  s.head_bytes = head.size();
  return s;
}

evbuffer* H1Connection::response_sink() { return bufferevent_get_output(client_.get()); }

size_t H1Connection::response_room() const {
  const size_t queued = evbuffer_get_length(bufferevent_get_output(client_.get()));
  // Back-pressure: client_write_cb wakes us below the low watermark.
  return queued < kHighWatermark ? kHighWatermark - queued : 0;
}

H1Connection::LocalSent H1Connection::send_local(int status, std::string_view content_type,
                                                 std::string_view body, bool close,
                                                 std::span<const http1::Field> extra) {
  LocalSent sent;
  sent.close = close || !keep_alive_ || draining_ || client_eof_;
  std::string out =
      "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason_phrase(status)) + "\r\n";
  out += "Content-Type: ";
  out += content_type;
  out += "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nCache-Control: no-store\r\n";
  for (const http1::Field& f : extra) {
    out.append(f.name);
    out += ": ";
    out.append(f.value);
    out += "\r\n";
  }
  if (sent.close)
    out += "Connection: close\r\n";
  else if (http10_)
    out += "Connection: keep-alive\r\n";
  out += "\r\n";
  if (!head_method_) out += body;
  evbuffer_add(bufferevent_get_output(client_.get()), out.data(), out.size());
  sent.bytes = out.size();
  return sent;
}

BufferEventPtr H1Connection::take_for_tunnel(const http1::ResponseHead& h, size_t& head_bytes) {
  std::string head;
  ClientResponseOptions o;
  o.framing = BodyFraming::none();
  o.connection = ClientResponseOptions::Connection::Upgrade;
  build_client_response(h, o, head);
  evbuffer_add(bufferevent_get_output(client_.get()), head.data(), head.size());
  head_bytes = head.size();
  cancel_timer();
  state_ = State::Tunnel;
  client_reading_ = false;
  return std::move(client_);
}

// ---------------------------------------------------------------------------
// Request boundaries and the end of the connection.

void H1Connection::finish(bool close) {
  ++requests_;
  finished_ = std::move(exchange_);
  if (state_ == State::Tunnel) {
    finish_connection();
    return;
  }
  if (close || draining_ || client_eof_)
    begin_closing();
  else
    next_request();
}

void H1Connection::abort(bool response_started) {
  ++requests_;
  finished_ = std::move(exchange_);
  if (state_ == State::Closed) return;
  if (response_started && client_) {
    // A response cut short must not look complete to the client (a
    // close-delimited one would): close with a reset, not a FIN.
    if (evutil_socket_t fd = bufferevent_getfd(client_.get()); fd >= 0) {
      const linger reset{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    }
  }
  finish_connection();
}

void H1Connection::next_request() {
  started_ = Clock::now();
  request_parser_.reset();
  request_body_.reset();
  http10_ = false;
  keep_alive_ = false;
  head_method_ = false;
  body_done_ = true;
  head_started_ = false;
  state_ = State::ReadingHead;
  set_reading_body(false);
  set_client_reading(true);
  arm_timer(TimerKind::Idle, cfg_.timeouts.client_idle);
  again_ = true;
}

void H1Connection::begin_closing() {
  cancel_timer();
  state_ = State::Closing;
  set_reading_body(false);
  // write_cb now fires only once everything has been written.
  bufferevent_setwatermark(client_.get(), EV_WRITE, 0, 0);
  again_ = true;
}

void H1Connection::step_closing() {
  bufferevent* c = client_.get();
  evbuffer* in = bufferevent_get_input(c);
  if (!lingering_) {
    if (evbuffer_get_length(bufferevent_get_output(c)) != 0) {
      set_client_reading(false);
      return;  // client_write_cb comes back when it is flushed
    }
    start_linger();
    if (state_ == State::Closed) return;
  }
  evbuffer_drain(in, evbuffer_get_length(in));
  if (client_eof_) finish_connection();
}

void H1Connection::start_linger() {
  lingering_ = true;
  if (client_eof_) {
    finish_connection();
    return;
  }
  bufferevent* c = client_.get();
  if (SSL* ssl = bufferevent_openssl_get_ssl(c)) {
    SSL_shutdown(ssl);  // close_notify: the response is complete
  } else if (evutil_socket_t fd = bufferevent_getfd(c); fd >= 0) {
    ::shutdown(fd, SHUT_WR);
  }
  arm_timer(TimerKind::Linger, kLingerTimeout);
  set_client_reading(true);
}

void H1Connection::finish_connection() {
  if (state_ == State::Closed) return;
  state_ = State::Closed;
  cancel_timer();
  client_.reset();
  static const timeval kNow{0, 0};
  evtimer_add(destroy_ev_.get(), &kNow);
}

// ---------------------------------------------------------------------------
// Timers and reading switches.

void H1Connection::arm_timer(TimerKind kind, std::chrono::milliseconds after) {
  timer_kind_ = kind;
  const timeval tv = to_timeval(after);
  evtimer_add(timer_.get(), &tv);
}

void H1Connection::cancel_timer() {
  timer_kind_ = TimerKind::None;
  evtimer_del(timer_.get());
}

void H1Connection::set_client_reading(bool on) {
  if (!client_ || on == client_reading_) return;
  if (on && client_eof_) return;
  client_reading_ = on;
  if (on)
    bufferevent_enable(client_.get(), EV_READ);
  else
    bufferevent_disable(client_.get(), EV_READ);
}

void H1Connection::set_reading_body(bool on) {
  if (!client_) return;
  // The write timeout always applies: a client that stops reading its
  // response is dropped after `client`; the read timeout only while a body
  // is due.
  bufferevent_set_timeouts(client_.get(), on ? &client_timeout_ : nullptr, &client_timeout_);
  // A body streams through a watermark's worth of input; otherwise the
  // input holds at most one head (pipelined requests wait in the kernel).
  bufferevent_setwatermark(client_.get(), EV_READ, 0, on ? body_input_cap_ : head_input_cap_);
}

}  // namespace edgepin::nodeproxy
