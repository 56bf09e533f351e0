#include "stats.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "edgepin/version.h"
#include "runtime.h"
#include "stats_http_server.h"
#include "time_util.h"

namespace edgepin::lb {

const char* to_string(ServerStatus s) {
  switch (s) {
    case ServerStatus::Up:
      return "UP";
    case ServerStatus::Down:
      return "DOWN";
    case ServerStatus::Drain:
      return "DRAIN";
    case ServerStatus::Maint:
      return "MAINT";
  }
  return "?";
}

ServerStatus status_of(bool healthy, AdminState admin) {
  if (admin == AdminState::Maint) return ServerStatus::Maint;
  if (!healthy) return ServerStatus::Down;
  if (admin == AdminState::Drain) return ServerStatus::Drain;
  return ServerStatus::Up;
}

namespace {

// Route reason as a stats key: the log writes "-" for "not routed", which
// makes a poor JSON key or label value.
std::string route_key(size_t i) {
  auto r = static_cast<RouteReason>(i);
  return r == RouteReason::None ? "none" : to_string(r);
}
std::string end_key(size_t i) { return to_string(static_cast<End>(i)); }
std::string inspect_key(size_t i) {
  return std::string(tls::to_string(static_cast<tls::HelloError>(i)));
}
std::string outcome_key(CheckOutcome o) { return to_string(o); }

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string latency_ms(uint32_t us) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", us / 1000.0);
  return buf;
}

std::string check_text(const ServerStats& s) {
  std::string t = outcome_key(s.check);
  if (s.check_detail) t += " " + std::to_string(s.check_detail);
  return t;
}

}  // namespace

LbStats collect_stats(const Runtime& runtime, const ProcessInfo& process) {
  LbStats s;
  s.version = kVersion;
  s.pid = process.pid;
  const auto up = std::chrono::steady_clock::now() - process.started;
  s.uptime_s = std::chrono::duration_cast<std::chrono::seconds>(up).count();
  s.start_time_unix =
      std::chrono::duration_cast<std::chrono::seconds>(process.started_wall.time_since_epoch())
          .count();
  s.threads = runtime.workers().size();
  s.maxconn = runtime.maxconn();

  for (const Frontend& f : runtime.frontends()) {
    FrontendStats fs;
    fs.name = f.name;
    fs.mode = f.inspect_tls ? "tls" : "tcp";
    for (const SocketAddress& b : f.binds) fs.binds.push_back(b.to_string());
    for (const auto& w : runtime.workers()) {
      const FrontendCounters& c = w->counters().frontends[f.index];
      fs.current += c.active.get();
      fs.total += c.accepted.get();
      fs.bytes_in += c.bytes_in.get();
      fs.bytes_out += c.bytes_out.get();
      for (size_t i = 0; i < kRouteReasonCount; ++i) fs.routes[i] += c.routes[i].get();
      for (size_t i = 0; i < kEndCount; ++i) fs.ends[i] += c.ends[i].get();
    }
    s.current += fs.current;
    s.total += fs.total;
    s.bytes_in += fs.bytes_in;
    s.bytes_out += fs.bytes_out;
    for (size_t i = 0; i < kRouteReasonCount; ++i) s.routes[i] += fs.routes[i];
    for (size_t i = 0; i < kEndCount; ++i) s.ends[i] += fs.ends[i];
    s.frontends.push_back(std::move(fs));
  }
  for (const auto& w : runtime.workers()) {
    const WorkerCounters& c = w->counters();
    s.connect_retries += c.connect_retries.get();
    s.redispatches += c.redispatches.get();
    s.maxconn_pauses += c.maxconn_pauses.get();
    for (size_t i = 0; i < tls::kHelloErrorCount; ++i)
      s.inspect_errors[i] += c.inspect_errors[i].get();
  }

  for (const auto& sp : runtime.servers()) {
    const ServerState& st = *sp;
    if (st.removed.load(std::memory_order_relaxed)) continue;  // dropped by a reload
    ServerStats ss;
    ss.name = st.name;
    ss.tag = st.tag;
    ss.weight = st.weight;
    ss.healthy = st.healthy.load(std::memory_order_relaxed);
    ss.admin = st.admin.load(std::memory_order_relaxed);
    ss.status = status_of(ss.healthy, ss.admin);
    ss.check = static_cast<CheckOutcome>(st.check_outcome.load(std::memory_order_relaxed));
    ss.check_detail = st.check_detail.load(std::memory_order_relaxed);
    ss.check_latency_us = st.check_latency_us.load(std::memory_order_relaxed);
    ss.current = st.active.load(std::memory_order_relaxed);
    ss.queued = st.queued.load(std::memory_order_relaxed);
    ss.total = st.total_connections.load(std::memory_order_relaxed);
    ss.bytes_in = st.bytes_in.load(std::memory_order_relaxed);
    ss.bytes_out = st.bytes_out.load(std::memory_order_relaxed);
    s.servers.push_back(std::move(ss));
  }

  if (const StickTable* t = runtime.stick_table()) {
    s.stick_table.enabled = true;
    s.stick_table.capacity = t->capacity();
    s.stick_table.counters = t->stats();
  }
  return s;
}

