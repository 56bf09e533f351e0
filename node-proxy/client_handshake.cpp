#include "client_handshake.h"

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "counters.h"
#include "log.h"
#include "peer_tls.h"
#include "time_util.h"
#include "tls_context.h"

namespace edgepin::nodeproxy {
namespace {

constexpr int kBevOptions = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
// OpenSSL errors libevent recorded for one connection, joined for the log.
constexpr size_t kMaxLoggedTlsErrors = 4;

proxy::Accept accept_of(config::AcceptProxy p) {
  switch (p) {
    case config::AcceptProxy::V1:
      return proxy::Accept::V1Only;
    case config::AcceptProxy::V2:
      return proxy::Accept::V2Only;
    case config::AcceptProxy::None:
    case config::AcceptProxy::Any:
      break;
  }
  return proxy::Accept::Any;
}

std::optional<SocketAddress> to_socket_address(const proxy::Address& a) {
  sockaddr_storage ss{};
  const socklen_t len = a.to_sockaddr(ss);
  if (len == 0) return std::nullopt;
  return SocketAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
}

}  // namespace

bool is_trusted_source(const config::Listener& listener, const IpAddress& peer) {
  if (listener.proxy_protocol == config::AcceptProxy::None) return true;
  for (const Cidr& c : listener.trusted_proxies) {
    if (c.contains(peer)) return true;
  }
  return false;
}

ClientHandshake::ClientHandshake(event_base* base, const ListenerSetup& listener,
                                 NodeCounters& counters, evutil_socket_t fd,
                                 const SocketAddress& peer, DoneFn done)
    : base_(base), listener_(listener), counters_(counters), fd_(fd), done_(std::move(done)) {
  info_.listener = listener.config->name;
  info_.peer = peer;
  info_.client = peer;
  info_.public_port = listener.config->public_port;
  info_.tls = listener.tls != nullptr || listener.peer != nullptr;
}

ClientHandshake::~ClientHandshake() {
  // Events first: they refer to the socket.
  readable_.reset();
  deadline_.reset();
  bev_.reset();
  if (fd_ >= 0) ::close(fd_);
}

void ClientHandshake::start() {
  deadline_.reset(evtimer_new(base_, on_deadline, this));
  if (!deadline_) return fail(HandshakeFailure::Internal, "evtimer_new");
  const timeval tv = to_timeval(listener_.setup_timeout);
  evtimer_add(deadline_.get(), &tv);
  if (listener_.config->proxy_protocol == config::AcceptProxy::None) return begin_transport();

  phase_ = Phase::ProxyHeader;
  readable_.reset(event_new(base_, fd_, EV_READ | EV_PERSIST, on_readable, this));
  if (!readable_ || event_add(readable_.get(), nullptr) != 0)
    return fail(HandshakeFailure::Internal, "event_add");
}

void ClientHandshake::on_readable(evutil_socket_t, short, void* arg) {
  static_cast<ClientHandshake*>(arg)->read_proxy_header();
}

void ClientHandshake::on_deadline(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<ClientHandshake*>(arg);
  if (self->phase_ == Phase::ProxyHeader) {
    self->fail(HandshakeFailure::ProxyHeaderTimeout,
               "no complete PROXY header after " + std::to_string(self->header_.size()) + " bytes");
  } else {
    self->fail(HandshakeFailure::TlsTimeout, "handshake not complete");
  }
}

void ClientHandshake::read_proxy_header() {
  const size_t have = header_.size();
  header_.resize(proxy::kV2MaxSize);
  const ssize_t peeked = ::recv(fd_, header_.data() + have, proxy::kV2MaxSize - have, MSG_PEEK);
  if (peeked < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    header_.resize(have);
    return;
  }
  if (peeked <= 0) {
    const std::string why = peeked == 0 ? "closed" : std::strerror(errno);
    header_.resize(have);
    return fail(HandshakeFailure::ProxyHeaderClosed,
                why + " after " + std::to_string(have) + " header bytes");
  }
  header_.resize(have + static_cast<size_t>(peeked));

  const proxy::DecodeResult r = proxy::decode(header_, accept_of(listener_.config->proxy_protocol));
  if (r.status == ParseStatus::Error) {
    counters_.proxy_errors[static_cast<size_t>(r.error)].add();
    return fail(
        HandshakeFailure::ProxyHeaderInvalid,
        std::string(proxy::to_string(r.error)) + " at byte " + std::to_string(r.error_offset));
  }
  // Consume what belongs to the header: all of it while it is incomplete,
  // exactly its length once complete. The bytes were just peeked, so the
  // read cannot come up short.
  const size_t take = (r.status == ParseStatus::Done ? r.consumed : header_.size()) - have;
  const ssize_t got = ::recv(fd_, header_.data() + have, take, 0);
  if (got != static_cast<ssize_t>(take)) {
    return fail(HandshakeFailure::ProxyHeaderClosed,
                std::string("short read consuming the header: ") +
                    (got < 0 ? std::strerror(errno) : "closed"));
  }
  if (r.status == ParseStatus::NeedMore) return;  // wait for the rest

  apply_proxy_header(r.header);
  readable_.reset();
  header_ = {};  // a connection keeps no header buffer beyond this point
  begin_transport();
}

void ClientHandshake::apply_proxy_header(const proxy::Header& header) {
  // LOCAL (the sender's own health check) and UNSPEC/UNKNOWN carry no
  // client: the socket's peer stands for it, as HAProxy does.
  if (header.command != proxy::Command::Proxy || header.family == proxy::Family::Unspec) return;
  auto source = to_socket_address(header.source);
  if (!source) return;
  info_.client = *source;
  info_.proxied = true;
  // The port the client connected to at the edge is the public port.
  if (header.destination.port != 0) info_.public_port = header.destination.port;
}

void ClientHandshake::begin_transport() {
  phase_ = Phase::Tls;
  if (listener_.tls == nullptr && listener_.peer == nullptr) {
    bev_.reset(bufferevent_socket_new(base_, fd_, kBevOptions));
    if (!bev_) return fail(HandshakeFailure::Internal, "bufferevent_socket_new");
    fd_ = -1;
    return succeed();
  }
  SslPtr ssl = listener_.peer ? listener_.peer->new_server_ssl() : listener_.tls->new_ssl();
  if (!ssl) return fail(HandshakeFailure::Internal, "SSL_new");
  // With BEV_OPT_CLOSE_ON_FREE libevent owns the SSL from this call on,
  // also when it fails (it frees it then). The socket stays ours on
  // failure: libevent's socket BIO is made with BIO_NOCLOSE.
  bev_.reset(bufferevent_openssl_socket_new(base_, fd_, ssl.release(), BUFFEREVENT_SSL_ACCEPTING,
                                            kBevOptions));
  if (!bev_) return fail(HandshakeFailure::Internal, "bufferevent_openssl_socket_new");
  fd_ = -1;
  // Many HTTP clients close without close_notify; the HTTP layer decides
  // whether a body was cut short, not the TLS layer.
  bufferevent_openssl_set_allow_dirty_shutdown(bev_.get(), 1);
  bufferevent_setcb(bev_.get(), nullptr, nullptr, on_tls_event, this);
}

void ClientHandshake::on_tls_event(bufferevent*, short what, void* arg) {
  auto* self = static_cast<ClientHandshake*>(arg);
  if (what & BEV_EVENT_CONNECTED) {
    self->tls_connected();
  } else {
    self->tls_failed(what);
  }
}

void ClientHandshake::tls_connected() {
  SSL* ssl = bufferevent_openssl_get_ssl(bev_.get());
  if (listener_.peer) {
    // The verify callback already refused certificates naming no node;
    // this reads back which node it is (for the relay marker and the log).
    info_.peer_node = listener_.peer->node_of(ssl);
    if (info_.peer_node.empty())
      return fail(HandshakeFailure::TlsError, "peer certificate names no cluster node");
    counters_.peer_connections_accepted.add();
  }
  info_.tls_resumed = SSL_session_reused(ssl) == 1;
  (info_.tls_resumed ? counters_.tls_handshakes_resumed : counters_.tls_handshakes_full).add();
  info_.tls_version = SSL_get_version(ssl);
  if (const SSL_CIPHER* c = SSL_get_current_cipher(ssl)) info_.tls_cipher = SSL_CIPHER_get_name(c);
  if (const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) info_.sni = sni;
  const unsigned char* alpn = nullptr;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
  if (alpn != nullptr) info_.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_len);
  succeed();
}

