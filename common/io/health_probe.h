#pragma once
// The probes the health-check engine (health_check.h) plugs in. Each one
// connects to its address (plain TCP, or TLS when `new_ssl` is given),
// writes its `preamble` first (a PROXY header, for servers that require one
// on the checked port: HAProxy's check-send-proxy), and then:
//   TcpProbe       the connect succeeds: ok;
//   TlsHelloProbe  a current ClientHello (OpenSSL's own, TLS 1.2-1.3) must
//                  be answered by a well-formed ServerHello; an alert is
//                  tls_alert (HAProxy's ssl-hello-chk sends SSLv3 and fails
//                  on modern servers);
//   HttpProbe      `request` must be answered by a complete response head
//                  (at most kMaxCheckResponseHead bytes) whose status
//                  `healthy` accepts (else bad_status); 1xx cannot answer a
//                  plain GET and is bad_response.
// Over TLS a handshake the target refuses is tls_failed, a refused or
// reset TCP connect connect_failed.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "event_ptr.h"
#include "health_check.h"
#include "net_address.h"
#include "ssl_ptr.h"

namespace edgepin::http1 {
class ResponseParser;
}
namespace edgepin::tls {
class ServerFlightParser;
}

namespace edgepin::health {

inline constexpr size_t kMaxCheckResponseHead = 16 * 1024;

// Connect, preamble, then what the subclass asks for.
class ConnectProbe : public Probe {
 public:
  using NewSsl = std::function<SslPtr()>;
  ~ConnectProbe() override;
  void begin() final;
  void cancel() final;

 protected:
  ConnectProbe(SocketAddress address, std::string preamble, NewSsl new_ssl);
  // Connected (and TLS established), preamble queued: write the request
  // or finish().
  virtual void on_connected() = 0;
  virtual void on_read(evbuffer* in) = 0;
  // Frees the connection and reports `r` (once per check).
  void finish(Outcome outcome, uint16_t detail = 0);
  bufferevent* conn() { return conn_.get(); }
  const SocketAddress& address() const { return address_; }

 private:
  static void read_cb(bufferevent*, void* arg);
  static void event_cb(bufferevent*, short what, void* arg);
  // True when OpenSSL recorded a reason for the failure (as opposed to a
  // refused or reset TCP connect); drains libevent's error list.
  bool tls_refused();

  SocketAddress address_;
  std::string preamble_;
  NewSsl new_ssl_;
  BufferEventPtr conn_;
  bool connected_ = false;
  bool active_ = false;
};

class TcpProbe final : public ConnectProbe {
 public:
  TcpProbe(SocketAddress address, std::string preamble = {}, NewSsl new_ssl = {})
      : ConnectProbe(std::move(address), std::move(preamble), std::move(new_ssl)) {}
  const char* kind() const override { return "tcp"; }

 private:
  void on_connected() override { finish(Outcome::Ok); }
  void on_read(evbuffer* in) override;
};

class HttpProbe final : public ConnectProbe {
 public:
  // `request` is written as is (a whole HTTP/1.1 request with
  // "Connection: close"); see http_check_request().
  HttpProbe(SocketAddress address, std::string request,
            std::function<bool(uint16_t status)> healthy, std::string preamble = {},
            NewSsl new_ssl = {});
  ~HttpProbe() override;
  const char* kind() const override { return "http"; }

 private:
  void on_connected() override;
  void on_read(evbuffer* in) override;

  std::string request_;
  std::function<bool(uint16_t)> healthy_;
  std::unique_ptr<http1::ResponseParser> parser_;
  std::vector<uint8_t> response_;
};

// "GET <path> HTTP/1.1" with Host (the address), User-Agent (`agent`) and
// "Connection: close".
std::string http_check_request(std::string_view path, const SocketAddress& address,
                               std::string_view agent);

class TlsHelloProbe final : public ConnectProbe {
 public:
  // Owns a client SSL_CTX with no keys and no verification: the probe only
  // wants the ServerHello.
  TlsHelloProbe(SocketAddress address, std::string preamble = {});
  ~TlsHelloProbe() override;
  const char* kind() const override { return "tls-hello"; }

 private:
  void on_connected() override;
  void on_read(evbuffer* in) override;

  SslCtxPtr ctx_;
  std::unique_ptr<tls::ServerFlightParser> flight_;
};

}  // namespace edgepin::health