// ------------------------------------------------------------------- JSON

nlohmann::ordered_json to_json(const LbStats& s) {
  using json = nlohmann::ordered_json;
  auto routes = [](const std::array<uint64_t, kRouteReasonCount>& a) {
    json j = json::object();
    for (size_t i = 0; i < a.size(); ++i) j[route_key(i)] = a[i];
    return j;
  };
  auto ends = [](const std::array<uint64_t, kEndCount>& a) {
    json j = json::object();
    for (size_t i = 0; i < a.size(); ++i) j[end_key(i)] = a[i];
    return j;
  };
  json inspect = json::object();
  for (size_t i = 0; i < s.inspect_errors.size(); ++i) {
    if (static_cast<tls::HelloError>(i) == tls::HelloError::None) continue;
    inspect[inspect_key(i)] = s.inspect_errors[i];
  }

  json j;
  j["info"] = {{"name", "edgepin-lb"},
               {"version", s.version},
               {"pid", s.pid},
               {"uptime_s", s.uptime_s},
               {"start_time_unix", s.start_time_unix},
               {"threads", s.threads}};
  j["totals"] = {{"current_connections", s.current},
                 {"connections_total", s.total},
                 {"bytes_in", s.bytes_in},
                 {"bytes_out", s.bytes_out},
                 {"connect_retries", s.connect_retries},
                 {"redispatches", s.redispatches},
                 {"maxconn", s.maxconn},
                 {"maxconn_pauses", s.maxconn_pauses},
                 {"routes", routes(s.routes)},
                 {"ends", ends(s.ends)},
                 {"inspect_errors", inspect}};
  j["frontends"] = json::array();
  for (const FrontendStats& f : s.frontends) {
    j["frontends"].push_back({{"name", f.name},
                              {"mode", f.mode},
                              {"binds", f.binds},
                              {"current_connections", f.current},
                              {"connections_total", f.total},
                              {"bytes_in", f.bytes_in},
                              {"bytes_out", f.bytes_out},
                              {"routes", routes(f.routes)},
                              {"ends", ends(f.ends)}});
  }
  j["servers"] = json::array();
  for (const ServerStats& v : s.servers) {
    j["servers"].push_back({{"name", v.name},
                            {"tag", v.tag},
                            {"weight", v.weight},
                            {"state", to_string(v.status)},
                            {"healthy", v.healthy},
                            {"admin", to_string(v.admin)},
                            {"check",
                             {{"outcome", outcome_key(v.check)},
                              {"detail", v.check_detail},
                              {"latency_us", v.check_latency_us}}},
                            {"current_connections", v.current},
                            {"queued", v.queued},
                            {"connections_total", v.total},
                            {"bytes_in", v.bytes_in},
                            {"bytes_out", v.bytes_out}});
  }
  const auto& t = s.stick_table;
  j["stick_table"] = {{"enabled", t.enabled},          {"capacity", t.capacity},
                      {"entries", t.counters.entries}, {"learned", t.counters.learned},
                      {"updated", t.counters.updated}, {"hits", t.counters.hits},
                      {"misses", t.counters.misses},   {"expired", t.counters.expired},
                      {"evicted", t.counters.evicted}};
  return j;
}

