#include "upstream_request.h"
#include "time_util.h"

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "client_codec.h"
#include "upstream_pool.h"

namespace edgepin::nodeproxy {

namespace {

std::span<const uint8_t> first_segment(evbuffer* buf) {
  evbuffer_iovec v;
  if (evbuffer_peek(buf, -1, nullptr, &v, 1) < 1) return {};
  return {static_cast<const uint8_t*>(v.iov_base), v.iov_len};
}

// OpenSSL's reasons for a failed TLS upstream handshake, for the log.
std::string tls_errors(bufferevent* bev) {
  std::string out;
  size_t n = 0;
  while (unsigned long e = bufferevent_get_openssl_error(bev)) {
    if (ERR_GET_LIB(e) == 0 || n++ >= 4) continue;  // libevent's own codes; drain the rest
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += (out.empty() ? "" : "; ") + std::string(buf);
  }
  return out;
}

// What the socket holds beyond what the bufferevent read: nothing (a read
// would block), a close, or bytes. On a TLS connection socket bytes are
// records (maybe a close_notify), so only the plaintext already read counts
// there; the pool drops an idle connection on any later byte.
enum class Pending : uint8_t { Nothing, Closed, Bytes };
Pending socket_pending(bufferevent* bev) {
  evutil_socket_t fd = bufferevent_getfd(bev);
  if (fd < 0) return Pending::Closed;
  char byte;
  ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return Pending::Bytes;
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Pending::Nothing;
  return Pending::Closed;
}

}  // namespace

UpstreamRequest::UpstreamRequest(UpstreamPool& pool, const http1::Limits& response_limits,
                                 ClientStream& waker)
    : pool_(pool),
      waker_(waker),
      limits_(response_limits),
      input_cap_(std::max(response_limits.max_head_bytes, kHighWatermark)),
      response_timeout_(to_timeval(pool.config().response_timeout)),
      parser_(limits_) {}

UpstreamRequest::~UpstreamRequest() = default;

UpstreamRequest::Start UpstreamRequest::start(bool fresh) {
  if (!fresh) {
    if (BufferEventPtr bev = pool_.take_idle()) {
      reused_ = true;
      bev_ = std::move(bev);
      connect_ = ConnectState::Connected;
      return Start::Ready;
    }
  }
  reused_ = false;
  int err = 0;
  BufferEventPtr bev = pool_.connect(err);
  if (!bev) {
    error_ = err;
    connect_ = ConnectState::Failed;
    return Start::Failed;
  }
  bev_ = std::move(bev);
  bufferevent_setcb(bev_.get(), nullptr, nullptr, event_cb, this);
  return Start::Connecting;
}

void UpstreamRequest::send(std::string_view head, evbuffer* staged) {
  sending_ = true;
  bufferevent* up = bev_.get();
  bufferevent_setcb(up, read_cb, write_cb, event_cb, this);
  bufferevent_setwatermark(up, EV_READ, 0, input_cap_);
  bufferevent_setwatermark(up, EV_WRITE, kLowWatermark, 0);
  evbuffer* out = bufferevent_get_output(up);
  evbuffer_add(out, head.data(), head.size());
  if (staged && evbuffer_get_length(staged)) evbuffer_add_buffer(out, staged);
  bufferevent_enable(up, EV_WRITE);
  set_reading(true);
}

evbuffer* UpstreamRequest::request_sink() const { return bufferevent_get_output(bev_.get()); }

void UpstreamRequest::set_waiting(bool waiting) {
  if (!bev_) return;
  bufferevent_set_timeouts(bev_.get(), waiting ? &response_timeout_ : nullptr, &response_timeout_);
}

bool UpstreamRequest::take_timeout() {
  const bool t = timed_out_;
  timed_out_ = false;
  return t;
}

void UpstreamRequest::set_reading(bool on) {
  if (!bev_ || on == reading_) return;
  if (on && eof_) return;
  reading_ = on;
  if (on)
    bufferevent_enable(bev_.get(), EV_READ);
  else
    bufferevent_disable(bev_.get(), EV_READ);
}

// ---------------------------------------------------------------------------
// Callbacks: record, then wake the exchange; nothing of `this` is touched
// after wake() (the exchange may have ended and freed this attempt).

void UpstreamRequest::read_cb(bufferevent*, void* arg) {
  static_cast<UpstreamRequest*>(arg)->waker_.wake();
}

void UpstreamRequest::write_cb(bufferevent*, void* arg) {
  static_cast<UpstreamRequest*>(arg)->waker_.wake();
}

void UpstreamRequest::event_cb(bufferevent*, short what, void* arg) {
  auto* self = static_cast<UpstreamRequest*>(arg);
  if (self->connect_ == ConnectState::Pending) {
    if (what & BEV_EVENT_CONNECTED) {
      self->connect_ = ConnectState::Connected;
      self->connected_at_ = Clock::now();
    } else {
      const int err = EVUTIL_SOCKET_ERROR();
      self->error_ = err;
      if (self->bev_ && self->pool_.tls()) self->tls_error_ = tls_errors(self->bev_.get());
      self->connect_ = (what & BEV_EVENT_TIMEOUT) ? ConnectState::TimedOut : ConnectState::Failed;
    }
  } else if (what & BEV_EVENT_TIMEOUT) {
    self->timed_out_ = true;
  } else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
    self->eof_ = true;
    self->reading_ = false;
    if (what & BEV_EVENT_ERROR) {
      const int err = EVUTIL_SOCKET_ERROR();
      self->socket_error_ = err ? err : ECONNRESET;
    }
  }
  ClientStream& waker = self->waker_;
  waker.wake();
}

