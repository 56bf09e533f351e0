#include "admin.h"

#include <nlohmann/json.hpp>

#include <future>
#include <vector>

#include "admin_socket.h"
#include "event_loop.h"
#include "log.h"
#include "runtime.h"
#include "stats.h"
#include "worker.h"

namespace edgepin::nodeproxy {
namespace {

constexpr std::string_view kHelp =
    "help                          this list\n"
    "show info [json]              node, version, uptime, pid, state, Tomcat, connections, "
    "requests\n"
    "show stat [json]              every counter of the stats page\n"
    "show sessions [json]          each open client connection, per worker\n"
    "set node state ready|drain    drain: health answers 503, open connections are still served\n"
    "quit                          close this connection";

using admin::error;
using admin::quoted;
using admin::words_of;

const char* state_name(bool draining) { return draining ? "drain" : "ready"; }

}  // namespace

AdminCommands::AdminCommands(Runtime& runtime, pid_t pid) : runtime_(runtime), pid_(pid) {}

std::string AdminCommands::handle(std::string_view line) {
  const std::vector<std::string_view> w = words_of(line);
  if (w.empty()) return {};
  if (w.size() == 1 && w[0] == "help") return std::string(kHelp);
  if (w[0] == "show" && w.size() >= 2 && w.size() <= 3) {
    const bool json = w.size() == 3;
    if (json && w[2] != "json") return error("unknown option " + quoted(w[2]) + " (only 'json')");
    if (w[1] == "info") return show_info(json);
    if (w[1] == "stat") return show_stat(json);
    if (w[1] == "sessions") return show_sessions(json);
    return error("unknown command " + quoted(line) + "; try 'help'");
  }
  if (w.size() == 4 && w[0] == "set" && w[1] == "node" && w[2] == "state") return set_state(w[3]);
  if (w[0] == "set" && w.size() >= 2 && w[1] == "node")
    return error("usage: set node state ready|drain");
  return error("unknown command " + quoted(line) + "; try 'help'");
}

std::string AdminCommands::show_info(bool json) const {
  const StatsSnapshot s = collect_stats(runtime_.stats_source());
  if (json) {
    nlohmann::ordered_json j = {{"name", "edgepin-node-proxy"},
                                {"node", s.node_name},
                                {"tag", s.node_tag},
                                {"cluster", s.cluster_name},
                                {"version", s.version},
                                {"pid", pid_},
                                {"uptime_s", s.uptime_s},
                                {"workers", s.workers},
                                {"state", state_name(s.draining)},
                                {"tomcat", s.upstream},
                                {"tomcat_up", s.tomcat_up},
                                {"current_connections", s.connections_active},
                                {"connections_total", s.connections_accepted},
                                {"requests_total", s.requests}};
    return j.dump(1);
  }
  std::string out;
  out += "Name: edgepin-node-proxy\n";
  out += "Node: " + s.node_name + "\n";
  out += "Tag: " + std::to_string(s.node_tag) + "\n";
  out += "Cluster: " + s.cluster_name + "\n";
  out += "Version: " + s.version + "\n";
  out += "Pid: " + std::to_string(pid_) + "\n";
  out += "Uptime_sec: " + std::to_string(s.uptime_s) + "\n";
  out += "Workers: " + std::to_string(s.workers) + "\n";
  out += std::string("State: ") + state_name(s.draining) + "\n";
  out += "Tomcat: " + s.upstream + "\n";
  out += std::string("TomcatUp: ") + (s.tomcat_up ? "1" : "0") + "\n";
  out += "CurrConns: " + std::to_string(s.connections_active) + "\n";
  out += "CumConns: " + std::to_string(s.connections_accepted) + "\n";
  out += "CumReq: " + std::to_string(s.requests) + "\n";
  return out;
}

std::string AdminCommands::show_stat(bool json) const {
  // The stats page's JSON is the reference; the text form flattens it to
  // one "a.b.c: value" line per leaf so that grep and awk can read it.
  const StatsSnapshot s = collect_stats(runtime_.stats_source());
  const nlohmann::json doc = nlohmann::json::parse(render_stats(s, true).body);
  if (json) return doc.dump(1);
  std::string out;
  auto walk = [&out](auto&& self, const nlohmann::json& j, const std::string& prefix) -> void {
    if (j.is_object()) {
      for (auto it = j.begin(); it != j.end(); ++it)
        self(self, it.value(), prefix.empty() ? it.key() : prefix + "." + it.key());
      return;
    }
    out += prefix + ": " + (j.is_string() ? j.get<std::string>() : j.dump()) + "\n";
  };
  walk(walk, doc, "");
  return out;
}

std::string AdminCommands::show_sessions(bool json) const {
  // Each worker lists its own connections on its own thread (they never
  // leave it); a worker too busy to answer within the bound is reported,
  // not waited for.
  constexpr size_t kLimit = 10000;  // per worker
  constexpr std::chrono::milliseconds kAnswerTimeout{1000};
  const StatsSource src = runtime_.stats_source();
  const bool draining = src.node && src.node->draining.load(std::memory_order_relaxed);
  std::vector<std::future<Worker::Connections>> answers;
  for (const auto& w : runtime_.workers()) {
    Worker* worker = w.get();
    answers.push_back(
        ask(worker->loop(), [worker] { return worker->describe_connections(kLimit); }));
  }
  const auto deadline = std::chrono::steady_clock::now() + kAnswerTimeout;
  struct WorkerList {
    bool answered = false;
    Worker::Connections connections;
  };
  std::vector<WorkerList> lists(answers.size());
  uint64_t total = 0;
  for (size_t i = 0; i < answers.size(); ++i) {
    if (answers[i].wait_until(deadline) != std::future_status::ready) continue;
    try {
      lists[i].connections = answers[i].get();
      lists[i].answered = true;
    } catch (const std::future_error&) {
      // The worker's loop stopped before it ran the task: not answered.
    }
    total += lists[i].connections.http.size() + lists[i].connections.handshaking;
  }
  auto describe = [](const ConnectionInfo& c) {
    nlohmann::ordered_json j = {
        {"listener", c.client.listener},
        {"client", c.client.client.to_string()},
        {"tls", c.client.tls ? c.client.tls_version : "-"},
        {"resumed", c.client.tls_resumed},
        {"sni", c.client.sni.empty() ? "-" : c.client.sni},
        {"peer_node", c.client.peer_node.empty() ? "-" : c.client.peer_node},
        {"state", c.state},
        {"requests", c.requests},
        {"age_ms", c.age.count()},
        {"request", c.request.empty() ? "-" : c.request},
        {"destination", c.destination.empty() ? "-" : c.destination}};
    return j;
  };
  if (json) {
    nlohmann::ordered_json j;
    j["state"] = state_name(draining);
    j["current"] = total;
    j["workers"] = nlohmann::ordered_json::array();
    j["list"] = nlohmann::ordered_json::array();
    j["unanswered_workers"] = nlohmann::ordered_json::array();
    for (size_t i = 0; i < lists.size(); ++i) {
      const WorkerList& l = lists[i];
      if (!l.answered) j["unanswered_workers"].push_back(i);
      j["workers"].push_back({{"worker", i},
                              {"sessions", l.connections.http.size() + l.connections.handshaking},
                              {"handshaking", l.connections.handshaking}});
      for (const ConnectionInfo& c : l.connections.http) {
        nlohmann::ordered_json line = {{"worker", i}};
        line.update(describe(c));
        j["list"].push_back(std::move(line));
      }
    }
    return j.dump(1);
  }
  std::string out =
      "# sessions: " + std::to_string(total) + " (state " + state_name(draining) + ")\n";
  for (size_t i = 0; i < lists.size(); ++i) {
    const WorkerList& l = lists[i];
    out +=
        "worker " + std::to_string(i) + ": " +
        std::to_string(l.connections.http.size() + l.connections.handshaking) + " (" +
        std::to_string(l.connections.handshaking) + " in handshake)" +
        (l.answered ? ""
                    : " did not answer within " + std::to_string(kAnswerTimeout.count()) + " ms") +
        "\n";
  }
  out += "# list\n";
  for (size_t i = 0; i < lists.size(); ++i) {
    for (const ConnectionInfo& c : lists[i].connections.http) {
      out += "worker=" + std::to_string(i);
      const nlohmann::ordered_json fields = describe(c);
      for (auto it = fields.begin(); it != fields.end(); ++it)
        out += " " + it.key() + "=" + (it->is_string() ? it->get<std::string>() : it->dump());
      out += "\n";
    }
  }
  return out;
}

std::string AdminCommands::set_state(std::string_view state) {
  bool drain;
  if (state == "ready") {
    drain = false;
  } else if (state == "drain") {
    drain = true;
  } else {
    return error("unknown state " + quoted(state) + " (expected ready or drain)");
  }
  const bool was = runtime_.node().draining.exchange(drain, std::memory_order_relaxed);
  if (was != drain)
    log::warning(std::string("node set to ") + state_name(drain) + " (was " + state_name(was) +
                 ") by the admin socket" +
                 (drain ? ": health answers 503, open connections stay" : ""));
  return std::string("node: state ") + state_name(drain) + " (was " + state_name(was) + ")";
}

}  // namespace edgepin::nodeproxy
