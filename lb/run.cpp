#include "lb/run.h"

#include <signal.h>

#include <cerrno>
#include <chrono>

#include "common/log.h"
#include "lb/runtime.h"

namespace edgepin::lb {

namespace {
// How long SIGTERM lets established connections finish (HAProxy's
// hard-stop-after plays this role there).
constexpr std::chrono::seconds kStopGrace{10};
}  // namespace

int run(const std::filesystem::path& config_dir, const config::ClusterConfig& cluster, const config::LbConfig& lb) {
  (void)config_dir;
  // Signals are taken synchronously by this thread only: block them before
  // any worker thread exists so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A peer that closed must not kill the process through a write.
  signal(SIGPIPE, SIG_IGN);

  log::set_level(lb.log.level);
  log::set_format(lb.log.format);

  Runtime runtime(cluster, lb);
  if (std::string err = runtime.start(); !err.empty()) {
    log::error(err);
    return 1;
  }
  for (;;) {
    timespec tick{1, 0};
    int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        runtime.tick();
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
  runtime.stop(kStopGrace);
  log::info("stopped");
  return 0;
}

}  // namespace edgepin::lb
