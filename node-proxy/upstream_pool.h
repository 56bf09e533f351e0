#pragma once
// A worker's keep-alive connections to one HTTP/1.1 upstream: the local
// Tomcat (plain TCP), or a peer node-proxy over the peer link (TLS, the
// client SSL made by a factory, node-proxy/peer_tls.h). TCP_NODELAY, at most `pool_size` idle ones,
// each closed after `idle_timeout` unused or as soon as the upstream closes it or sends a byte
// while idle (an idle HTTP/1.1 connection has nothing to say: Tomcat's 408 before its own
// keep-alive close is such a byte).
//
// The pool only hands out and takes back connections; the HTTP layer
// (node-proxy/upstream_request.*, exchange.*) decides whether a connection may be
// reused (both messages complete and keep-alive) and retries a request once
// when a reused connection turns out dead (see exchange.h).
//
// Idle connections are reused last-released first: the hottest connection
// is the least likely to have reached the upstream's keep-alive timeout,
// and the coldest ones time out and close on their own.
//
// Lives on one worker's event_base; not thread-safe.
#include <sys/socket.h>
#include <sys/time.h>

#include <cstddef>
#include <functional>
#include <list>

#include "config_node_proxy.h"
#include "counter.h"
#include "event_ptr.h"
#include "ssl_ptr.h"

namespace edgepin::nodeproxy {

struct NodeCounters;

class UpstreamPool {
 public:
  // Plain TCP to Tomcat; counts upstream_connects and upstream_reuses.
  UpstreamPool(event_base* base, const config::UpstreamConfig& config, NodeCounters& counters);
  // Any upstream: `connects` and `reuses` count its connections; with
  // `new_ssl`, every connection is a TLS client on an SSL from it (its
  // handshake is part of the connect: BEV_EVENT_CONNECTED comes after it,
  // and connect_timeout bounds both).
  using SslFactory = std::function<SslPtr()>;
  UpstreamPool(event_base* base, const config::UpstreamConfig& config, Counter& connects,
               Counter& reuses, SslFactory new_ssl = {});
  ~UpstreamPool();  // closes every idle connection
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  // Returns an idle connection, without callbacks, timeouts or reading
  // enabled, after checking that the upstream has not closed it meanwhile
  // (dead ones are closed and skipped); counts upstream_reuses. Returns
  // nullptr when no live idle connection is left.
  BufferEventPtr take_idle();

  // Starts a new connection to config().address and counts
  // upstream_connects. The bufferevent has no callbacks yet and its write
  // timeout is the connect timeout: the caller sets its callbacks at once
  // and waits for BEV_EVENT_CONNECTED (then replaces the timeouts), or
  // BEV_EVENT_ERROR (refused: EVUTIL_SOCKET_ERROR() says why) or
  // BEV_EVENT_TIMEOUT (connect timeout). Returns nullptr and sets `error`
  // (an errno) when the socket cannot even be created. With TLS a failed
  // handshake is a BEV_EVENT_ERROR too (bufferevent_get_openssl_error says
  // why).
  BufferEventPtr connect(int& error);
  bool tls() const { return static_cast<bool>(new_ssl_); }

  // Takes back a connection whose last response was complete and
  // keep-alive, with empty input and output buffers. Kept idle when there
  // is room (the least recently used one is closed to make room); closed
  // otherwise or when pool_size is 0.
  void release(BufferEventPtr bev);

  // Closes every idle connection (worker shutdown, upstream marked down).
  void close_idle();
  // A reload replaced this pool: closes the idle connections, and from now
  // on release() closes what the exchanges still in flight give back. The
  // pool stays usable for those exchanges (take_idle finds nothing, connect
  // and retries still work) until its owner frees it.
  void retire();
  bool retired() const { return retired_; }

  size_t idle_count() const { return idle_.size(); }
  const config::UpstreamConfig& config() const { return config_; }
  event_base* base() const { return base_; }

 private:
  struct Idle {
    UpstreamPool* pool;
    BufferEventPtr bev;
    std::list<Idle>::iterator self;
  };
  static void idle_read_cb(bufferevent* bev, void* arg);
  static void idle_event_cb(bufferevent* bev, short what, void* arg);
  void drop(Idle* idle);
  BufferEventPtr connect_tls(const sockaddr_storage& ss, socklen_t len, int& error);

  event_base* base_;
  config::UpstreamConfig config_;
  Counter& connects_;
  Counter& reuses_;
  SslFactory new_ssl_;
  timeval idle_timeout_{};
  timeval connect_timeout_{};
  std::list<Idle> idle_;  // front: most recently released
  bool retired_ = false;
};

}  // namespace edgepin::nodeproxy
