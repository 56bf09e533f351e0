#include "relay.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>

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

// Move pages instead of copying where the kernel can; never block.
constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

// Read/write rounds one direction gets per wake-up before the loop serves
// other connections; it then comes back through event_active, without
// waiting for an edge that will not come.
constexpr int kRoundsPerWake = 16;

// A "keep going" wake-up: neither readiness flag changes.
constexpr short kContinue = EV_TIMEOUT;

bool would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

}  // namespace

Relay::Relay(BufferEventPtr a, BufferEventPtr b, Options options, DoneFn done)
    : options_(options), done_(std::move(done)) {
  a_.bev = std::move(a);
  b_.bev = std::move(b);
}

Relay::~Relay() {
  // Events before their descriptors (closed with the bufferevents), pipes
  // back to their pool.
  for (Side* s : {&a_, &b_}) {
    s->io.reset();
    if (s->pipe) options_.pipes->put(std::move(s->pipe));
  }
}

size_t Relay::buffered() const {
  size_t n = 0;
  for (const Side* s : {&a_, &b_}) {
    n += evbuffer_get_length(bufferevent_get_input(s->bev.get())) +
         evbuffer_get_length(bufferevent_get_output(s->bev.get()));
    if (s->copy) n += evbuffer_get_length(s->copy.get());
    if (s->pipe) n += s->pipe->bytes;
  }
  return n;
}

void Relay::start() {
  if (is_set(options_.a_timeout) || is_set(options_.b_timeout) || is_set(options_.idle_timeout)) {
    idle_timer_.reset(evtimer_new(bufferevent_get_base(a_.bev.get()), idle_cb, this));
    event_base_gettimeofday_cached(bufferevent_get_base(a_.bev.get()), &last_activity_);
    const timeval period = check_period();
    evtimer_add(idle_timer_.get(), &period);
  }
  if (options_.direct) {
    start_direct();
    return;
  }
  for (Side* s : {&a_, &b_}) {
    bufferevent_setcb(s->bev.get(), read_cb, write_cb, event_cb, this);
    // Low write watermark 0: write_cb runs when the output is fully drained.
    bufferevent_setwatermark(s->bev.get(), EV_WRITE, 0, 0);
    bufferevent_enable(s->bev.get(), EV_READ | EV_WRITE);
  }
  // Bytes that arrived before the relay existed (a pipelined request) go
  // out first.
  if (evbuffer_get_length(bufferevent_get_input(a_.bev.get()))) pump(a_);
  if (!finished_ && evbuffer_get_length(bufferevent_get_input(b_.bev.get()))) pump(b_);
}

void Relay::stop() { finish(RelayEnd::Stopped, 0); }

void Relay::touch() {
  if (idle_timer_)
    event_base_gettimeofday_cached(bufferevent_get_base(a_.bev.get()), &last_activity_);
}

void Relay::spoke(Side& src, size_t n) {
  touch();
  last_speaker_ = &src;
  src.bytes += n;
}

void Relay::on_eof(Side& src) {
  if (!a_.eof && !b_.eof) a_closed_first_ = (&src == &a_);
  src.eof = true;
  // An EOF is news too: from here on only the other side can speak, and
  // its clock starts now, possibly under a shorter limit than the one the
  // timer sleeps for (a half-closed tunnel): wake up in time for it.
  touch();
  if (idle_timer_) {
    const timeval period = check_period();
    evtimer_add(idle_timer_.get(), &period);
  }
}

size_t Relay::pending(const Side& src) const {
  if (!options_.direct) return evbuffer_get_length(bufferevent_get_output(peer(src).bev.get()));
  return (src.copy ? evbuffer_get_length(src.copy.get()) : 0) + (src.pipe ? src.pipe->bytes : 0);
}

bool Relay::maybe_shutdown(Side& dst) {
  Side& src = peer(dst);
  if (!src.eof || dst.shut_wr) return true;
  if (pending(src) != 0) return true;  // flushing it comes back here
  // Everything src sent before its EOF has been written: pass the EOF on.
  ::shutdown(bufferevent_getfd(dst.bev.get()), SHUT_WR);
  dst.shut_wr = true;
  if (a_.eof && b_.eof && a_.shut_wr && b_.shut_wr) {
    finish(RelayEnd::BothClosed, 0);
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Buffered mode: the bufferevents read and write, the relay moves chains.

void Relay::pump(Side& src) {
  Side& dst = peer(src);
  evbuffer* in = bufferevent_get_input(src.bev.get());
  size_t len = evbuffer_get_length(in);
  if (len == 0) return;
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
  spoke(src, len);
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
    // Bytes that came with the EOF were delivered by read_cb unless reading
    // was paused; in that case they are still in the input buffer.
    self->pump(s);
    self->on_eof(s);
    bufferevent_disable(bev, EV_READ);
    self->maybe_shutdown(self->peer(s));
    return;
  }
  if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
    int err = EVUTIL_SOCKET_ERROR();
    self->finish(&s == &self->a_ ? RelayEnd::AReset : RelayEnd::BReset, err);
  }
}

