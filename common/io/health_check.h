#pragma once
// One active health-check engine for both binaries: the lb's servers and
// the node-proxy's Tomcat and peers. It runs on a thread of its own, so a
// slow check never delays a client. Per target:
//   - every `interval` one check by the target's probe (health_probe.h:
//     tcp, tls-hello, http, over TLS or not), given up after `timeout`;
//   - `fall` failed checks in a row mark an up target down, `rise`
//     successes in a row mark a down target up (HAProxy's semantics);
//   - each transition is logged once (warning) and counted, and every
//     check is counted;
//   - the verdict is a HealthState (health_state.h) the data path reads;
//     a passive report_failure() there marks it down at once, and this
//     engine then needs `rise` successes counted from the report on.
// How a target starts (Start):
//   Up         up, `fall` failures take it down (the lb: servers start up,
//              as in HAProxy);
//   FirstCheck down until the first check, whose result is taken as is (the
//              node-proxy: one started before its Tomcat never says healthy);
//   Keep       the verdict in place stands, as if the last rise (up) or fall
//              (down) checks had agreed with it (a checker restarted by a
//              reload neither marks a live target down nor a dead one up).
// A target's first check runs at once, or at a random point of the first
// interval (`spread_first`, so many servers are not checked together).
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "counter.h"
#include "event_loop.h"
#include "health_state.h"

namespace edgepin::health {

#define EDGEPIN_HEALTH_OUTCOMES(X)                                         \
  X(None, "none") /* not checked yet */                                    \
  X(Ok, "ok")                                                              \
  X(ConnectFailed, "connect_failed") /* refused, unreachable */            \
  X(Timeout, "timeout")              /* no verdict within the timeout */   \
  X(Closed, "closed")                /* closed before answering */         \
  X(BadStatus, "bad_status")         /* http: status the target refuses */ \
  X(BadResponse, "bad_response")     /* not HTTP / not TLS */              \
  X(TlsAlert, "tls_alert")           /* tls-hello: answered an alert */    \
  X(TlsFailed, "tls_failed")         /* over TLS: handshake refused */

enum class Outcome : uint8_t {
#define EDGEPIN_X(name, text) name,
  EDGEPIN_HEALTH_OUTCOMES(EDGEPIN_X)
#undef EDGEPIN_X
};
inline constexpr size_t kOutcomeCount = 0
#define EDGEPIN_X(name, text) +1
    EDGEPIN_HEALTH_OUTCOMES(EDGEPIN_X)
#undef EDGEPIN_X
    ;
const char* to_string(Outcome o);

struct Result {
  Outcome outcome = Outcome::None;
  uint16_t detail = 0;  // HTTP status, TLS version or alert; 0: none
};

// One kind of check. The engine calls attach() once, then begin() for each
// check on its loop thread; the probe calls `done` exactly once per begin()
// (possibly from inside it), unless the engine calls cancel() first
// (timeout), which must free whatever the check holds.
class Probe {
 public:
  using Done = std::function<void(Result)>;
  virtual ~Probe() = default;
  void attach(event_base* base, Done done) {
    base_ = base;
    done_ = std::move(done);
  }
  virtual void begin() = 0;
  virtual void cancel() = 0;
  // "tcp", "tls-hello", "http", for log lines.
  virtual const char* kind() const = 0;

 protected:
  event_base* base_ = nullptr;
  Done done_;
};

enum class Start : uint8_t { Up, FirstCheck, Keep };

struct TargetSettings {
  std::string label;  // "server node1", "Tomcat at 127.0.0.1:8080"
  std::chrono::milliseconds interval{2000};
  std::chrono::milliseconds timeout{1000};
  uint32_t rise = 2;
  uint32_t fall = 3;
  Start start = Start::Up;
  bool spread_first = false;
  HealthState* state = nullptr;  // must outlive the engine
  // Called on the engine's thread after every check (the lb keeps the last
  // outcome per server for its stats). Optional.
  std::function<void(Result, std::chrono::microseconds took)> on_result;
};

// Per target; written by the engine's thread only.
struct TargetCounters {
  Counter checks;
  Counter failed_checks;
  Counter went_up;
  Counter went_down;  // by active checks (passive ones: HealthState)
};

class HealthChecker {
 public:
  // `thread_name`: "lb-health", "np-health".
  explicit HealthChecker(std::string thread_name);
  ~HealthChecker();  // stops the thread, releases the targets
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // Before start(). Returns the target's index (counters()).
  size_t add(TargetSettings settings, std::unique_ptr<Probe> probe);
  void start();
  void stop();

  size_t size() const { return targets_.size(); }
  const TargetCounters& counters(size_t index) const;
  event_base* base() { return loop_.base(); }

 private:
  class Target;
  EventLoopThread loop_;
  std::vector<std::unique_ptr<Target>> targets_;
  bool started_ = false;
};

}  // namespace edgepin::health
