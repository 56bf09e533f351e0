#include "relay.h"

#include <sys/socket.h>

#include <cerrno>
#include <vector>

namespace edgepin {

const char* to_string(RelayEnd e) {
  switch (e) {
#define X(name, str)   \
  case RelayEnd::name: \
    return str;
    EDGEPIN_RELAY_ENDS(X)
#undef X
  }
  return "?";
}

const char* to_string(RelayTimeout t) {
  switch (t) {
    case RelayTimeout::None:
      return "none";
    case RelayTimeout::A:
      return "a";
    case RelayTimeout::B:
      return "b";
    case RelayTimeout::Tunnel:
      return "tunnel";
  }
  return "?";
}

namespace {

bool is_set(const timeval& tv) { return tv.tv_sec || tv.tv_usec; }

// The shorter of two durations, ignoring unset (zero) ones.
timeval shorter(const timeval& x, const timeval& y) {
  if (!is_set(x)) return y;
  if (!is_set(y)) return x;
  return evutil_timercmp(&x, &y, <) ? x : y;
}

}  // namespace

Relay::Relay(BufferEventPtr a, BufferEventPtr b, Options options, DoneFn done)
    : options_(options), done_(std::move(done)) {
  a_.bev = std::move(a);
  b_.bev = std::move(b);
}

Relay::~Relay() = default;

void Relay::start() {
  for (Side* s : {&a_, &b_}) {
    bufferevent_setcb(s->bev.get(), read_cb, write_cb, event_cb, this);
    // Low write watermark 0: write_cb runs when the output is fully drained.
    bufferevent_setwatermark(s->bev.get(), EV_WRITE, 0, 0);
    bufferevent_enable(s->bev.get(), EV_READ | EV_WRITE);
  }
  if (is_set(options_.a_timeout) || is_set(options_.b_timeout) || is_set(options_.idle_timeout)) {
    idle_timer_.reset(evtimer_new(bufferevent_get_base(a_.bev.get()), idle_cb, this));
    event_base_gettimeofday_cached(bufferevent_get_base(a_.bev.get()), &last_activity_);
    const timeval period = check_period();
    evtimer_add(idle_timer_.get(), &period);
  }
  // Bytes that arrived before the relay existed (the lb's inspected
  // ClientHello, a pipelined request) go out first.
  if (evbuffer_get_length(bufferevent_get_input(a_.bev.get()))) pump(a_);
  if (!finished_ && evbuffer_get_length(bufferevent_get_input(b_.bev.get()))) pump(b_);
}

void Relay::stop() { finish(RelayEnd::Stopped, 0); }

void Relay::touch() {
  if (idle_timer_)
    event_base_gettimeofday_cached(bufferevent_get_base(a_.bev.get()), &last_activity_);
}

void Relay::pump(Side& src) {
  Side& dst = peer(src);
  evbuffer* in = bufferevent_get_input(src.bev.get());
  size_t len = evbuffer_get_length(in);
  if (len == 0) return;
  touch();
  last_speaker_ = &src;
  if (&src == &b_ && observer_) {
    // Hand the observer each contiguous segment before the bytes move on.
    int n = evbuffer_peek(in, -1, nullptr, nullptr, 0);
    std::vector<evbuffer_iovec> vec(static_cast<size_t>(n));
    evbuffer_peek(in, -1, nullptr, vec.data(), n);
    for (const auto& v : vec) {
      if (!observer_) break;
      observer_({static_cast<const uint8_t*>(v.iov_base), v.iov_len});
    }
  }
  src.bytes += len;
  evbuffer_add_buffer(bufferevent_get_output(dst.bev.get()), in);
  if (evbuffer_get_length(bufferevent_get_output(dst.bev.get())) >= options_.high_watermark) {
    // Back-pressure: stop reading until dst has written everything out.
    bufferevent_disable(src.bev.get(), EV_READ);
    src.paused = true;
  }
}

void Relay::drained(Side& dst) {
  Side& src = peer(dst);
  if (src.paused) {
    src.paused = false;
    if (!src.eof) bufferevent_enable(src.bev.get(), EV_READ);
  }
  maybe_shutdown(dst);
}

void Relay::maybe_shutdown(Side& dst) {
  Side& src = peer(dst);
  if (!src.eof || dst.shut_wr) return;
  if (evbuffer_get_length(bufferevent_get_output(dst.bev.get())) != 0)
    return;  // write_cb comes back
  // Everything src sent before its EOF has been written: pass the EOF on.
  ::shutdown(bufferevent_getfd(dst.bev.get()), SHUT_WR);
  dst.shut_wr = true;
  if (a_.eof && b_.eof && a_.shut_wr && b_.shut_wr) finish(RelayEnd::BothClosed, 0);
}

void Relay::read_cb(bufferevent* bev, void* arg) {
  auto* self = static_cast<Relay*>(arg);
  self->pump(self->side(bev));
}

void Relay::write_cb(bufferevent* bev, void* arg) {
  auto* self = static_cast<Relay*>(arg);
  self->drained(self->side(bev));
}

void Relay::event_cb(bufferevent* bev, short what, void* arg) {
  auto* self = static_cast<Relay*>(arg);
  Side& s = self->side(bev);
  if (what & BEV_EVENT_EOF) {
    if (!self->a_.eof && !self->b_.eof) self->a_closed_first_ = (&s == &self->a_);
    // Bytes that came with the EOF were delivered by read_cb unless reading
    // was paused; in that case they are still in the input buffer.
    self->pump(s);
    s.eof = true;
    // An EOF is news too: from here on only the other side can speak, and
    // its clock starts now.
    self->touch();
    bufferevent_disable(bev, EV_READ);
    self->maybe_shutdown(self->peer(s));
    return;
  }
  if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
    int err = EVUTIL_SOCKET_ERROR();
    self->finish(&s == &self->a_ ? RelayEnd::AReset : RelayEnd::BReset, err);
  }
}