void ClientHandshake::tls_failed(short what) {
  std::string reasons;
  size_t n = 0;
  bool protocol_error = false;
  while (unsigned long e = bufferevent_get_openssl_error(bev_.get())) {
    if (ERR_GET_LIB(e) == 0) {
      // Not an OpenSSL error code: libevent also records SSL_get_error()'s
      // verdict in this list.
      protocol_error = protocol_error || e == SSL_ERROR_SSL;
      continue;
    }
    if (n++ >= kMaxLoggedTlsErrors) continue;  // drain the rest
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    reasons += (reasons.empty() ? "" : "; ") + std::string(buf);
  }
  if (listener_.peer) {
    // Why the client certificate was refused, in words an operator can act on.
    const SSL* ssl = bufferevent_openssl_get_ssl(bev_.get());
    const long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (v == X509_V_ERR_HOSTNAME_MISMATCH) {
      reasons += (reasons.empty() ? "" : "; ") +
                 std::string("client certificate names no node of the cluster");
    } else if (v != X509_V_OK) {
      reasons += (reasons.empty() ? "" : "; ") + std::string("client certificate: ") +
                 X509_verify_cert_error_string(v);
    }
  }
  if (!reasons.empty()) return fail(HandshakeFailure::TlsError, reasons);
  if (protocol_error) return fail(HandshakeFailure::TlsError, "protocol error");
  const int err = EVUTIL_SOCKET_ERROR();
  std::string why = (what & BEV_EVENT_EOF) ? "closed by the client"
                                           : std::string("socket error: ") + std::strerror(err);
  fail(HandshakeFailure::TlsClosed, why);
}

