#pragma once
// Active health checks of the servers, on a thread of their own so a slow
// check never delays a client. Per server: every `interval` a probe with a
// `timeout`; `fall` failures in a row mark an up server down, `rise`
// successes mark a down server up (HAProxy's semantics). Servers start up,
// as in HAProxy, and need `fall` failures to go down. Transitions are
// logged; the router reads the result from ServerState::healthy.
//
// Probes:
//   tcp        the connect succeeds;
//   tls-hello  a current ClientHello (OpenSSL's own, TLS 1.2-1.3) is
//              answered by a well-formed ServerHello (HAProxy's
//              ssl-hello-chk sends SSLv3 and fails on modern servers);
//   http       GET `path` answered with a 2xx or 3xx status.
// Optionally each probe starts with a PROXY v2 LOCAL header, for servers
// that require PROXY on the checked port (HAProxy's check-send-proxy).
#include <sys/time.h>

#include <memory>
#include <string>
#include <vector>

#include "event_loop.h"
#include "frontend.h"
#include "net_address.h"
#include "server.h"
#include "ssl_ptr.h"

namespace edgepin::lb {

enum class CheckType : uint8_t { Tcp, TlsHello, Http };
const char* to_string(CheckType t);

#define EDGEPIN_CHECK_OUTCOMES(X)                                        \
  X(None, "none") /* not checked yet */                                  \
  X(Ok, "ok")                                                            \
  X(ConnectFailed, "connect_failed") /* refused, unreachable */          \
  X(Timeout, "timeout")              /* no verdict within the timeout */ \
  X(Closed, "closed")                /* closed before answering */       \
  X(BadStatus, "bad_status")         /* http: not 2xx/3xx */             \
  X(BadResponse, "bad_response")     /* not HTTP / not TLS */            \
  X(TlsAlert, "tls_alert")           /* the server answered an alert */

enum class CheckOutcome : uint8_t {
#define X(name, str) name,
  EDGEPIN_CHECK_OUTCOMES(X)
#undef X
};
const char* to_string(CheckOutcome o);

struct HealthCheckSettings {
  CheckType type = CheckType::Tcp;
  std::string path = "/";
  timeval interval{2, 0};
  timeval timeout{1, 0};
  int rise = 2;
  int fall = 3;
  // PROXY header each probe starts with: v2 LOCAL or v1 "PROXY UNKNOWN".
  ProxyProtocolMode proxy_protocol = ProxyProtocolMode::None;
};

struct CheckTarget {
  ServerState* server;
  SocketAddress address;
};

class HealthChecker {
 public:
  HealthChecker(HealthCheckSettings settings, std::vector<CheckTarget> targets);
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  void start();
  void stop();

 private:
  class Probe;
  HealthCheckSettings settings_;
  EventLoopThread loop_;
  SslCtxPtr tls_ctx_;  // client context for tls-hello probes: no keys
  std::vector<std::unique_ptr<Probe>> probes_;
};

}  // namespace edgepin::lb
