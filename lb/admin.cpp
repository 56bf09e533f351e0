#include "admin.h"

#include "admin_socket.h"

#include <future>
#include <memory>
#include <vector>

#include "admin_socket.h"
#include "event_loop.h"
#include "log.h"
#include "runtime.h"
#include "session.h"

namespace edgepin::lb {

namespace {

constexpr std::string_view kHelp =
    "help                                      this list\n"
    "show info [json]                          version, uptime, pid, threads, connections\n"
    "show stat [json]                          frontends, servers and the stick table\n"
    "show table [json]                         stick table entries (kind, key, server, expiry)\n"
    "clear table                               remove every stick table entry\n"
    "set server NAME state ready|drain|maint   ready: new clients; drain: only its bound clients; "
    "maint: none\n"
    "show sessions [json]                      sessions per worker, frontend and server, then each "
    "session\n"
    "quit                                      close this connection";

using admin::error;
using admin::quoted;
using admin::words_of;

}  // namespace

AdminCommands::AdminCommands(const Runtime& runtime, ProcessInfo process)
    : runtime_(runtime), process_(process) {}

std::string AdminCommands::handle(std::string_view line) {
  std::vector<std::string_view> w = words_of(line);
  if (w.empty()) return {};
  auto is = [&](std::initializer_list<std::string_view> words) {
    if (w.size() != words.size()) return false;
    size_t i = 0;
    for (std::string_view x : words)
      if (w[i++] != x) return false;
    return true;
  };
  if (is({"help"})) return std::string(kHelp);
  if (w[0] == "show" && w.size() >= 2 && w.size() <= 3) {
    const bool json = w.size() == 3;
    if (json && w[2] != "json") return error("unknown option " + quoted(w[2]) + " (only 'json')");
    if (w[1] == "info") return show_info(json);
    if (w[1] == "stat") return show_stat(json);
    if (w[1] == "table") return show_table(json);
    if (w[1] == "sessions") return show_sessions(json);
    return error("unknown command " + quoted(line) + "; try 'help'");
  }
  if (is({"clear", "table"})) return clear_table();
  if (w.size() == 5 && w[0] == "set" && w[1] == "server" && w[3] == "state")
    return set_server(w[2], w[4]);
  if (w[0] == "set" && w.size() >= 2 && w[1] == "server")
    return error("usage: set server NAME state ready|drain|maint");
  return error("unknown command " + quoted(line) + "; try 'help'");
}

std::string AdminCommands::show_info(bool json) const {
  LbStats s = collect_stats(runtime_, process_);
  size_t up = 0;
  for (const ServerStats& v : s.servers) up += v.status == ServerStatus::Up;
  if (json) {
    nlohmann::ordered_json j = to_json(s)["info"];
    j["current_connections"] = s.current;
    j["connections_total"] = s.total;
    j["servers"] = s.servers.size();
    j["servers_up"] = up;
    j["stick_table_entries"] = s.stick_table.counters.entries;
    j["stick_table_capacity"] = s.stick_table.capacity;
    return j.dump(1);
  }
  std::string out;
  out += "Name: edgepin-lb\n";
  out += "Version: " + s.version + "\n";
  out += "Pid: " + std::to_string(s.pid) + "\n";
  out += "Uptime: " + format_duration(s.uptime_s) + "\n";
  out += "Uptime_sec: " + std::to_string(s.uptime_s) + "\n";
  out += "Threads: " + std::to_string(s.threads) + "\n";
  out += "Maxconn: " + std::to_string(s.maxconn) + "\n";
  out += "CurrConns: " + std::to_string(s.current) + "\n";
  out += "MaxconnPauses: " + std::to_string(s.maxconn_pauses) + "\n";
  out += "CumConns: " + std::to_string(s.total) + "\n";
  out += "Servers: " + std::to_string(s.servers.size()) + "\n";
  out += "ServersUp: " + std::to_string(up) + "\n";
  if (s.stick_table.enabled) {
    out += "StickTableEntries: " + std::to_string(s.stick_table.counters.entries) + "\n";
    out += "StickTableCapacity: " + std::to_string(s.stick_table.capacity) + "\n";
  }
  return out;
}

std::string AdminCommands::show_stat(bool json) const {
  LbStats s = collect_stats(runtime_, process_);
  return json ? to_json(s).dump(1) : render_text(s);
}

std::string AdminCommands::show_table(bool json) const {
  StickTable* table = runtime_.stick_table();
  if (!table)
    return json ? std::string("{\"enabled\": false}")
                : std::string("# table: off (stick_table.size is 0)");
  // One more than shown tells whether the list was cut.
  std::vector<StickTable::Entry> entries = table->snapshot(kShowTableLimit + 1);
  const bool truncated = entries.size() > kShowTableLimit;
  if (truncated) entries.pop_back();
  const StickTable::Stats st = table->stats();
  const auto now = StickTable::Clock::now();
  const auto& servers = runtime_.servers();
  auto server_name = [&](uint32_t id) {
    return id < servers.size() ? servers[id]->name : std::to_string(id);
  };

  if (json) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const auto& e : entries) {
      if (e.expires <= now) continue;  // expired, not purged yet
      list.push_back(
          {{"kind", to_string(e.key.kind())},
           {"key", e.key.hex()},
           {"server", server_name(e.server_id)},
           {"expires_in_ms",
            std::chrono::duration_cast<std::chrono::milliseconds>(e.expires - now).count()}});
    }
    nlohmann::ordered_json j = {{"enabled", true},       {"capacity", table->capacity()},
                                {"entries", st.entries}, {"learned", st.learned},
                                {"updated", st.updated}, {"hits", st.hits},
                                {"misses", st.misses},   {"expired", st.expired},
                                {"evicted", st.evicted}, {"truncated", truncated},
                                {"list", list}};
    return j.dump(1);
  }
  std::string out = "# table: capacity " + std::to_string(table->capacity()) + ", entries " +
                    std::to_string(st.entries) + ", learned " + std::to_string(st.learned) +
                    ", updated " + std::to_string(st.updated) + ", hits " +
                    std::to_string(st.hits) + ", misses " + std::to_string(st.misses) +
                    ", expired " + std::to_string(st.expired) + ", evicted " +
                    std::to_string(st.evicted) + "\n";
  for (const auto& e : entries) {
    if (e.expires <= now) continue;
    out += std::string("kind=") + to_string(e.key.kind()) + " key=" + e.key.hex() +
           " server=" + server_name(e.server_id) + " expires_in_ms=" +
           std::to_string(
               std::chrono::duration_cast<std::chrono::milliseconds>(e.expires - now).count()) +
           "\n";
  }
  if (truncated)
    out += "# only the first " + std::to_string(kShowTableLimit) + " entries are shown\n";
  return out;
}

