#pragma once
// What a daemon tells systemd over its life (Type=notify units), on top of
// sd::Notifier:
//   ready()      READY=1 once every listener is bound and the loops run
//   reloading()  RELOADING=1 (+ MONOTONIC_USEC) when a SIGHUP reload starts
//   reloaded()   READY=1 when it is over, applied or refused (the daemon
//                keeps serving either way)
//   stopping()   STOPPING=1 on SIGTERM/SIGINT, before the graceful drain
//   tick()       STATUS= when the status line changed, and WATCHDOG=1
//
// The watchdog ping is a promise that the daemon works, so it is sent only
// while every event loop thread is turning: each loop beats a heartbeat
// timer (common/io/event_loop.h), and a loop that has not beaten for half
// the watchdog interval (a worker stuck in a callback, a deadlock) withholds
// the ping; systemd then restarts the service after WatchdogSec=. tick()
// runs on the main thread, so a stuck main thread stops the pings as well.
// Pings go out every half interval (systemd's advice), at the granularity of
// the caller's tick (about a second): WatchdogSec= below 2 s is too short.
//
// Main thread only.
#include <chrono>
#include <string>

#include "sd_notify.h"

namespace edgepin::sd {

class ServiceNotifier {
 public:
  using Clock = std::chrono::steady_clock;

  explicit ServiceNotifier(Notifier notifier);

  bool enabled() const { return notifier_.enabled(); }
  std::chrono::microseconds watchdog_interval() const { return notifier_.watchdog_interval(); }
  // How long a loop may go without a heartbeat before pings stop.
  Clock::duration stall_limit() const { return notifier_.watchdog_interval() / 2; }

  void ready(const std::string& status);
  void reloading();
  void reloaded(const std::string& status);
  void stopping(const std::string& status);
  // About once a second: `status` is the current one-line status
  // ("12 connections, 3/3 nodes up"). Sends it if it changed, and a
  // watchdog ping if one is due and no loop is stalled.
  void tick(const std::string& status, Clock::time_point now = Clock::now());

  // For tests and logs: whether the last due ping was withheld.
  bool stalled() const { return stalled_; }

 private:
  Notifier notifier_;
  std::string last_status_;
  Clock::time_point last_ping_{};
  bool stalled_ = false;
};

}  // namespace edgepin::sd
