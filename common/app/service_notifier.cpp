#include "service_notifier.h"

#include <utility>

#include "event_loop.h"
#include "log.h"

namespace edgepin::sd {

ServiceNotifier::ServiceNotifier(Notifier notifier) : notifier_(std::move(notifier)) {
  const auto interval = notifier_.watchdog_interval();
  if (interval.count() > 0) {
    log::info("systemd watchdog: " + std::to_string(interval.count() / 1000) +
              " ms; pinging every " + std::to_string(interval.count() / 2000) +
              " ms while every event loop turns");
    if (interval < std::chrono::seconds(2))
      log::warning("WatchdogSec below 2 s: pings follow a 1 s tick and may come too late");
  }
}

void ServiceNotifier::ready(const std::string& status) {
  last_status_ = status;
  notifier_.ready(status);
  // The first interval starts now: the loops have just been started.
  last_ping_ = Clock::now();
  if (notifier_.watchdog_interval().count() > 0) notifier_.watchdog();
}

void ServiceNotifier::reloading() { notifier_.reloading("reloading the configuration"); }

void ServiceNotifier::reloaded(const std::string& status) {
  last_status_ = status;
  notifier_.send(Notifier::with_status("READY=1", status));
}

void ServiceNotifier::stopping(const std::string& status) {
  last_status_ = status;
  notifier_.stopping(status);
}

void ServiceNotifier::tick(const std::string& status, Clock::time_point now) {
  if (!notifier_.enabled()) return;
  std::string shown = status;
  const auto interval = notifier_.watchdog_interval();
  if (interval.count() > 0 && now - last_ping_ >= interval / 2) {
    const std::optional<LoopLag> lag = most_lagging_loop(now);
    if (lag && lag->behind >= stall_limit()) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(lag->behind).count();
      if (!stalled_) {
        log::error("event loop " + lag->name + " has not turned for " + std::to_string(ms) +
                   " ms: withholding the systemd watchdog ping (systemd restarts the service if "
                   "this lasts)");
      }
      stalled_ = true;
      shown = "event loop " + lag->name + " stalled for " + std::to_string(ms / 1000) + " s";
    } else {
      if (stalled_) log::info("every event loop turns again: watchdog pings resume");
      stalled_ = false;
      notifier_.watchdog();
      last_ping_ = now;
    }
  }
  if (shown != last_status_) {
    notifier_.status(shown);
    last_status_ = std::move(shown);
  }
}

}  // namespace edgepin::sd