// ---------------------------------------------------------------------------
// Direct mode: the relay owns the descriptors' readiness.

void Relay::start_direct() {
  event_base* base = bufferevent_get_base(a_.bev.get());
  // Bytes the owner already read from b (none in the lb) are the server's:
  // the observer sees them first.
  evbuffer* b_in = bufferevent_get_input(b_.bev.get());
  if (observer_ && evbuffer_get_length(b_in)) {
    int n = evbuffer_peek(b_in, -1, nullptr, nullptr, 0);
    std::vector<evbuffer_iovec> vec(static_cast<size_t>(n));
    evbuffer_peek(b_in, -1, nullptr, vec.data(), n);
    for (const auto& v : vec) {
      if (!observer_) break;
      observer_({static_cast<const uint8_t*>(v.iov_base), v.iov_len});
    }
  }
  for (Side* s : {&a_, &b_}) {
    Side& dst = peer(*s);
    bufferevent_disable(s->bev.get(), EV_READ | EV_WRITE);
    bufferevent_setcb(s->bev.get(), nullptr, nullptr, nullptr, nullptr);
    s->fd = bufferevent_getfd(s->bev.get());
    // Bytes on their way to dst, oldest first: what the owner queued for it
    // (the lb's PROXY header), then what it already read from s (the
    // inspected ClientHello). Chains move; nothing is copied.
    s->copy.reset(evbuffer_new());
    evbuffer* in = bufferevent_get_input(s->bev.get());
    s->bytes += evbuffer_get_length(in);
    // (A bufferevent's output may only be drained by the bufferevent
    // itself: its front is frozen. It is ours now.)
    evbuffer* queued = bufferevent_get_output(dst.bev.get());
    evbuffer_unfreeze(queued, 1);
    evbuffer_add_buffer(s->copy.get(), queued);
    evbuffer_freeze(queued, 1);
    evbuffer_add_buffer(s->copy.get(), in);
    // Edge-triggered, registered once: pausing a direction is a flag, not
    // an epoll_ctl. Until an EAGAIN says otherwise, assume ready.
    s->readable = s->writable = true;
    s->io.reset(event_new(base, s->fd, EV_READ | EV_WRITE | EV_ET | EV_PERSIST, io_cb, this));
  }
  for (Side* s : {&a_, &b_}) event_add(s->io.get(), nullptr);
  progress();
}

void Relay::io_cb(evutil_socket_t fd, short what, void* arg) {
  auto* self = static_cast<Relay*>(arg);
  Side& s = fd == self->a_.fd ? self->a_ : self->b_;
  if (what & EV_READ) s.readable = true;
  if (what & EV_WRITE) s.writable = true;
  self->progress();
}

bool Relay::progress() {
  bool more_a = false, more_b = false;
  if (!move(a_, more_a) || !move(b_, more_b)) return false;
  if (more_a || more_b) event_active(a_.io.get(), kContinue, 1);
  return true;
}

bool Relay::move(Side& src, bool& more) {
  Side& dst = peer(src);
  int round = 0;
  for (; round < kRoundsPerWake; ++round) {
    if (pending(src) && dst.writable && !flush(src)) return false;
    // Read while there is room: up to the watermark while dst is blocked,
    // so the bytes are ready when it drains.
    if (!src.readable || src.eof) break;
    const uint64_t before = src.bytes;
    const bool copying = src.copy && evbuffer_get_length(src.copy.get());
    if (src.pipe && src.pipe->bytes) break;  // splice into an empty pipe only
    if (!copying && options_.pipes && !(&src == &b_ && observer_)) {
      if (!src.pipe) src.pipe = options_.pipes->get();
    }
    if (src.pipe && !copying) {
      if (!read_splice(src)) return false;
    } else {
      if (copying && evbuffer_get_length(src.copy.get()) >= options_.high_watermark) break;
      if (!read_copy(src)) return false;
    }
    if (src.bytes == before) break;  // EAGAIN or EOF
  }
  if (round == kRoundsPerWake) more = true;
  if (src.eof && !maybe_shutdown(dst)) return false;
  release_idle(src);
  return true;
}

bool Relay::flush(Side& src) {
  Side& dst = peer(src);
  if (src.copy) {
    while (evbuffer_get_length(src.copy.get())) {
      const int n = evbuffer_write_atmost(src.copy.get(), dst.fd, -1);
      if (n > 0) continue;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && would_block(errno)) {
        dst.writable = false;
        return true;
      }
      finish(&dst == &a_ ? RelayEnd::AReset : RelayEnd::BReset, n < 0 ? errno : EPIPE);
      return false;
    }
  }
  if (src.pipe) {
    while (src.pipe->bytes) {
      const ssize_t n =
          ::splice(src.pipe->rd, nullptr, dst.fd, nullptr, src.pipe->bytes, kSpliceFlags);
      if (n > 0) {
        src.pipe->bytes -= static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && would_block(errno)) {
        dst.writable = false;
        return true;
      }
      finish(&dst == &a_ ? RelayEnd::AReset : RelayEnd::BReset, n < 0 ? errno : EPIPE);
      return false;
    }
  }
  return true;
}

