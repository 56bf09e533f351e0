#include "upstream_pool.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent_ssl.h>

#include <cerrno>

#include "counters.h"

namespace edgepin::nodeproxy {

namespace {

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

// True when the peer has neither closed the connection nor sent anything:
// recv(MSG_PEEK) would block. Catches a close the event loop has not
// reported yet (it arrived in the same loop turn as the reuse).
bool still_open(bufferevent* bev) {
  if (evbuffer_get_length(bufferevent_get_input(bev)) != 0) return false;
  evutil_socket_t fd = bufferevent_getfd(bev);
  if (fd < 0) return false;
  char byte;
  ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace

UpstreamPool::UpstreamPool(event_base* base, const config::UpstreamConfig& config,
                           NodeCounters& counters)
    : UpstreamPool(base, config, counters.upstream_connects, counters.upstream_reuses) {}

UpstreamPool::UpstreamPool(event_base* base, const config::UpstreamConfig& config,
                           Counter& connects, Counter& reuses, SslFactory new_ssl)
    : base_(base),
      config_(config),
      connects_(connects),
      reuses_(reuses),
      new_ssl_(std::move(new_ssl)),
      idle_timeout_(to_timeval(config.idle_timeout)),
      connect_timeout_(to_timeval(config.connect_timeout)) {}

UpstreamPool::~UpstreamPool() = default;

BufferEventPtr UpstreamPool::take_idle() {
  while (!idle_.empty()) {
    Idle& idle = idle_.front();
    BufferEventPtr bev = std::move(idle.bev);
    idle_.pop_front();
    bufferevent_setcb(bev.get(), nullptr, nullptr, nullptr, nullptr);
    bufferevent_disable(bev.get(), EV_READ | EV_WRITE);
    bufferevent_set_timeouts(bev.get(), nullptr, nullptr);
    if (!still_open(bev.get())) continue;  // freed here: closed by the upstream
    reuses_.add();
    return bev;
  }
  return nullptr;
}

BufferEventPtr UpstreamPool::connect(int& error) {
  sockaddr_storage ss{};
  socklen_t len = config_.address.to_sockaddr(ss);
  if (new_ssl_) return connect_tls(ss, len, error);
  evutil_socket_t fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = errno;
    return nullptr;
  }
  // Request heads and small bodies go out at once instead of waiting for
  // the ACK of the previous segment (Nagle).
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  BufferEventPtr bev(bufferevent_socket_new(base_, fd, BEV_OPT_CLOSE_ON_FREE));
  if (!bev) {
    error = ENOMEM;
    ::close(fd);
    return nullptr;
  }
  connects_.add();
  // The connect waits for writability: the write timeout bounds it.
  bufferevent_set_timeouts(bev.get(), nullptr, &connect_timeout_);
  if (bufferevent_socket_connect(bev.get(), reinterpret_cast<sockaddr*>(&ss),
                                 static_cast<int>(len)) < 0) {
    error = EVUTIL_SOCKET_ERROR();
    if (error == 0) error = ECONNREFUSED;
    return nullptr;
  }
  return bev;
}

BufferEventPtr UpstreamPool::connect_tls(const sockaddr_storage& ss, socklen_t len, int& error) {
  SslPtr ssl = new_ssl_();
  if (!ssl) {
    error = ENOMEM;
    return nullptr;
  }
  // libevent makes and connects the socket itself (its le-proxy sample's
  // way): the handshake then starts once the TCP connect completes. With
  // BEV_OPT_CLOSE_ON_FREE the bufferevent owns the SSL from here on, also
  // when it fails.
  BufferEventPtr bev(
      bufferevent_openssl_socket_new(base_, -1, ssl.release(), BUFFEREVENT_SSL_CONNECTING,
                                     BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS));
  if (!bev) {
    error = ENOMEM;
    return nullptr;
  }
  // A peer that answers the TCP connect but never finishes the handshake
  // is as dead as one that refuses: both directions are bounded.
  bufferevent_set_timeouts(bev.get(), &connect_timeout_, &connect_timeout_);
  // The HTTP layer decides whether a response was complete, not the TLS
  // layer (a peer may close without close_notify).
  bufferevent_openssl_set_allow_dirty_shutdown(bev.get(), 1);
  connects_.add();
  sockaddr_storage copy = ss;
  if (bufferevent_socket_connect(bev.get(), reinterpret_cast<sockaddr*>(&copy),
                                 static_cast<int>(len)) < 0) {
    error = EVUTIL_SOCKET_ERROR();
    if (error == 0) error = ECONNREFUSED;
    return nullptr;
  }
  if (evutil_socket_t fd = bufferevent_getfd(bev.get()); fd >= 0) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return bev;
}

void UpstreamPool::release(BufferEventPtr bev) {
  if (!bev || config_.pool_size == 0 || retired_) return;
  bufferevent* b = bev.get();
  if (evbuffer_get_length(bufferevent_get_input(b)) != 0 ||
      evbuffer_get_length(bufferevent_get_output(b)) != 0)
    return;                                                    // not between messages: never reuse
  while (idle_.size() >= config_.pool_size) idle_.pop_back();  // least recently used
  idle_.push_front(Idle{this, std::move(bev), {}});
  Idle& idle = idle_.front();
  idle.self = idle_.begin();
  bufferevent_setwatermark(b, EV_READ, 0, 0);
  bufferevent_setwatermark(b, EV_WRITE, 0, 0);
  bufferevent_setcb(b, idle_read_cb, nullptr, idle_event_cb, &idle);
  // An idle connection is read only to notice a close, a stray byte or the
  // idle timeout (the read timeout).
  bufferevent_set_timeouts(b, &idle_timeout_, nullptr);
  bufferevent_disable(b, EV_WRITE);
  bufferevent_enable(b, EV_READ);
}

void UpstreamPool::close_idle() { idle_.clear(); }

void UpstreamPool::retire() {
  retired_ = true;
  idle_.clear();
}

void UpstreamPool::drop(Idle* idle) { idle_.erase(idle->self); }

void UpstreamPool::idle_read_cb(bufferevent*, void* arg) {
  auto* idle = static_cast<Idle*>(arg);
  idle->pool->drop(idle);
}

void UpstreamPool::idle_event_cb(bufferevent*, short, void* arg) {
  auto* idle = static_cast<Idle*>(arg);
  idle->pool->drop(idle);
}

}  // namespace edgepin::nodeproxy