// ------------------------------------------------------------- Prometheus

std::string render_prometheus(const LbStats& s) { return lb_exposition(s).render(); }

prometheus::Exposition lb_exposition(const LbStats& s) {
  using prometheus::MetricType;
  prometheus::Exposition e;
  const auto C = MetricType::Counter;
  const auto G = MetricType::Gauge;

  e.declare("edgepin_lb_info", G, "Build information; the value is always 1.");
  e.add("edgepin_lb_info", {{"version", s.version}}, uint64_t{1});
  e.declare("edgepin_lb_start_time_seconds", G,
            "When the lb started, in seconds since the Unix epoch.");
  e.add("edgepin_lb_start_time_seconds", {}, static_cast<uint64_t>(s.start_time_unix));
  e.declare("edgepin_lb_threads", G, "Worker threads.");
  e.add("edgepin_lb_threads", {}, static_cast<uint64_t>(s.threads));
  e.declare("edgepin_lb_connect_retries", C,
            "Server connect attempts that failed and were retried.");
  e.add("edgepin_lb_connect_retries", {}, s.connect_retries);
  e.declare("edgepin_lb_redispatches", C, "Clients sent to another server after failed connects.");
  e.add("edgepin_lb_redispatches", {}, s.redispatches);
  e.declare("edgepin_lb_maxconn", G, "The global limit of client connections at once.");
  e.add("edgepin_lb_maxconn", {}, s.maxconn);
  e.declare("edgepin_lb_maxconn_pauses", C,
            "Times a worker stopped accepting because maxconn was reached.");
  e.add("edgepin_lb_maxconn_pauses", {}, s.maxconn_pauses);
  e.declare("edgepin_lb_inspect_errors", C, "ClientHellos that could not be parsed, by reason.");
  for (size_t i = 0; i < s.inspect_errors.size(); ++i) {
    if (static_cast<tls::HelloError>(i) == tls::HelloError::None) continue;
    e.add("edgepin_lb_inspect_errors", {{"reason", inspect_key(i)}}, s.inspect_errors[i]);
  }

  e.declare("edgepin_lb_frontend_connections", C, "Client connections accepted.");
  e.declare("edgepin_lb_frontend_current_connections", G, "Client connections open now.");
  e.declare("edgepin_lb_frontend_bytes_in", C,
            "Bytes from clients relayed to servers (ended connections).");
  e.declare("edgepin_lb_frontend_bytes_out", C,
            "Bytes from servers relayed to clients (ended connections).");
  e.declare("edgepin_lb_frontend_routes", C, "Routing decisions of ended connections, by reason.");
  e.declare("edgepin_lb_frontend_session_ends", C, "Ended connections, by termination reason.");
  for (const FrontendStats& f : s.frontends) {
    e.add("edgepin_lb_frontend_connections", {{"frontend", f.name}}, f.total);
    e.add("edgepin_lb_frontend_current_connections", {{"frontend", f.name}}, f.current);
    e.add("edgepin_lb_frontend_bytes_in", {{"frontend", f.name}}, f.bytes_in);
    e.add("edgepin_lb_frontend_bytes_out", {{"frontend", f.name}}, f.bytes_out);
    for (size_t i = 0; i < f.routes.size(); ++i)
      e.add("edgepin_lb_frontend_routes", {{"frontend", f.name}, {"reason", route_key(i)}},
            f.routes[i]);
    for (size_t i = 0; i < f.ends.size(); ++i)
      e.add("edgepin_lb_frontend_session_ends", {{"frontend", f.name}, {"reason", end_key(i)}},
            f.ends[i]);
  }

  e.declare("edgepin_lb_server_state", G,
            "1 for the server's current state (up, down, drain, maint), else 0.");
  e.declare("edgepin_lb_server_healthy", G, "1 if the health checks pass, else 0.");
  e.declare("edgepin_lb_server_weight", G, "Balancing weight.");
  e.declare("edgepin_lb_server_check_outcome", G,
            "1 for the outcome of the last health check, else 0.");
  e.declare("edgepin_lb_server_check_latency_seconds", G, "Duration of the last health check.");
  e.declare("edgepin_lb_server_current_connections", G,
            "Connections to the server open or opening now.");
  e.declare("edgepin_lb_server_queued_connections", G,
            "Clients waiting for a connection slot (server_maxconn).");
  e.declare("edgepin_lb_server_connections", C, "Connections established to the server.");
  e.declare("edgepin_lb_server_bytes_in", C,
            "Bytes from clients relayed to the server (ended connections).");
  e.declare("edgepin_lb_server_bytes_out", C,
            "Bytes from the server relayed to clients (ended connections).");
  constexpr ServerStatus kStatuses[] = {ServerStatus::Up, ServerStatus::Down, ServerStatus::Drain,
                                        ServerStatus::Maint};
  constexpr CheckOutcome kOutcomes[] = {
#define X(name, str) CheckOutcome::name,
      EDGEPIN_CHECK_OUTCOMES(X)
#undef X
  };
  for (const ServerStats& v : s.servers) {
    for (ServerStatus st : kStatuses)
      e.add("edgepin_lb_server_state", {{"server", v.name}, {"state", lower(to_string(st))}},
            uint64_t{v.status == st});
    e.add("edgepin_lb_server_healthy", {{"server", v.name}}, uint64_t{v.healthy});
    e.add("edgepin_lb_server_weight", {{"server", v.name}}, uint64_t{v.weight});
    for (CheckOutcome o : kOutcomes)
      e.add("edgepin_lb_server_check_outcome", {{"server", v.name}, {"outcome", outcome_key(o)}},
            uint64_t{v.check == o});
    e.add("edgepin_lb_server_check_latency_seconds", {{"server", v.name}},
          v.check_latency_us / 1e6);
    e.add("edgepin_lb_server_current_connections", {{"server", v.name}}, v.current);
    e.add("edgepin_lb_server_queued_connections", {{"server", v.name}}, v.queued);
    e.add("edgepin_lb_server_connections", {{"server", v.name}}, v.total);
    e.add("edgepin_lb_server_bytes_in", {{"server", v.name}}, v.bytes_in);
    e.add("edgepin_lb_server_bytes_out", {{"server", v.name}}, v.bytes_out);
  }

  if (s.stick_table.enabled) {
    const auto& t = s.stick_table.counters;
    e.declare("edgepin_lb_stick_table_entries", G, "Entries in the stick table.");
    e.add("edgepin_lb_stick_table_entries", {}, static_cast<uint64_t>(t.entries));
    e.declare("edgepin_lb_stick_table_capacity", G, "Most entries the stick table holds.");
    e.add("edgepin_lb_stick_table_capacity", {}, static_cast<uint64_t>(s.stick_table.capacity));
    const std::pair<const char*, uint64_t> ops[] = {{"learned", t.learned}, {"updated", t.updated},
                                                    {"hits", t.hits},       {"misses", t.misses},
                                                    {"expired", t.expired}, {"evicted", t.evicted}};
    for (const auto& [op, n] : ops) {
      std::string name = std::string("edgepin_lb_stick_table_") + op;
      e.declare(name, C,
                std::string("Stick table entries ") + op + " (lookups for hits and misses).");
      e.add(name, {}, n);
    }
  }
  return e;
}

