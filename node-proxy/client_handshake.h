#pragma once
// A client connection from accept until HTTP can start: the PROXY header,
// when the listener requires one, then the TLS handshake, when the listener
// terminates TLS, both under one deadline. The outcome is handed to the
// worker exactly once: a ready bufferevent with the ClientInfo the HTTP
// layer needs, or nothing (the connection is then closed, counted and
// logged with the reason).
//
// The PROXY header is read from the socket without reading past it
// (HAProxy's way): peek, decode, then consume exactly the bytes the header
// used (all of them while it is incomplete, since every byte before the end
// of a header belongs to it). The first application byte, the TLS
// ClientHello or the HTTP request, stays in the socket, so the TLS or plain
// bufferevent is built on the bare socket with nothing to carry over.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "client_info.h"
#include "config_node_proxy.h"
#include "event_ptr.h"
#include "net_address.h"
#include "proxy_protocol.h"

namespace edgepin::nodeproxy {

class PeerTls;
class TlsContext;
struct NodeCounters;

// How a connection that failed before HTTP ended. The log line and the
// counters (NodeCounters) name it.
#define EDGEPIN_HANDSHAKE_FAILURES(X)                                                      \
  X(None, "none")                                                                          \
  X(ProxyHeaderInvalid, "proxy_header_invalid") /* the decoder refused it */               \
  X(ProxyHeaderTimeout, "proxy_header_timeout") /* incomplete at the deadline */           \
  X(ProxyHeaderClosed, "proxy_header_closed")   /* closed or reset before its end */       \
  X(TlsError, "tls_error")                      /* alert, protocol or version error */     \
  X(TlsTimeout, "tls_timeout")                  /* handshake incomplete at the deadline */ \
  X(TlsClosed, "tls_closed")                    /* closed or reset mid-handshake */        \
  X(Internal, "internal")                       /* allocation or libevent failure */

enum class HandshakeFailure : uint8_t {
#define EDGEPIN_X(name, text) name,
  EDGEPIN_HANDSHAKE_FAILURES(EDGEPIN_X)
#undef EDGEPIN_X
};

constexpr std::string_view to_string(HandshakeFailure f) {
  switch (f) {
#define EDGEPIN_X(name, text)  \
  case HandshakeFailure::name: \
    return text;
    EDGEPIN_HANDSHAKE_FAILURES(EDGEPIN_X)
#undef EDGEPIN_X
  }
  return "?";
}

// The TLS context a listener's new handshakes start on. A reload (SIGHUP)
// swaps it from the main thread while workers read it: each handshake reads
// it once, and a connection keeps the SSL_CTX it started with (the runtime
// keeps a replaced context alive past the longest handshake).
class TlsContextRef {
 public:
  TlsContextRef(const TlsContext* p = nullptr) : p_(p) {}  // NOLINT: implicit by design
  TlsContextRef(const TlsContextRef& o) : p_(o.get()) {}
  TlsContextRef& operator=(const TlsContextRef& o) {
    p_.store(o.get(), std::memory_order_release);
    return *this;
  }
  TlsContextRef& operator=(const TlsContext* p) {
    p_.store(p, std::memory_order_release);
    return *this;
  }
  const TlsContext* get() const { return p_.load(std::memory_order_acquire); }
  const TlsContext* operator->() const { return get(); }
  bool operator==(std::nullptr_t) const { return get() == nullptr; }

 private:
  std::atomic<const TlsContext*> p_;
};

// A listener as the data path sees it, resolved at start (its TLS context
// is replaced by reloads).
struct ListenerSetup {
  const config::Listener* config = nullptr;
  TlsContextRef tls;  // null: plain HTTP (unless `peer`)
  // The peer listener: mutual TLS against the cluster CA instead of `tls`
  // (node-proxy/peer_tls.h). A refused client certificate is logged and
  // counted (peer_connections_refused), an accepted one names the node.
  const PeerTls* peer = nullptr;
  // Covers the PROXY header and the TLS handshake together: the TLS
  // handshake timeout on TLS listeners, the request header timeout on plain
  // ones (the PROXY header is then the start of the request).
  std::chrono::milliseconds setup_timeout{10000};
};

// True if the listener takes connections from `peer`: always when it
// requires no PROXY header, else only from its trusted_proxies.
bool is_trusted_source(const config::Listener& listener, const IpAddress& peer);

class ClientHandshake {
 public:
  // Called exactly once. On success `client` is the connection, ready for
  // HTTP: no callbacks set, reading not enabled, nothing buffered in its
  // input, BEV_OPT_CLOSE_ON_FREE (and for TLS the SSL is owned by it). On
  // failure `client` is null and the socket is already closed. The
  // callback may destroy the ClientHandshake.
  using DoneFn = std::function<void(ClientHandshake* self, BufferEventPtr client, ClientInfo info)>;

  // Takes ownership of the accepted socket `fd`. `peer` is the TCP peer,
  // `listener` and `counters` must outlive the handshake.
  ClientHandshake(event_base* base, const ListenerSetup& listener, NodeCounters& counters,
                  evutil_socket_t fd, const SocketAddress& peer, DoneFn done);
  ~ClientHandshake();  // closes whatever it still owns
  ClientHandshake(const ClientHandshake&) = delete;
  ClientHandshake& operator=(const ClientHandshake&) = delete;

  // Starts reading. May call `done` before returning (a plain listener
  // without PROXY header is ready at once).
  void start();

 private:
  enum class Phase : uint8_t { ProxyHeader, Tls, Done };

  static void on_readable(evutil_socket_t, short, void* arg);
  static void on_deadline(evutil_socket_t, short, void* arg);
  static void on_tls_event(bufferevent* bev, short what, void* arg);

  void read_proxy_header();
  void apply_proxy_header(const proxy::Header& header);
  void begin_transport();
  void tls_connected();
  void tls_failed(short what);
  void succeed();
  void fail(HandshakeFailure failure, const std::string& detail);

  event_base* base_;
  const ListenerSetup& listener_;
  NodeCounters& counters_;
  evutil_socket_t fd_;  // owned until a bufferevent takes it; -1 after
  DoneFn done_;
  Phase phase_ = Phase::ProxyHeader;
  ClientInfo info_;
  std::vector<uint8_t> header_;  // PROXY header bytes consumed so far
  EventPtr readable_;
  EventPtr deadline_;
  BufferEventPtr bev_;
};

}  // namespace edgepin::nodeproxy
