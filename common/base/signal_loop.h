#pragma once
// The main thread's signal handling, shared by both binaries. Signals are
// taken synchronously (sigtimedwait) by the main thread only, so handlers
// run as ordinary code, never inside an async signal context:
//   SIGHUP           reload the configuration
//   SIGTERM, SIGINT  graceful stop; a second one during the grace period
//                    ends it at once
//   SIGPIPE          ignored (a write to a closed peer is an error return)
#include <signal.h>

#include <chrono>
#include <functional>

namespace edgepin {

class SignalLoop {
 public:
  struct Handlers {
    std::function<void()> reload;  // SIGHUP
    std::function<void()> tick;    // about once a second, and after each signal
  };

  // Blocks SIGHUP, SIGTERM and SIGINT in the calling thread and ignores
  // SIGPIPE. Call before any other thread exists: threads inherit the mask,
  // so no worker thread ever takes these signals.
  SignalLoop();

  // Dispatches signals until SIGTERM or SIGINT, which it returns.
  int run(const Handlers& handlers);

  // Why a graceful stop ended.
  enum class DrainEnd { Drained, GraceOver, Interrupted };
  // During a graceful stop: polls `remaining()` until it is 0, `grace`
  // has passed, or a second SIGTERM/SIGINT arrives. A SIGHUP then is
  // logged and ignored (the process is on its way out).
  DrainEnd drain(std::chrono::milliseconds grace, const std::function<size_t()>& remaining);

 private:
  sigset_t set_;
};

// "SIGTERM", "SIGINT", "SIGHUP", else "signal N".
const char* signal_name(int sig);

}  // namespace edgepin