// ------------------------------------------------------------------- HTML

namespace {

std::string td(std::string_view v, const char* cls = nullptr) {
  return cls ? "<td class=\"" + std::string(cls) + "\">" + html_escape(v) + "</td>"
             : "<td>" + html_escape(v) + "</td>";
}
std::string td(uint64_t v) { return "<td class=\"n\">" + std::to_string(v) + "</td>"; }

// "closed=3 client_timeout=1": the non-zero counters of an X-macro family.
template <size_t N, typename KeyFn>
std::string nonzero(const std::array<uint64_t, N>& a, KeyFn key) {
  std::string out;
  for (size_t i = 0; i < N; ++i)
    if (a[i]) {
      // Appended piece by piece: `" " + key(i)` (a temporary) makes GCC 12
      // at -O3 warn -Wrestrict inside libstdc++ (a false positive).
      if (!out.empty()) out += ' ';
      out += key(i);
      out += '=';
      out += std::to_string(a[i]);
    }
  return out.empty() ? "-" : out;
}

}  // namespace

std::string render_html(const LbStats& s, int refresh_s) {
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n";
  h += "<meta http-equiv=\"refresh\" content=\"" + std::to_string(refresh_s) + "\">\n";
  h += "<title>edgepin-lb statistics</title>\n<style>\n"
       "body{font-family:sans-serif;margin:1em;color:#222}\n"
       "table{border-collapse:collapse;margin-bottom:1.5em}\n"
       "th,td{border:1px solid #bbb;padding:2px 6px;font-size:90%}\n"
       "th{background:#e4e4f0}td.n{text-align:right}\n"
       "td.UP{background:#c8f0c8}td.DOWN{background:#f4b0b0}\n"
       "td.DRAIN{background:#b0d0f8}td.MAINT{background:#d0d0d0}\n"
       "</style></head><body>\n";
  h += "<h1>edgepin-lb " + html_escape(s.version) + "</h1>\n";
  h += "<p>pid " + std::to_string(s.pid) + ", up " + format_duration(s.uptime_s) + ", " +
       std::to_string(s.threads) + " threads; connections: " + std::to_string(s.current) +
       " current, " + std::to_string(s.total) + " total; retries " +
       std::to_string(s.connect_retries) + ", redispatches " + std::to_string(s.redispatches) +
       ". <a href=\"/stats;json\">JSON</a> · <a href=\"/metrics\">metrics</a></p>\n";

  h += "<h2>Frontends</h2>\n<table>\n<tr><th>name</th><th>mode</th><th>bind</th><th>current</"
       "th><th>total</th>"
       "<th>bytes in</th><th>bytes out</th>";
  for (size_t i = 0; i < kRouteReasonCount; ++i) h += "<th>" + html_escape(route_key(i)) + "</th>";
  h += "<th>ends</th></tr>\n";
  for (const FrontendStats& f : s.frontends) {
    std::string binds;
    for (const auto& b : f.binds) binds += (binds.empty() ? "" : " ") + b;
    h += "<tr>" + td(f.name) + td(f.mode) + td(binds) + td(f.current) + td(f.total) +
         td(f.bytes_in) + td(f.bytes_out);
    for (uint64_t n : f.routes) h += td(n);
    h += td(nonzero(f.ends, end_key)) + "</tr>\n";
  }
  h += "</table>\n";

  h += "<h2>Servers</h2>\n<table>\n<tr><th>name</th><th>tag</th><th>weight</th><th>state</"
       "th><th>admin</th>"
       "<th>last check</th><th>check ms</th><th>current</th><th>queued</th><th>total</th><th>bytes "
       "in</th>"
       "<th>bytes out</th></tr>\n";
  for (const ServerStats& v : s.servers) {
    h += "<tr>" + td(v.name) + td(v.tag) + td(v.weight) +
         td(to_string(v.status), to_string(v.status)) + td(to_string(v.admin)) + td(check_text(v)) +
         td(latency_ms(v.check_latency_us), "n") + td(v.current) + td(v.queued) + td(v.total) +
         td(v.bytes_in) + td(v.bytes_out) + "</tr>\n";
  }
  h += "</table>\n";

  h += "<h2>Stick table</h2>\n";
  if (!s.stick_table.enabled) {
    h += "<p>off</p>\n";
  } else {
    const auto& t = s.stick_table.counters;
    h += "<table>\n<tr><th>entries</th><th>capacity</th><th>fill</th><th>learned</th><th>updated</"
         "th><th>hits</th>"
         "<th>misses</th><th>expired</th><th>evicted</th></tr>\n<tr>" +
         td(t.entries) + td(s.stick_table.capacity);
    const double cap = static_cast<double>(s.stick_table.capacity);
    char fill[32];
    std::snprintf(fill, sizeof fill, "%.1f%%",
                  cap > 0 ? 100.0 * static_cast<double>(t.entries) / cap : 0.0);
    h += td(fill, "n") + td(t.learned) + td(t.updated) + td(t.hits) + td(t.misses) + td(t.expired) +
         td(t.evicted) + "</tr>\n</table>\n";
  }
  h += "<h2>Totals</h2>\n<p>routes: " + html_escape(nonzero(s.routes, route_key)) +
       "<br>ends: " + html_escape(nonzero(s.ends, end_key)) +
       "<br>inspect errors: " + html_escape(nonzero(s.inspect_errors, inspect_key)) + "</p>\n";
  h += "</body></html>\n";
  return h;
}

