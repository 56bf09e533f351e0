#include "run.h"

#include <unistd.h>

#include <exception>
#include <memory>
#include <mutex>
#include <string>

#include "admin.h"
#include "admin_socket.h"
#include "config_diff.h"
#include "log.h"
#include "log_setup.h"
#include "metrics.h"
#include "runtime.h"
#include "service_notifier.h"
#include "signal_loop.h"

namespace edgepin::nodeproxy {

namespace {

// The status line systemd shows: "4 connections, Tomcat up, 2/2 peers up".
std::string status_line(Runtime& runtime) {
  NodeState& node = runtime.node();
  size_t peers = 0;
  size_t up = 0;
  {
    std::lock_guard lock(node.peers_mu);
    for (const auto& p : node.peers) {
      ++peers;
      if (p->up.load(std::memory_order_relaxed)) ++up;
    }
  }
  const size_t conns = runtime.active_connections();
  return std::to_string(conns) + (conns == 1 ? " connection, Tomcat " : " connections, Tomcat ") +
         (node.tomcat_up.load(std::memory_order_relaxed) ? "up" : "down") + ", " +
         std::to_string(up) + "/" + std::to_string(peers) + " peers up";
}

// SIGHUP: loads the directory again with the start-up loader (which opens
// and checks every certificate and key) and applies it. Anything the loader
// or OpenSSL refuses leaves the running configuration untouched.
void reload(Runtime& runtime, std::shared_ptr<const config::NodeConfigSet>& running) {
  auto next = std::make_shared<config::NodeConfigSet>();
  try {
    *next = config::load_node_proxy(running->dir, running->self.name);
  } catch (const std::exception& e) {
    log::error(std::string("reload failed: ") + e.what() + "; keeping the running config");
    return;
  }
  const config::ConfigDiff diff = config::diff_node_proxy(*running, *next);
  if (std::string err = runtime.reload(next); !err.empty()) {
    log::error("reload failed: " + err + "; keeping the running config");
    return;
  }
  log::apply(next->proxy.log);
  for (const auto& w : next->warnings) log::warning(w);
  running = std::move(next);
  // Certificates are re-read on every reload, whether or not their paths
  // changed (a renewal rewrites the same files).
  log::info("reload ok: " + diff.summary() +
            (runtime.has_tls() ? "; certificates re-read, ticket keys kept" : ""));
}

}  // namespace

int run(const config::NodeConfigSet& config) {
  // Blocks the signals before any thread exists, so every thread inherits
  // the mask and only this one takes them.
  SignalLoop signals;
  log::apply(config.proxy.log);
  // Type=notify: READY once everything listens, the reload and stop
  // transitions, and watchdog pings while the event loops turn.
  sd::ServiceNotifier systemd(sd::Notifier::from_environment());

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
  // The operator's views. Both read the runtime, so both stop before it.
  std::unique_ptr<StatsHttpServer> metrics;
  if (const auto& bind = config.proxy.stats.metrics_bind) {
    metrics = make_metrics_server(*bind, [&runtime] { return runtime->stats_source(); });
    if (std::string err = metrics->start(); !err.empty()) {
      log::error(err);
      return 1;
    }
    log::info("metrics on http://" + bind->to_string() + "/metrics (stats: /stats, /stats;json)");
  }
  AdminCommands commands(*runtime, getpid());
  std::unique_ptr<AdminSocket> admin;
  if (const auto& a = config.proxy.admin_socket) {
    AdminSocket::Options o;
    o.path = a->path;
    o.mode = a->mode;
    admin = std::make_unique<AdminSocket>(
        o, [&commands](std::string_view line) { return commands.handle(line); }, "np-admin");
    if (std::string err = admin->start(); !err.empty()) {
      log::error(err);
      return 1;
    }
    log::info("admin socket on " + a->path.string());
  }

  // The running configuration; the runtime keeps the start-up one (and
  // every reloaded one still in use) alive itself.
  auto running = std::make_shared<const config::NodeConfigSet>(config);
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
  const auto grace = running->proxy.shutdown_grace;
  systemd.stopping("stopping: " + std::to_string(runtime->active_connections()) +
                   " connections draining");
  log::info(std::string("received ") + signal_name(sig) +
            ", stopping: listeners closed, idle connections closed, " +
            std::to_string(runtime->active_connections()) + " connections get up to " +
            std::to_string(grace.count()) + " ms to finish their requests");
  runtime->stop_accepting();
  const auto end = signals.drain(grace, [&] { return runtime->active_connections(); });
  if (end == SignalLoop::DrainEnd::GraceOver) log::info("grace period over");
  admin.reset();
  metrics.reset();
  runtime->close_all();
  log::info("stopped");
  return 0;
}

}  // namespace edgepin::nodeproxy
