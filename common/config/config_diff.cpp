#include "config_diff.h"

#include <algorithm>
#include <tuple>

namespace edgepin::config {
namespace {

std::string ms(std::chrono::milliseconds d) { return std::to_string(d.count()) + " ms"; }

std::string binds_of(const std::vector<SocketAddress>& binds) {
  std::string s;
  for (const auto& b : binds) {
    if (!s.empty()) s += ' ';
    s += b.to_string();
  }
  return s;
}

// Adds "WHAT A -> B" when the values differ.
template <typename T, typename Fmt>
void changed(std::vector<std::string>& out, const std::string& what, const T& a, const T& b,
             Fmt fmt) {
  if (!(a == b)) out.push_back(what + " " + fmt(a) + " -> " + fmt(b));
}
auto num = [](auto v) { return std::to_string(v); };
auto yesno = [](bool v) { return std::string(v ? "on" : "off"); };

auto lb_timeouts_tie(const LbTimeouts& t) {
  return std::tie(t.connect, t.client, t.server, t.tunnel, t.queue);
}
auto health_tie(const HealthCheckConfig& h) {
  return std::tie(h.enabled, h.type, h.port, h.path, h.proxy_protocol, h.interval, h.timeout,
                  h.rise, h.fall);
}
auto frontend_tie(const Frontend& f) {
  return std::tie(f.mode, f.server_port, f.proxy_protocol, f.inspect.buffer_bytes,
                  f.inspect.timeout, f.inspect.on_failure);
}

void diff_log(const LogConfig& a, const LogConfig& b, ConfigDiff& d) {
  if (std::tie(a.format, a.target, a.level, a.facility, a.access_log) !=
      std::tie(b.format, b.target, b.level, b.facility, b.access_log))
    d.applied.push_back("log settings");
}

void diff_admin_socket(const std::optional<AdminSocketConfig>& a,
                       const std::optional<AdminSocketConfig>& b, ConfigDiff& d) {
  const bool same =
      a.has_value() == b.has_value() && (!a || (a->path == b->path && a->mode == b->mode));
  if (!same) d.needs_restart.push_back("admin_socket (restart to apply)");
}

// Adds one item per node added, removed or changed (weight, address, tag,
// ports). `label` is "server" (lb) or "peer" (node-proxy).
void diff_nodes(const std::vector<Node>& from, const std::vector<Node>& to,
                const std::string& label, ConfigDiff& d) {
  for (const Node& n : from) {
    bool kept = false;
    for (const Node& m : to) kept = kept || m.name == n.name;
    if (!kept) d.applied.push_back(label + " " + n.name + " removed");
  }
  for (const Node& m : to) {
    const Node* old = nullptr;
    for (const Node& n : from)
      if (n.name == m.name) old = &n;
    if (!old) {
      d.applied.push_back(label + " " + m.name + " added");
      continue;
    }
    const std::string who = label + " " + m.name;
    changed(d.applied, who + " weight", old->weight, m.weight, num);
    changed(d.applied, who + " tag", old->tag, m.tag, num);
    changed(d.applied, who + " address", old->address, m.address,
            [](const IpAddress& a) { return a.to_string(); });
    if (std::tie(old->tls_port, old->http_port, old->peer_port) !=
        std::tie(m.tls_port, m.http_port, m.peer_port))
      d.applied.push_back(who + " ports");
  }
}

}  // namespace

std::string ConfigDiff::summary() const {
  if (empty()) return "no changes";
  std::string s;
  for (const auto& a : applied) s += (s.empty() ? "" : ", ") + a;
  for (const auto& r : needs_restart) s += (s.empty() ? "" : ", ") + r;
  return s;
}

ConfigDiff diff_lb(const LbConfigSet& from, const LbConfigSet& to) {
  ConfigDiff d;
  const LbConfig& a = from.lb;
  const LbConfig& b = to.lb;
  diff_nodes(from.cluster.nodes, to.cluster.nodes, "server", d);

  for (const Frontend& f : a.frontends) {
    bool kept = false;
    for (const Frontend& g : b.frontends) kept = kept || g.name == f.name;
    if (!kept) d.applied.push_back("frontend " + f.name + " removed");
  }
  for (const Frontend& g : b.frontends) {
    const Frontend* old = nullptr;
    for (const Frontend& f : a.frontends)
      if (f.name == g.name) old = &f;
    if (!old) {
      d.applied.push_back("frontend " + g.name + " added (" + binds_of(g.bind) + ")");
      continue;
    }
    changed(d.applied, "frontend " + g.name + " bind", old->bind, g.bind, binds_of);
    if (frontend_tie(*old) != frontend_tie(g))
      d.applied.push_back("frontend " + g.name + " settings");
  }

  changed(d.applied, "balance", std::tie(a.balance.algorithm, a.balance.hash_function),
          std::tie(b.balance.algorithm, b.balance.hash_function), [](const auto& t) {
            std::string s(to_string(std::get<0>(t)));
            if (std::get<0>(t) == BalanceAlgorithm::Hash)
              s += std::get<1>(t) == HashFunction::Ring ? "/ring" : "/maglev";
            return s;
          });
  if (std::tie(a.source_affinity.enabled, a.source_affinity.ipv4_prefix,
               a.source_affinity.ipv6_prefix) != std::tie(b.source_affinity.enabled,
                                                          b.source_affinity.ipv4_prefix,
                                                          b.source_affinity.ipv6_prefix))
    d.applied.push_back("source_affinity");
  if (lb_timeouts_tie(a.timeouts) != lb_timeouts_tie(b.timeouts))
    d.applied.push_back("timeouts (new connections)");
  changed(d.applied, "retries", a.retries, b.retries, num);
  changed(d.applied, "redispatch", a.redispatch, b.redispatch, yesno);
  changed(d.applied, "server_maxconn", a.server_maxconn, b.server_maxconn, num);
  changed(d.applied, "queue_size", a.queue_size, b.queue_size, num);
  if (health_tie(a.health_check) != health_tie(b.health_check)) d.applied.push_back("health_check");
  changed(d.applied, "shutdown_grace", a.shutdown_grace, b.shutdown_grace, ms);
  diff_log(a.log, b.log, d);

  // Sizes of things allocated once at start: changing them live would mean
  // rebuilding shared state under the workers' feet.
  changed(d.needs_restart, "threads", a.threads, b.threads, num);
  changed(d.needs_restart, "maxconn", a.maxconn, b.maxconn, num);
  if (std::tie(a.stick_table.size, a.stick_table.expire) !=
      std::tie(b.stick_table.size, b.stick_table.expire))
    d.needs_restart.push_back("stick_table");
  const bool same_stats =
      a.stats.has_value() == b.stats.has_value() && (!a.stats || a.stats->bind == b.stats->bind);
  if (!same_stats) d.needs_restart.push_back("stats");
  diff_admin_socket(a.admin_socket, b.admin_socket, d);
  for (auto& r : d.needs_restart)
    if (r.find("(restart to apply)") == std::string::npos) r += " (restart to apply)";
  return d;
}

ConfigDiff diff_node_proxy(const NodeConfigSet& from, const NodeConfigSet& to) {
  ConfigDiff d;
  const NodeProxyConfig& a = from.proxy;
  const NodeProxyConfig& b = to.proxy;

  // Certificates: by path, then by content stamp (a renewal rewrites the
  // same files).
  const bool tls_a = a.tls.has_value(), tls_b = b.tls.has_value();
  if (tls_a != tls_b) {
    d.needs_restart.push_back("tls section");
  } else if (tls_a) {
    const TlsConfig& x = *a.tls;
    const TlsConfig& y = *b.tls;
    if (x.certificates != y.certificates || x.default_certificate != y.default_certificate)
      d.applied.push_back("certificates (" + std::to_string(y.certificates.size()) + ")");
    if (std::tie(x.min_version, x.max_version, x.ciphers, x.ciphersuites, x.groups, x.alpn) !=
        std::tie(y.min_version, y.max_version, y.ciphers, y.ciphersuites, y.groups, y.alpn))
      d.applied.push_back("tls protocol settings");
    if (std::tie(x.session_cache.enabled, x.session_cache.size, x.session_cache.timeout,
                 x.tickets.enabled, x.tickets.rotate, x.tickets.grace) !=
        std::tie(y.session_cache.enabled, y.session_cache.size, y.session_cache.timeout,
                 y.tickets.enabled, y.tickets.rotate, y.tickets.grace))
      d.needs_restart.push_back("tls session cache / tickets");
  }

  if (a.listeners.size() != b.listeners.size()) {
    d.needs_restart.push_back("listeners");
  } else {
    for (size_t i = 0; i < a.listeners.size(); ++i) {
      const Listener& l = a.listeners[i];
      const Listener& m = b.listeners[i];
      if (std::tie(l.name, l.tls, l.bind) != std::tie(m.name, m.tls, m.bind)) {
        d.needs_restart.push_back("listener " + m.name);
      } else if (std::tie(l.proxy_protocol, l.trusted_proxies, l.public_port) !=
                 std::tie(m.proxy_protocol, m.trusted_proxies, m.public_port)) {
        d.needs_restart.push_back("listener " + m.name + " settings");
      }
    }
  }
  // Rebuilt live by a reload (node-proxy/runtime.cpp): new requests use
  // the new pools, codec and checkers; exchanges in flight finish on the
  // ones they started with.
  changed(d.applied, "upstream address", a.upstream.address, b.upstream.address,
          [](const SocketAddress& s) { return s.to_string(); });
  if (std::tie(a.upstream.pool_size, a.upstream.connect_timeout, a.upstream.response_timeout,
               a.upstream.idle_timeout) !=
      std::tie(b.upstream.pool_size, b.upstream.connect_timeout, b.upstream.response_timeout,
               b.upstream.idle_timeout))
    d.applied.push_back("upstream settings");
  if (std::tie(a.headers.forwarded_rfc7239, a.headers.x_forwarded_host, a.headers.x_real_ip,
               a.headers.underscore_fields) !=
      std::tie(b.headers.forwarded_rfc7239, b.headers.x_forwarded_host, b.headers.x_real_ip,
               b.headers.underscore_fields))
    d.applied.push_back("header policy");
  if (std::tie(a.timeouts.tls_handshake, a.timeouts.client_header, a.timeouts.client_idle,
               a.timeouts.client, a.timeouts.tunnel) !=
      std::tie(b.timeouts.tls_handshake, b.timeouts.client_header, b.timeouts.client_idle,
               b.timeouts.client, b.timeouts.tunnel))
    d.applied.push_back("timeouts (new connections)");
  if (std::tie(a.limits.max_header_bytes, a.limits.max_headers, a.limits.max_body_bytes) !=
      std::tie(b.limits.max_header_bytes, b.limits.max_headers, b.limits.max_body_bytes))
    d.applied.push_back("limits");
  // Counted against one shared limit that every worker reads without a
  // lock; a live change would race with the accept path.
  changed(d.needs_restart, "limits.max_connections", a.limits.max_connections,
          b.limits.max_connections, num);
  diff_nodes(from.peers, to.peers, "peer", d);
  // This node's own entry: its tag is in every session it issued and its
  // address and ports are listening sockets.
  if (std::tie(from.self.tag, from.self.address, from.self.tls_port, from.self.http_port,
               from.self.peer_port) != std::tie(to.self.tag, to.self.address, to.self.tls_port,
                                                to.self.http_port, to.self.peer_port))
    d.needs_restart.push_back("this node's entry (" + to.self.name + ")");
  if (std::tie(a.health.path, a.health.check_path, a.health.check_interval, a.health.check_timeout,
               a.health.rise, a.health.fall) !=
      std::tie(b.health.path, b.health.check_path, b.health.check_interval, b.health.check_timeout,
               b.health.rise, b.health.fall))
    d.applied.push_back("health");
  if (a.stats.metrics_bind != b.stats.metrics_bind) d.needs_restart.push_back("stats.metrics_bind");
  // The peer link: its TLS (certificate, CA) and whether it exists at all
  // (a listening socket) need a restart; its pools and checks do not.
  if (std::tie(a.peer.enabled, a.peer.cert_file, a.peer.key_file) !=
          std::tie(b.peer.enabled, b.peer.cert_file, b.peer.key_file) ||
      from.cluster.peer_ca_file != to.cluster.peer_ca_file)
    d.needs_restart.push_back("peer link tls");
  if (std::tie(a.peer.pool_size, a.peer.connect_timeout, a.peer.response_timeout,
               a.peer.idle_timeout) != std::tie(b.peer.pool_size, b.peer.connect_timeout,
                                                b.peer.response_timeout, b.peer.idle_timeout))
    d.applied.push_back("peer link pool");
  if (std::tie(a.peer.check_interval, a.peer.check_timeout, a.peer.rise, a.peer.fall) !=
      std::tie(b.peer.check_interval, b.peer.check_timeout, b.peer.rise, b.peer.fall))
    d.applied.push_back("peer checks");
  {
    const AffinityConfig& x = from.cluster.affinity;
    const AffinityConfig& y = to.cluster.affinity;
    changed(d.applied, "affinity mode", x.mode, y.mode, [](AffinityMode m) {
      return std::string(m == AffinityMode::Cookie     ? "cookie"
                         : m == AffinityMode::JvmRoute ? "jvmroute"
                                                       : "none");
    });
    if (std::tie(x.cookie_name, x.session_cookie, x.secure, x.http_only, x.same_site, x.path,
                 x.domain, x.max_age) != std::tie(y.cookie_name, y.session_cookie, y.secure,
                                                  y.http_only, y.same_site, y.path, y.domain,
                                                  y.max_age))
      d.applied.push_back("affinity cookie settings");
    // A new key (or cluster name, which the MAC covers) makes every cookie
    // issued before it unknown: rotating the key is how an operator does
    // exactly that.
    if (x.key_file != y.key_file || from.cluster.name != to.cluster.name ||
        from.cluster_key.bytes().size() != to.cluster_key.bytes().size() ||
        !std::equal(from.cluster_key.bytes().begin(), from.cluster_key.bytes().end(),
                    to.cluster_key.bytes().begin()))
      d.applied.push_back("affinity key (cookies issued before are no longer honoured)");
  }
  changed(d.applied, "shutdown_grace", a.shutdown_grace, b.shutdown_grace, ms);
  diff_log(a.log, b.log, d);
  changed(d.needs_restart, "threads", a.threads, b.threads, num);
  diff_admin_socket(a.admin_socket, b.admin_socket, d);
  for (auto& r : d.needs_restart)
    if (r.find("(restart to apply)") == std::string::npos) r += " (restart to apply)";
  return d;
}

bool same_peer_link(const Node& from, const Node& to) {
  return std::tie(from.name, from.tag, from.address, from.peer_port) ==
         std::tie(to.name, to.tag, to.address, to.peer_port);
}

PeerPlan plan_peers(const std::vector<Node>& from, const std::vector<Node>& to) {
  PeerPlan plan;
  std::vector<bool> kept(from.size(), false);
  for (const Node& m : to) {
    size_t idx = kNewPeer;
    for (size_t i = 0; i < from.size() && idx == kNewPeer; ++i)
      if (!kept[i] && same_peer_link(from[i], m)) idx = i;
    if (idx != kNewPeer) kept[idx] = true;
    plan.kept_from.push_back(idx);
  }
  for (size_t i = 0; i < from.size(); ++i)
    if (!kept[i]) plan.retired.push_back(i);
  return plan;
}

}  // namespace edgepin::config
