#include "node-proxy/run.h"

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <exception>

#include "common/log.h"
#include "node-proxy/runtime.h"

namespace edgepin::nodeproxy {

int run(const config::NodeConfigSet& config) {
  // Signals are taken synchronously by this thread only: block them before
  // any worker thread exists so that every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  log::set_level(config.proxy.log.level);
  log::set_format(config.proxy.log.format);

  std::unique_ptr<Runtime> runtime;
  try {
    runtime = std::make_unique<Runtime>(config);
  } catch (const std::exception& e) {
    log::error(e.what());
    return 1;
  }
  if (std::string err = runtime->start(); !err.empty()) {
    log::error(err);
    return 1;
  }
  for (;;) {
    timespec tick{1, 0};
    const int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        runtime->tick();
        continue;
      }
      log::error("sigtimedwait failed");
      break;
    }
    if (sig == SIGHUP) {
      log::warning("SIGHUP: configuration reload is not supported yet; restart to apply changes");
      continue;
    }
    log::info(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") + ", stopping (grace " +
              std::to_string(kStopGrace.count()) + " s)");
    break;
  }
  runtime->stop(kStopGrace);
  log::info("stopped");
  return 0;
}

}  // namespace edgepin::nodeproxy