// ---------------------------------------------------------------------------
// The response.

UpstreamRequest::HeadStep UpstreamRequest::parse_head() {
  HeadStep s;
  evbuffer* in = bufferevent_get_input(bev_.get());
  const size_t len = evbuffer_get_length(in);
  if (len == 0) {
    if (eof_) s.kind = HeadStep::Kind::Gone;
    return s;
  }
  response_bytes_ = true;
  const size_t n = std::min(len, limits_.max_head_bytes);
  const uint8_t* p = evbuffer_pullup(in, static_cast<ev_ssize_t>(n));
  const http1::HeadResult r = parser_.parse({p, n});
  switch (r.status) {
    case ParseStatus::NeedMore:
      if (eof_) s.kind = HeadStep::Kind::Truncated;
      break;
    case ParseStatus::Error:
      s.kind = HeadStep::Kind::Invalid;
      s.error = r.error;
      break;
    case ParseStatus::Done:
      s.kind = HeadStep::Kind::Head;
      s.consumed = r.consumed;
      break;
  }
  return s;
}

void UpstreamRequest::skip_head(size_t consumed) {
  evbuffer_drain(bufferevent_get_input(bev_.get()), consumed);
  parser_.reset();
}

void UpstreamRequest::begin_body(size_t consumed, const http1::BodyFraming& framing) {
  evbuffer_drain(bufferevent_get_input(bev_.get()), consumed);
  body_.emplace(framing, limits_);
}

UpstreamRequest::BodyStep UpstreamRequest::move_body(evbuffer* dst, size_t room, bool data_only) {
  BodyStep s;
  evbuffer* in = bufferevent_get_input(bev_.get());
  size_t moved_data = 0;
  for (;;) {
    const std::span<const uint8_t> seg = first_segment(in);
    const http1::BodyResult r = body_->decode(seg, room - moved_data);
    if (r.status == ParseStatus::Error) {
      s.error = r.error;
      return s;
    }
    if (data_only) {
      // Only the data goes on; the chunk framing around it is dropped.
      const size_t before =
          r.data.empty() ? r.consumed : static_cast<size_t>(r.data.data() - seg.data());
      const size_t data = r.data.size();
      const size_t after = r.consumed - before - data;
      evbuffer_drain(in, before);
      evbuffer_remove_buffer(in, dst, data);
      evbuffer_drain(in, after);
    } else if (r.consumed) {
      evbuffer_remove_buffer(in, dst, r.consumed);
    }
    moved_data += r.data.size();
    if (r.status == ParseStatus::Done) {
      s.done = true;
      return s;
    }
    if (r.consumed == 0 || evbuffer_get_length(in) == 0) return s;
  }
}

UpstreamRequest::BodyEnd UpstreamRequest::body_end() {
  if (!eof_ || evbuffer_get_length(bufferevent_get_input(bev_.get())) != 0) return BodyEnd::Open;
  // A reset is never a clean end, even of a close-delimited body.
  const http1::BodyResult r = body_->finish();
  return r.status == ParseStatus::Done && socket_error_ == 0 ? BodyEnd::Clean : BodyEnd::Cut;
}

// ---------------------------------------------------------------------------
// The end.

bool UpstreamRequest::release(bool keep_alive) {
  if (!bev_) return false;
  bufferevent* up = bev_.get();
  // Bytes after the end of the response, read or still in the socket: the
  // upstream said more than it was asked (a second response, garbage).
  // Never reuse such a connection: the next request would get them.
  bool extra = evbuffer_get_length(bufferevent_get_input(up)) != 0;
  bool closed = eof_;
  if (!extra && !closed && keep_alive && !pool_.tls()) {
    const Pending p = socket_pending(up);
    extra = p == Pending::Bytes;
    closed = p == Pending::Closed;
  }
  const bool reusable =
      keep_alive && !closed && !extra && evbuffer_get_length(bufferevent_get_output(up)) == 0;
  bufferevent_setcb(up, nullptr, nullptr, nullptr, nullptr);
  bufferevent_set_timeouts(up, nullptr, nullptr);
  if (reusable) pool_.release(std::move(bev_));
  bev_.reset();
  return extra;
}

BufferEventPtr UpstreamRequest::take() {
  reading_ = false;
  return std::move(bev_);
}

void UpstreamRequest::drain(size_t n) { evbuffer_drain(bufferevent_get_input(bev_.get()), n); }

size_t UpstreamRequest::buffered_bytes() const {
  if (!bev_) return 0;
  return evbuffer_get_length(bufferevent_get_input(bev_.get())) +
         evbuffer_get_length(bufferevent_get_output(bev_.get()));
}

}  // namespace edgepin::nodeproxy
