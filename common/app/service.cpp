#include "service.h"

#include "log.h"

namespace edgepin::app {

Service::Service() = default;

void Service::ready() {
  if (hooks_.on_ready) hooks_.on_ready();
}

void Service::reload(const Parts& parts) {
  if (hooks_.on_reload_begin) hooks_.on_reload_begin();
  const Parts::ReloadResult r = parts.reload();
  if (r.applied) {
    log::info("reload ok: " + r.message);
  } else {
    log::error("reload failed: " + r.message + "; keeping the running config");
  }
  if (hooks_.on_reload_end) hooks_.on_reload_end(r.applied);
}

void Service::tick(const Parts& parts, bool draining) {
  if (!draining && parts.tick) parts.tick();
  if (!hooks_.on_tick) return;
  ServiceStatus s;
  if (parts.status) s.text = parts.status();
  if (parts.loops_turning) s.loops_turning = parts.loops_turning();
  s.draining = draining;
  hooks_.on_tick(s);
}

int Service::run(const Parts& parts) {
  const int sig =
      signals_.run({.reload = [&] { reload(parts); }, .tick = [&] { tick(parts, false); }});
  const std::chrono::milliseconds grace = parts.grace();
  if (hooks_.on_stopping) hooks_.on_stopping();
  log::info(std::string("received ") + signal_name(sig) + ", stopping: " + parts.stopping_what +
            ", " + std::to_string(parts.active()) + " connections get up to " +
            std::to_string(grace.count()) + " ms to finish");
  parts.stop_accepting();
  const auto end = signals_.drain(grace, [&] {
    // The drain polls often; the hooks get about one tick a second.
    const auto now = std::chrono::steady_clock::now();
    if (now - last_drain_tick_ >= std::chrono::seconds(1)) {
      last_drain_tick_ = now;
      tick(parts, true);
    }
    return parts.active();
  });
  if (end == SignalLoop::DrainEnd::GraceOver) log::info("grace period over");
  parts.close_all();
  log::info("stopped");
  return 0;
}

}  // namespace edgepin::app