bool Relay::read_splice(Side& src) {
  const ssize_t n =
      ::splice(src.fd, nullptr, src.pipe->wr, nullptr, src.pipe->capacity, kSpliceFlags);
  if (n > 0) {
    src.pipe->bytes += static_cast<size_t>(n);
    spoke(src, static_cast<size_t>(n));
    return true;
  }
  // The pipe is empty, so EAGAIN means the socket is.
  return read_moved_nothing(src, n);
}

bool Relay::read_copy(Side& src) {
  if (!src.copy) src.copy.reset(evbuffer_new());
  evbuffer* buf = src.copy.get();
  const size_t len = evbuffer_get_length(buf);
  const size_t room = options_.high_watermark > len ? options_.high_watermark - len : 0;
  if (room == 0) return true;
  evbuffer_iovec vec[2];
  const int nvec = evbuffer_reserve_space(buf, static_cast<ev_ssize_t>(room), vec, 2);
  if (nvec <= 0) {
    finish(&src == &a_ ? RelayEnd::AReset : RelayEnd::BReset, ENOMEM);
    return false;
  }
  iovec iov[2];
  size_t asked = 0;
  for (int i = 0; i < nvec; ++i) {
    // Never more than `room` in all, whatever the chains offer.
    const size_t take = std::min(vec[i].iov_len, room - asked);
    iov[i] = {vec[i].iov_base, take};
    asked += take;
  }
  const ssize_t n = ::readv(src.fd, iov, nvec);
  if (n > 0) {
    size_t left = static_cast<size_t>(n);
    int used = 0;
    for (; used < nvec && left; ++used) {
      vec[used].iov_len = std::min(iov[used].iov_len, left);
      left -= vec[used].iov_len;
      if (&src == &b_ && observer_)
        observer_({static_cast<const uint8_t*>(vec[used].iov_base), vec[used].iov_len});
    }
    evbuffer_commit_space(buf, vec, used);
    spoke(src, static_cast<size_t>(n));
    return true;
  }
  return read_moved_nothing(src, n);
}

bool Relay::read_moved_nothing(Side& src, ssize_t n) {
  if (n == 0) {
    on_eof(src);
    return true;
  }
  if (would_block(errno)) {
    src.readable = false;
    return true;
  }
  if (errno == EINTR) return true;
  finish(&src == &a_ ? RelayEnd::AReset : RelayEnd::BReset, errno);
  return false;
}

void Relay::release_idle(Side& src) {
  // Only once src has nothing more to give for now: a direction in full
  // flow keeps its pipe or buffer from one wake-up to the next.
  if (src.readable && !src.eof) return;
  if (src.pipe && src.pipe->bytes == 0) options_.pipes->put(std::move(src.pipe));
  if (src.copy && evbuffer_get_length(src.copy.get()) == 0) src.copy.reset();
}

// ---------------------------------------------------------------------------
// Inactivity

Relay::Wait Relay::waiting() const {
  if (a_.eof != b_.eof) {
    // Half-closed: the side that closed has nothing more to say; the other
    // one is waited for under its own limit, not the tunnel's.
    const bool wait_for_b = a_.eof;
    const timeval& own = wait_for_b ? options_.b_timeout : options_.a_timeout;
    if (is_set(own)) return {wait_for_b ? RelayTimeout::B : RelayTimeout::A, own};
    return {RelayTimeout::Tunnel, options_.idle_timeout};
  }
  const bool unidirectional_limits = is_set(options_.a_timeout) || is_set(options_.b_timeout);
  if (is_set(options_.idle_timeout) && (!unidirectional_limits || (a_.bytes && b_.bytes)))
    return {RelayTimeout::Tunnel, options_.idle_timeout};
  // Whoever spoke last is waiting for an answer from the other side
  // (before anyone spoke, the client is expected to start).
  const bool wait_for_b = last_speaker_ == &a_;
  return wait_for_b ? Wait{RelayTimeout::B, options_.b_timeout}
                    : Wait{RelayTimeout::A, options_.a_timeout};
}

timeval Relay::check_period() const {
  // In the tunnel only an EOF switches to another limit, and on_eof()
  // re-arms the timer for it.
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
  for (Side* s : {&a_, &b_}) {
    s->io.reset();
    if (s->pipe) options_.pipes->put(std::move(s->pipe));
    bufferevent_disable(s->bev.get(), EV_READ | EV_WRITE);
  }
  Result r{end, a_closed_first_, error, timeout};
  DoneFn done = std::move(done_);
  done(r);  // may delete this
}

}  // namespace edgepin