Relay::Wait Relay::waiting() const {
  const bool unidirectional_limits = is_set(options_.a_timeout) || is_set(options_.b_timeout);
  if (is_set(options_.idle_timeout) && (!unidirectional_limits || (a_.bytes && b_.bytes)))
    return {RelayTimeout::Tunnel, options_.idle_timeout};
  bool wait_for_b;
  if (a_.eof != b_.eof) {
    wait_for_b = a_.eof;  // the side that closed has nothing more to say
  } else {
    // Whoever spoke last is waiting for an answer from the other side
    // (before anyone spoke, the client is expected to start).
    wait_for_b = last_speaker_ == &a_;
  }
  return wait_for_b ? Wait{RelayTimeout::B, options_.b_timeout}
                    : Wait{RelayTimeout::A, options_.a_timeout};
}

timeval Relay::check_period() const {
  // In the tunnel nothing else can apply any more.
  if (waiting().which == RelayTimeout::Tunnel) return options_.idle_timeout;
  return shorter(shorter(options_.a_timeout, options_.b_timeout), options_.idle_timeout);
}

void Relay::idle_cb(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Relay*>(arg);
  timeval now, idle;
  event_base_gettimeofday_cached(bufferevent_get_base(self->a_.bev.get()), &now);
  evutil_timersub(&now, &self->last_activity_, &idle);
  const Wait w = self->waiting();
  if (is_set(w.limit) && !evutil_timercmp(&idle, &w.limit, <)) {
    self->finish(RelayEnd::IdleTimeout, 0, w.which);
    return;
  }
  // Not expired (reads since the timer was armed moved the clock, or the
  // side waited for has no limit): sleep until this wait would expire, but
  // no longer than the check period, since activity may switch to another
  // wait with a shorter limit. Re-arming lazily here instead of on every
  // read keeps reads free of timer-heap work.
  timeval left = self->check_period();
  if (is_set(w.limit)) {
    timeval rest;
    evutil_timersub(&w.limit, &idle, &rest);
    left = shorter(rest, left);
  }
  evtimer_add(self->idle_timer_.get(), &left);
}

void Relay::finish(RelayEnd end, int error, RelayTimeout timeout) {
  if (finished_) return;
  finished_ = true;
  idle_timer_.reset();
  for (Side* s : {&a_, &b_}) bufferevent_disable(s->bev.get(), EV_READ | EV_WRITE);
  Result r{end, a_closed_first_, error, timeout};
  DoneFn done = std::move(done_);
  done(r);  // may delete this
}

}  // namespace edgepin
