#include "run.h"

#include <unistd.h>

#include <exception>
#include <memory>

#include "admin.h"
#include "admin_socket.h"
#include "config.h"
#include "config_diff.h"
#include "log.h"
#include "log_setup.h"
#include "runtime.h"
#include "service_notifier.h"
#include "signal_loop.h"
#include "stats_server.h"

namespace edgepin::lb {

namespace {

// The status line systemd shows: "12 connections, 3/3 nodes up" (a node is
// up when its health checks pass and no admin put it in drain or maint, as
// "UP" on the stats page).
std::string status_line(const Runtime& runtime) {
  size_t nodes = 0;
  size_t up = 0;
  for (const auto& s : runtime.servers()) {
    if (s->removed.load(std::memory_order_relaxed)) continue;
    ++nodes;
    if (s->healthy.load(std::memory_order_relaxed) &&
        s->admin.load(std::memory_order_relaxed) == AdminState::Ready)
      ++up;
  }
  const size_t conns = runtime.active_sessions();
  return std::to_string(conns) + (conns == 1 ? " connection, " : " connections, ") +
         std::to_string(up) + "/" + std::to_string(nodes) + " nodes up";
}

// SIGHUP: loads the directory again with the start-up loader and applies it.
// A config the loader refuses, or one the runtime cannot apply (a new port
// in use), leaves the running one untouched.
void reload(Runtime& runtime, config::LbConfigSet& running) {
  config::LbConfigSet next;
  try {
    next = config::load_lb(running.dir);
  } catch (const std::exception& e) {
    log::error(std::string("reload failed: ") + e.what() + "; keeping the running config");
    return;
  }
  const config::ConfigDiff diff = config::diff_lb(running, next);
  if (std::string err = runtime.reload(next.cluster, next.lb); !err.empty()) {
    log::error("reload failed: " + err + "; keeping the running config");
    return;
  }
  log::apply(next.lb.log);
  for (const auto& w : next.warnings) log::warning(w);
  // What needs a restart keeps its running value: remember those, so the
  // next diff still reports them.
  next.lb.threads = running.lb.threads;
  next.lb.maxconn = running.lb.maxconn;
  next.lb.stick_table = running.lb.stick_table;
  next.lb.stats = running.lb.stats;
  next.lb.admin_socket = running.lb.admin_socket;
  running = std::move(next);
  log::info("reload ok: " + diff.summary());
}

}  // namespace

int run(const std::filesystem::path& config_dir, const config::ClusterConfig& cluster,
        const config::LbConfig& lb) {
  // Blocks the signals before any thread exists, so every thread inherits
  // the mask and only this one takes them.
  SignalLoop signals;
  log::apply(lb.log);
  // Type=notify: READY once everything listens, the reload and stop
  // transitions, and watchdog pings while the event loops turn.
  sd::ServiceNotifier systemd(sd::Notifier::from_environment());
  config::LbConfigSet running;
  running.dir = config_dir;
  running.cluster = cluster;
  running.lb = lb;

  std::unique_ptr<Runtime> runtime;
  try {
    runtime = std::make_unique<Runtime>(cluster, lb);
  } catch (const std::exception& e) {
    log::error(e.what());
    return 1;
  }
  if (std::string err = runtime->start(); !err.empty()) {
    log::error(err);
    return 1;
  }
  // The operator's views. Both read the runtime, so both stop before it.
  ProcessInfo process;
  process.pid = getpid();
  std::unique_ptr<StatsServer> stats;
  if (lb.stats) {
    stats = std::make_unique<StatsServer>(
        StatsServer::Options{.bind = lb.stats->bind},
        [&runtime, process] { return collect_stats(*runtime, process); });
    if (std::string err = stats->start(); !err.empty()) {
      log::error(err);
      return 1;
    }
    log::info("stats on http://" + lb.stats->bind.to_string() +
              "/stats (JSON: /stats;json, Prometheus: /metrics)");
  }
  AdminCommands commands(*runtime, process);
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

  systemd.ready(status_line(*runtime));
  const int sig = signals.run({.reload =
                                   [&] {
                                     systemd.reloading();
                                     reload(*runtime, running);
                                     systemd.reloaded(status_line(*runtime));
                                   },
                               .tick =
                                   [&] {
                                     runtime->tick();
                                     systemd.tick(status_line(*runtime));
                                   }});
  const auto grace = running.lb.shutdown_grace;
  systemd.stopping("stopping: " + std::to_string(runtime->active_sessions()) +
                   " connections draining");
  log::info(std::string("received ") + signal_name(sig) + ", stopping: listeners closed, " +
            std::to_string(runtime->active_sessions()) + " connections get up to " +
            std::to_string(grace.count()) + " ms to finish");
  runtime->stop_accepting();
  const auto end = signals.drain(grace, [&] { return runtime->active_sessions(); });
  if (end == SignalLoop::DrainEnd::GraceOver) log::info("grace period over");
  admin.reset();
  stats.reset();
  runtime->close_all();
  log::info("stopped");
  return 0;
}

}  // namespace edgepin::lb
