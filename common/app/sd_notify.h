#pragma once
// systemd's service notification protocol (sd_notify(3)), for Type=notify
// units: READY=1 once listening, RELOADING=1 ... READY=1 around a SIGHUP
// reload, STOPPING=1 on SIGTERM, STATUS= lines, and WATCHDOG=1 pings.
//
// The protocol is one datagram of newline-separated KEY=VALUE lines to the
// AF_UNIX socket named in $NOTIFY_SOCKET (a path, or "@name" for the
// abstract namespace); systemd documents it as a stable interface that
// programs may implement themselves, which this does instead of linking
// libsystemd: no new runtime dependency, and the same binary runs where
// libsystemd is absent. Without $NOTIFY_SOCKET (run by hand, by a test, by
// another supervisor) every call does nothing.
//
// Threads: send() and the message helpers may be called from any thread
// (one datagram per call, no shared buffer); the service lifecycle calls
// them from the main thread.
#include <chrono>
#include <string>
#include <string_view>

namespace edgepin::sd {

class Notifier {
 public:
  // Reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID. The watchdog
  // is on only when WATCHDOG_USEC is a positive number and WATCHDOG_PID is
  // unset or this process's PID (systemd sets it for the main process;
  // a child that inherited the variables must not ping for its parent).
  static Notifier from_environment();
  // A notifier sending to `socket_path` (empty: disabled) with the given
  // watchdog interval (0: off). For tests.
  Notifier(std::string socket_path, std::chrono::microseconds watchdog);
  Notifier() = default;
  ~Notifier();
  Notifier(Notifier&& other) noexcept;
  Notifier& operator=(Notifier&& other) noexcept;
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  bool enabled() const { return !socket_path_.empty(); }
  // WATCHDOG_USEC: systemd kills the service when no WATCHDOG=1 arrives for
  // this long; 0 when the unit has no WatchdogSec= (or without systemd).
  std::chrono::microseconds watchdog_interval() const { return watchdog_; }

  // Sends `message` as one datagram. Returns false if disabled or the send
  // failed (logged once per kind of failure, never thrown: a missing
  // supervisor must not stop the service).
  bool send(std::string_view message);

  bool ready(std::string_view status) { return send(with_status("READY=1", status)); }
  // RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC now), which systemd
  // 253+ requires to match the reload to its ExecReload; older systemd
  // ignores the field.
  bool reloading(std::string_view status);
  bool stopping(std::string_view status) { return send(with_status("STOPPING=1", status)); }
  bool status(std::string_view status) { return send(with_status("", status)); }
  bool watchdog() { return send("WATCHDOG=1"); }

  // "KEY=1\nSTATUS=<status>" with control characters in `status` replaced
  // (a newline would start a new assignment). Exposed for tests.
  static std::string with_status(std::string_view head, std::string_view status);

 private:
  void close_socket();

  std::string socket_path_;
  std::chrono::microseconds watchdog_{0};
  int fd_ = -1;
  bool reported_failure_ = false;
};

}  // namespace edgepin::sd