std::string AdminCommands::clear_table() const {
  StickTable* table = runtime_.stick_table();
  if (!table) return error("the stick table is off (stick_table.size is 0)");
  size_t n = table->clear();
  std::string what = std::to_string(n) + (n == 1 ? " entry" : " entries");
  log::warning("admin socket: stick table cleared (" + what + ")");
  return "cleared " + what;
}

std::string AdminCommands::set_server(std::string_view name, std::string_view state) const {
  ServerState* server = nullptr;
  for (const auto& s : runtime_.servers())
    if (s->name == name && !s->removed.load(std::memory_order_relaxed)) server = s.get();
  if (!server) return error("no server named " + quoted(name));
  AdminState to;
  if (state == "ready") {
    to = AdminState::Ready;
  } else if (state == "drain") {
    to = AdminState::Drain;
  } else if (state == "maint") {
    to = AdminState::Maint;
  } else {
    return error("unknown state " + quoted(state) + " (expected ready, drain or maint)");
  }
  AdminState from = server->admin.exchange(to, std::memory_order_relaxed);
  if (from != to)
    log::warning("server " + server->name + " set to " + to_string(to) + " (was " +
                 to_string(from) + ") by the admin socket");
  return "server " + server->name + ": state " + to_string(to) + " (was " + to_string(from) + ")";
}