void ClientHandshake::succeed() {
  phase_ = Phase::Done;
  evtimer_del(deadline_.get());
  bufferevent_setcb(bev_.get(), nullptr, nullptr, nullptr, nullptr);
  DoneFn done = std::move(done_);
  // `this` may be gone once done() returns.
  done(this, std::move(bev_), std::move(info_));
}

void ClientHandshake::fail(HandshakeFailure failure, const std::string& detail) {
  phase_ = Phase::Done;
  switch (failure) {
    case HandshakeFailure::ProxyHeaderInvalid:
      counters_.proxy_header_errors.add();
      break;
    case HandshakeFailure::ProxyHeaderTimeout:
      counters_.proxy_header_timeouts.add();
      break;
    case HandshakeFailure::ProxyHeaderClosed:
      counters_.proxy_header_closed.add();
      break;
    case HandshakeFailure::TlsError:
      counters_.tls_handshake_errors.add();
      break;
    case HandshakeFailure::TlsTimeout:
      counters_.tls_handshake_timeouts.add();
      break;
    case HandshakeFailure::TlsClosed:
      counters_.tls_handshake_closed.add();
      break;
    case HandshakeFailure::None:
    case HandshakeFailure::Internal:
      break;
  }
  const bool peer_refused = listener_.peer != nullptr && (failure == HandshakeFailure::TlsError ||
                                                          failure == HandshakeFailure::TlsTimeout ||
                                                          failure == HandshakeFailure::TlsClosed);
  if (peer_refused) counters_.peer_connections_refused.add();
  std::string line = "listener " + info_.listener + ": connection from " + info_.peer.to_string();
  if (info_.proxied) line += " (client " + info_.client.to_string() + ")";
  line += " closed: " + std::string(to_string(failure)) + ": " + detail;
  // A trusted proxy sending a bad header is a misconfiguration; failed TLS
  // handshakes are everyday internet noise (scanners, old clients); a
  // connection closed before it said anything wrong (port probes, the lb's
  // tls-hello check) is counted but, like HAProxy's dontlognull, only
  // logged at debug level.
  if (peer_refused) {
    // Only cluster nodes may speak on the peer port: anything else is worth
    // an operator's attention (a misissued certificate, a scan).
    log::warning(line + " (peer link refused)");
  } else {
    switch (failure) {
      case HandshakeFailure::ProxyHeaderInvalid:
      case HandshakeFailure::Internal:
        log::warning(line);
        break;
      case HandshakeFailure::ProxyHeaderClosed:
      case HandshakeFailure::TlsClosed:
        log::debug(line);
        break;
      default:
        log::info(line);
        break;
    }
  }
  readable_.reset();
  if (deadline_) evtimer_del(deadline_.get());
  bev_.reset();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  DoneFn done = std::move(done_);
  done(this, nullptr, std::move(info_));
}

}  // namespace edgepin::nodeproxy
