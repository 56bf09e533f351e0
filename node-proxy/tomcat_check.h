#pragma once
// The node-proxy's active check of its Tomcat, on a thread of its own so a
// slow Tomcat never delays a client: every check_interval a GET of
// health.check_path on the upstream address with check_timeout; a status
// below 500 is a success (a 404 or a login redirect still proves Tomcat
// answers). `fall` failures in a row mark Tomcat down, `rise` successes
// mark it up (HAProxy's semantics); transitions are logged. The verdict is
// NodeState::tomcat_up, which the health endpoint reports (HAProxy's
// `monitor fail if { nbsrv(backend) eq 0 }`).
//
// The first check runs at start and its result is taken as is: until then
// Tomcat counts as down, so a node-proxy started before its Tomcat never
// reports itself healthy.
//
// A reload that changes the check settings (or the peers) stops a checker
// and starts a new one with `keep_state`: the verdict in place stands, as
// if the last rise (up) or fall (down) checks had agreed with it, so a
// reload neither marks a live Tomcat or peer down nor a dead one up.
//
// PeerHealthChecker does the same for every peer of the cluster, on one
// thread of its own: a GET of the peer's health path (health.path, which
// the peer node-proxy answers itself: 200 while its Tomcat is up, draining
// or not, see HealthAudience in stats.h) over the peer link's mutual TLS, with the peer
// section's interval, timeout, rise and fall. The verdict is
// PeerState::up; a down peer's sessions are served locally (OwnerDown).
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config_node_proxy.h"
#include "event_loop.h"
#include "net_address.h"
#include "ssl_ptr.h"

namespace edgepin::nodeproxy {

struct NodeState;
class PeerTls;

#define EDGEPIN_TOMCAT_CHECK_OUTCOMES(X)                                     \
  X(Ok, "ok")                                                                \
  X(ConnectFailed, "connect_failed") /* refused, unreachable */              \
  X(Timeout, "timeout")              /* no status line within the timeout */ \
  X(Closed, "closed")                /* closed before a complete head */     \
  X(BadStatus, "bad_status")         /* 5xx */                               \
  X(BadResponse, "bad_response")     /* not an HTTP/1.x response head */     \
  X(TlsFailed, "tls_failed")         /* peer link: handshake refused */

enum class CheckOutcome : uint8_t {
#define EDGEPIN_X(name, text) name,
  EDGEPIN_TOMCAT_CHECK_OUTCOMES(EDGEPIN_X)
#undef EDGEPIN_X
};

constexpr std::string_view to_string(CheckOutcome o) {
  switch (o) {
#define EDGEPIN_X(name, text) \
  case CheckOutcome::name:    \
    return text;
    EDGEPIN_TOMCAT_CHECK_OUTCOMES(EDGEPIN_X)
#undef EDGEPIN_X
  }
  return "?";
}

// The largest response head a check reads; Tomcat's error pages put their
// body after it, which the check never reads.
inline constexpr size_t kMaxCheckResponseHead = 16 * 1024;

class HealthProbe;

class TomcatHealthChecker {
 public:
  // Checks `upstream` (host:port of Tomcat) as `settings` says and writes
  // the verdict to `node.tomcat_up` (reset to down first unless
  // `keep_state`). `node` must outlive the checker.
  TomcatHealthChecker(const config::NodeHealthConfig& settings, const SocketAddress& upstream,
                      NodeState& node, bool keep_state = false);
  ~TomcatHealthChecker();  // stops the thread
  TomcatHealthChecker(const TomcatHealthChecker&) = delete;
  TomcatHealthChecker& operator=(const TomcatHealthChecker&) = delete;

  // Starts the thread; the first check runs at once.
  void start();
  void stop();

 private:
  EventLoopThread loop_;
  std::unique_ptr<HealthProbe> probe_;
};

class PeerHealthChecker {
 public:
  // Checks every entry of `node.peers` (as it is now) over `tls`, as
  // `peer` and `health` (the path) say. Entry i starts down unless
  // keep_state[i] (missing entries: false). `tls` and every PeerState of
  // the list must outlive the checker (a reload stops it first).
  PeerHealthChecker(const config::PeerConfig& peer, const config::NodeHealthConfig& health,
                    const PeerTls& tls, NodeState& node, const std::vector<bool>& keep_state = {});
  ~PeerHealthChecker();  // stops the thread
  PeerHealthChecker(const PeerHealthChecker&) = delete;
  PeerHealthChecker& operator=(const PeerHealthChecker&) = delete;

  // Starts the thread; the first checks run at once.
  void start();
  void stop();

 private:
  EventLoopThread loop_;
  std::vector<std::unique_ptr<HealthProbe>> probes_;
};

}  // namespace edgepin::nodeproxy