// ------------------------------------------------------------------- text

namespace {

// Columns padded to their widest cell; the first column left-aligned.
std::string table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], r[i].size());
    }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      if (i) line += "  ";
      line += r[i];
      if (i + 1 < r.size()) line.append(width[i] - r[i].size(), ' ');
    }
    out += line + "\n";
  }
  return out;
}

}  // namespace

std::string render_text(const LbStats& s) {
  std::string out = "# frontends\n";
  std::vector<std::vector<std::string>> rows{
      {"name", "mode", "current", "total", "bytes_in", "bytes_out"}};
  for (size_t i = 0; i < kRouteReasonCount; ++i) rows[0].push_back(route_key(i));
  for (const FrontendStats& f : s.frontends) {
    std::vector<std::string> r{f.name,
                               f.mode,
                               std::to_string(f.current),
                               std::to_string(f.total),
                               std::to_string(f.bytes_in),
                               std::to_string(f.bytes_out)};
    for (uint64_t n : f.routes) r.push_back(std::to_string(n));
    rows.push_back(std::move(r));
  }
  out += table(rows);

  out += "# frontend ends\n";
  rows = {{"name"}};
  for (size_t i = 0; i < kEndCount; ++i) rows[0].push_back(end_key(i));
  for (const FrontendStats& f : s.frontends) {
    std::vector<std::string> r{f.name};
    for (uint64_t n : f.ends) r.push_back(std::to_string(n));
    rows.push_back(std::move(r));
  }
  out += table(rows);

  out += "# servers\n";
  rows = {{"name", "tag", "weight", "state", "admin", "check", "check_ms", "current", "queued",
           "total", "bytes_in", "bytes_out"}};
  for (const ServerStats& v : s.servers) {
    std::string check = check_text(v);
    std::replace(check.begin(), check.end(), ' ', '/');
    rows.push_back({v.name, std::to_string(v.tag), std::to_string(v.weight), to_string(v.status),
                    to_string(v.admin), check, latency_ms(v.check_latency_us),
                    std::to_string(v.current), std::to_string(v.queued), std::to_string(v.total),
                    std::to_string(v.bytes_in), std::to_string(v.bytes_out)});
  }
  out += table(rows);

  out += "# stick table\n";
  if (!s.stick_table.enabled) {
    out += "off\n";
  } else {
    const auto& t = s.stick_table.counters;
    out += table(
        {{"entries", "capacity", "learned", "updated", "hits", "misses", "expired", "evicted"},
         {std::to_string(t.entries), std::to_string(s.stick_table.capacity),
          std::to_string(t.learned), std::to_string(t.updated), std::to_string(t.hits),
          std::to_string(t.misses), std::to_string(t.expired), std::to_string(t.evicted)}});
  }
  return out;
}

}  // namespace edgepin::lb
