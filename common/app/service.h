#pragma once
// The process lifecycle both binaries share, after start-up:
//   SIGHUP           reload: the binary loads and applies its configuration
//                    directory; a directory the loader refuses, or one the
//                    runtime cannot apply, is logged ("reload failed: ...;
//                    keeping the running config") and the running one kept;
//   SIGTERM, SIGINT  graceful stop: listeners close, established
//                    connections get the grace period to finish, the rest
//                    are closed, exit 0; a second signal ends the grace
//                    period at once.
// Signals are taken synchronously by the main thread (signal_loop.h), so
// construct the Service before any other thread exists.
//
// Hook points for a process manager (sd_notify: READY, RELOADING, STOPPING,
// STATUS, WATCHDOG); all optional, all called on the main thread:
//   on_ready         the binary serves (call ready() after start-up);
//   on_reload_begin  a SIGHUP arrived, before the directory is read;
//   on_reload_end    after it: applied (true) or refused (false);
//   on_stopping      SIGTERM/SIGINT: the graceful stop begins;
//   on_tick          about once a second while running and while draining,
//                    with the binary's status line and whether its event
//                    loops are turning (see Parts::status, loops_turning).
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>

#include "signal_loop.h"

namespace edgepin::app {

struct ServiceStatus {
  std::string text;           // "3 connections, 2/3 nodes up"
  bool loops_turning = true;  // every event loop answered recently
  bool draining = false;      // in the graceful stop
};

struct ServiceHooks {
  std::function<void()> on_ready;
  std::function<void()> on_reload_begin;
  std::function<void(bool applied)> on_reload_end;
  std::function<void()> on_stopping;
  std::function<void(const ServiceStatus&)> on_tick;
};

class Service {
 public:
  // What the binary provides. reload, active, stop_accepting, close_all
  // and grace are required; the others optional.
  struct Parts {
    struct ReloadResult {
      bool applied = false;
      std::string message;  // why it was refused, or what changed
    };
    // Loads and applies the configuration directory.
    std::function<ReloadResult()> reload;
    // Once a second while running (expiry, key rotation).
    std::function<void()> tick;
    // Connections still open (the graceful stop waits for 0).
    std::function<size_t()> active;
    // Closes the listeners and asks open connections to finish.
    std::function<void()> stop_accepting;
    // Closes what is left, after the grace period.
    std::function<void()> close_all;
    // The grace period of the running configuration.
    std::function<std::chrono::milliseconds()> grace;
    // For on_tick.
    std::function<std::string()> status;
    std::function<bool()> loops_turning;
    // The stop line's account of what stopping does, after "stopping: "
    // (default: "listeners closed").
    std::string stopping_what = "listeners closed";
  };

  Service();  // blocks the signals: before any thread exists
  ServiceHooks& hooks() { return hooks_; }

  // Tells the hooks the binary serves.
  void ready();
  // Runs until SIGTERM/SIGINT, then the graceful stop; returns the exit code.
  int run(const Parts& parts);

 private:
  void reload(const Parts& parts);
  void tick(const Parts& parts, bool draining);

  SignalLoop signals_;
  ServiceHooks hooks_;
  std::chrono::steady_clock::time_point last_drain_tick_{};
};

}  // namespace edgepin::app
