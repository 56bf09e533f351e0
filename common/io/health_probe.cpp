#include "health_probe.h"

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>

#include "http1.h"
#include "tls_hello.h"

namespace edgepin::health {

ConnectProbe::ConnectProbe(SocketAddress address, std::string preamble, NewSsl new_ssl)
    : address_(std::move(address)), preamble_(std::move(preamble)), new_ssl_(std::move(new_ssl)) {}

ConnectProbe::~ConnectProbe() = default;

void ConnectProbe::begin() {
  connected_ = false;
  active_ = true;
  if (new_ssl_) {
    SslPtr ssl = new_ssl_();
    if (!ssl) return finish(Outcome::ConnectFailed);
    // The bufferevent owns the SSL from here on (BEV_OPT_CLOSE_ON_FREE).
    // No BEV_OPT_DEFER_CALLBACKS: a deferred callback still queued when the
    // checker's loop stops holds a reference that is never dropped, so the
    // bufferevent, its SSL and the SSL_CTX would never be freed
    // (LeakSanitizer saw it at exit). libevent keeps a reference while it
    // runs our callbacks, so finish() may free conn_ from them.
    conn_.reset(bufferevent_openssl_socket_new(base_, -1, ssl.release(), BUFFEREVENT_SSL_CONNECTING,
                                               BEV_OPT_CLOSE_ON_FREE));
    if (conn_) bufferevent_openssl_set_allow_dirty_shutdown(conn_.get(), 1);
  } else {
    conn_.reset(bufferevent_socket_new(base_, -1, BEV_OPT_CLOSE_ON_FREE));
  }
  if (!conn_) return finish(Outcome::ConnectFailed);
  bufferevent_setcb(conn_.get(), read_cb, nullptr, event_cb, this);
  sockaddr_storage ss{};
  const socklen_t len = address_.to_sockaddr(ss);
  if (bufferevent_socket_connect(conn_.get(), reinterpret_cast<sockaddr*>(&ss),
                                 static_cast<int>(len)) < 0)
    finish(Outcome::ConnectFailed);
}

void ConnectProbe::cancel() {
  active_ = false;
  conn_.reset();
}

void ConnectProbe::finish(Outcome outcome, uint16_t detail) {
  conn_.reset();
  if (!active_) return;
  active_ = false;
  done_(Result{outcome, detail});
}

void ConnectProbe::read_cb(bufferevent*, void* arg) {
  auto* p = static_cast<ConnectProbe*>(arg);
  p->on_read(bufferevent_get_input(p->conn_.get()));
}

void ConnectProbe::event_cb(bufferevent*, short what, void* arg) {
  auto* p = static_cast<ConnectProbe*>(arg);
  if (what & BEV_EVENT_CONNECTED) {
    p->connected_ = true;
    if (!p->preamble_.empty())
      bufferevent_write(p->conn_.get(), p->preamble_.data(), p->preamble_.size());
    p->on_connected();
    if (p->conn_) bufferevent_enable(p->conn_.get(), EV_READ);
  } else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
    if (!p->connected_ && p->new_ssl_ && p->tls_refused()) return p->finish(Outcome::TlsFailed);
    p->finish(p->connected_ ? Outcome::Closed : Outcome::ConnectFailed);
  }
}

bool ConnectProbe::tls_refused() {
  bool any = false;
  while (unsigned long e = bufferevent_get_openssl_error(conn_.get()))
    any = any || ERR_GET_LIB(e) != 0;
  return any;
}

void TcpProbe::on_read(evbuffer* in) { evbuffer_drain(in, evbuffer_get_length(in)); }

HttpProbe::HttpProbe(SocketAddress address, std::string request,
                     std::function<bool(uint16_t)> healthy, std::string preamble, NewSsl new_ssl)
    : ConnectProbe(std::move(address), std::move(preamble), std::move(new_ssl)),
      request_(std::move(request)),
      healthy_(std::move(healthy)) {}

HttpProbe::~HttpProbe() = default;

std::string http_check_request(std::string_view path, const SocketAddress& address,
                               std::string_view agent) {
  return "GET " + std::string(path) + " HTTP/1.1\r\nHost: " + address.to_string() +
         "\r\nUser-Agent: " + std::string(agent) + "\r\nConnection: close\r\n\r\n";
}

void HttpProbe::on_connected() {
  response_.clear();
  parser_ = std::make_unique<http1::ResponseParser>();
  bufferevent_write(conn(), request_.data(), request_.size());
}

void HttpProbe::on_read(evbuffer* in) {
  if (!parser_) return;
  const size_t room = kMaxCheckResponseHead - response_.size();
  const size_t n = std::min(room, evbuffer_get_length(in));
  const size_t old = response_.size();
  response_.resize(old + n);
  evbuffer_remove(in, response_.data() + old, n);
  const http1::HeadResult r = parser_->parse(response_);
  if (r.status == ParseStatus::Done) {
    const uint16_t status = parser_->head().status;
    parser_.reset();
    // 1xx cannot answer a GET without Expect.
    if (status < 200) return finish(Outcome::BadResponse, status);
    return finish(healthy_(status) ? Outcome::Ok : Outcome::BadStatus, status);
  }
  if (r.status == ParseStatus::Error || response_.size() >= kMaxCheckResponseHead) {
    parser_.reset();
    finish(Outcome::BadResponse);
  }
}

TlsHelloProbe::TlsHelloProbe(SocketAddress address, std::string preamble)
    : ConnectProbe(std::move(address), std::move(preamble), {}) {
  ctx_.reset(SSL_CTX_new(TLS_client_method()));
  if (ctx_) {
    SSL_CTX_set_min_proto_version(ctx_.get(), TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_NONE, nullptr);  // we only want a ServerHello
  }
}

TlsHelloProbe::~TlsHelloProbe() = default;

void TlsHelloProbe::on_connected() {
  flight_ = std::make_unique<tls::ServerFlightParser>();
  // OpenSSL writes its own, current ClientHello into a memory BIO; we send
  // those bytes and judge the answer ourselves.
  SslPtr ssl(ctx_ ? SSL_new(ctx_.get()) : nullptr);
  if (!ssl) return finish(Outcome::BadResponse);
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl.get(), rbio, wbio);
  SSL_set_connect_state(ssl.get());
  SSL_do_handshake(ssl.get());
  ERR_clear_error();
  char* data = nullptr;
  const long n = BIO_get_mem_data(wbio, &data);
  if (n <= 0) return finish(Outcome::BadResponse);
  bufferevent_write(conn(), data, static_cast<size_t>(n));
}

void TlsHelloProbe::on_read(evbuffer* in) {
  if (!flight_) return;
  uint8_t buf[4096];
  while (evbuffer_get_length(in)) {
    const int n = evbuffer_remove(in, buf, sizeof buf);
    if (n <= 0) break;
    const ParseStatus st = flight_->feed({buf, static_cast<size_t>(n)});
    if (flight_->has_server_hello()) {
      const uint16_t version = flight_->server_hello().selected_version;
      flight_.reset();
      return finish(Outcome::Ok, version);
    }
    if (flight_->alert()) {
      const uint16_t description = flight_->alert()->description;
      flight_.reset();
      return finish(Outcome::TlsAlert, description);
    }
    if (st == ParseStatus::Error) {
      flight_.reset();
      return finish(Outcome::BadResponse);
    }
  }
}

}  // namespace edgepin::health
