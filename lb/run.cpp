#include "lb/run.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <memory>

#include "common/admin_socket.h"
#include "common/log.h"
#include "lb/admin.h"
#include "lb/runtime.h"
#include "lb/stats_server.h"

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
  // The operator's views. Both read the runtime, so both stop before it.
  ProcessInfo process;
  process.pid = getpid();
  std::unique_ptr<StatsServer> stats;
  if (lb.stats) {
    stats = std::make_unique<StatsServer>(StatsServer::Options{.bind = lb.stats->bind},
                                          [&runtime, process] { return collect_stats(runtime, process); });
    if (std::string err = stats->start(); !err.empty()) {
      log::error(err);
      return 1;
    }
    log::info("stats on http://" + lb.stats->bind.toString() + "/stats (JSON: /stats;json, Prometheus: /metrics)");
  }
  AdminCommands commands(runtime, process);
  std::unique_ptr<AdminSocket> admin;
  if (lb.admin_socket) {
    AdminSocket::Options o;
    o.path = lb.admin_socket->path;
    o.mode = lb.admin_socket->mode;
    admin = std::make_unique<AdminSocket>(
        o, [&commands](std::string_view line) { return commands.handle(line); }, "lb-admin");
    if (std::string err = admin->start(); !err.empty()) {
      log::error(err);
      return 1;
    }
    log::info("admin socket on " + lb.admin_socket->path.string());
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
  admin.reset();
  stats.reset();
  runtime.stop(kStopGrace);
  log::info("stopped");
  return 0;
}

}  // namespace edgepin::lb