std::string AdminCommands::show_sessions(bool json) const {
  // Counts come from shared counters; the list is asked of each worker on
  // its own thread (sessions never leave it) and waited for with a bound.
  struct WorkerList {
    int index = 0;
    bool answered = false;
    std::vector<SessionInfo> sessions;
  };
  std::vector<WorkerList> lists;
  std::vector<std::pair<int, size_t>> per_worker;
  std::vector<std::future<std::vector<SessionInfo>>> futures;
  for (const auto& w : runtime_.workers()) {
    per_worker.emplace_back(w->index(), w->session_count());
    Worker* worker = w.get();
    futures.push_back(
        ask(worker->loop(), [worker] { return worker->describe_sessions(kShowSessionsLimit); }));
  }
  const auto deadline = std::chrono::steady_clock::now() + kWorkerAnswerTimeout;
  for (size_t i = 0; i < futures.size(); ++i) {
    WorkerList l;
    l.index = per_worker[i].first;
    if (futures[i].wait_until(deadline) == std::future_status::ready) {
      try {
        l.sessions = futures[i].get();
        l.answered = true;
      } catch (const std::future_error&) {
        // The worker's loop stopped before it ran the task: not answered.
      }
    }
    lists.push_back(std::move(l));
  }
  LbStats s = collect_stats(runtime_, process_);

  auto server_name = [](const SessionInfo& i) {
    return i.server ? i.server->name : std::string("-");
  };
  auto state_name = [](const SessionInfo& i) {
    return to_string(static_cast<Session::State>(i.state));
  };
  if (json) {
    nlohmann::ordered_json j;
    j["current"] = s.current;
    j["workers"] = nlohmann::ordered_json::array();
    for (const auto& [index, count] : per_worker)
      j["workers"].push_back({{"worker", index}, {"sessions", count}});
    j["frontends"] = nlohmann::ordered_json::array();
    for (const auto& f : s.frontends)
      j["frontends"].push_back({{"frontend", f.name}, {"sessions", f.current}});
    j["servers"] = nlohmann::ordered_json::array();
    for (const auto& v : s.servers)
      j["servers"].push_back({{"server", v.name}, {"current", v.current}, {"queued", v.queued}});
    j["list"] = nlohmann::ordered_json::array();
    j["unanswered_workers"] = nlohmann::ordered_json::array();
    for (const WorkerList& l : lists) {
      if (!l.answered) j["unanswered_workers"].push_back(l.index);
      for (const SessionInfo& i : l.sessions)
        j["list"].push_back({{"worker", l.index},
                             {"frontend", i.frontend->name},
                             {"client", i.client.to_string()},
                             {"state", state_name(i)},
                             {"server", server_name(i)},
                             {"route", i.route == RouteReason::None ? "none" : to_string(i.route)},
                             {"age_ms", i.age.count()},
                             {"bytes_in", i.bytes_in},
                             {"bytes_out", i.bytes_out}});
    }
    return j.dump(1);
  }
  std::string out = "# sessions: " + std::to_string(s.current) + "\n";
  for (const auto& [index, count] : per_worker)
    out += "worker " + std::to_string(index) + ": " + std::to_string(count) + "\n";
  for (const auto& f : s.frontends)
    out += "frontend " + f.name + ": " + std::to_string(f.current) + "\n";
  for (const auto& v : s.servers)
    out += "server " + v.name + ": " + std::to_string(v.current) + " current, " +
           std::to_string(v.queued) + " queued\n";
  out += "# list\n";
  for (const WorkerList& l : lists) {
    if (!l.answered)
      out += "# worker " + std::to_string(l.index) + " did not answer within " +
             std::to_string(kWorkerAnswerTimeout.count()) + " ms\n";
    for (const SessionInfo& i : l.sessions)
      out += "worker=" + std::to_string(l.index) + " frontend=" + i.frontend->name +
             " client=" + i.client.to_string() + " state=" + state_name(i) +
             " server=" + server_name(i) +
             " route=" + (i.route == RouteReason::None ? "none" : to_string(i.route)) +
             " age_ms=" + std::to_string(i.age.count()) +
             " bytes_in=" + std::to_string(i.bytes_in) +
             " bytes_out=" + std::to_string(i.bytes_out) + "\n";
  }
  return out;
}

}  // namespace edgepin::lb
