#include "config_node_proxy.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>

#include "ssl_ptr.h"

namespace edgepin::config {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxListeners = 64;
constexpr size_t kMaxTrustedProxies = 1024;
constexpr size_t kMaxCertificateEntries = 1024;
constexpr size_t kMaxAlpnProtocols = 8;
constexpr uint32_t kMaxPoolSize = 10'000;
constexpr uint32_t kMaxConnectionsLimit = 1'000'000;
constexpr size_t kMaxSessionCacheEntries = 10'000'000;
constexpr uint64_t kMaxBodyBytes = 1ULL << 50;
constexpr uint32_t kMaxRiseFall = 100;
constexpr int64_t kMinCheckIntervalMs = 100;
constexpr int64_t kMinTicketRotateS = 60;
// The HTTP/1.x versions the proxy speaks; offering h2 in ALPN would make
// browsers speak a protocol it cannot parse.
constexpr std::string_view kAlpnChoices[] = {"http/1.1", "http/1.0"};

std::vector<Cidr> loopback_cidrs() {
  return {*Cidr::parse("127.0.0.0/8"), *Cidr::parse("::1/128")};
}

std::vector<Cidr> read_cidr_list(const JsonValue& value) {
  std::vector<Cidr> out;
  for (const JsonValue& e : value.as_array(1, kMaxTrustedProxies)) {
    std::string error;
    auto cidr = Cidr::parse(e.as_string(1, 64), &error);
    if (!cidr) e.fail(error);
    out.push_back(*cidr);
  }
  return out;
}

// A listening address's "bind": an IP literal ("*" for every IPv4
// address), or the node's own address when absent.
IpAddress read_bind_ip(JsonObject& o, const Node& self) {
  auto v = o.get("bind");
  if (!v) return self.address;
  const std::string text = v->as_string(1, 64);
  auto parsed =
      text == "*" ? std::optional<IpAddress>(IpAddress::any_v4()) : IpAddress::parse(text);
  if (!parsed) {
    v->fail("bad address \"" + text +
            "\": expected an IPv4 or IPv6 literal (no port: "
            "\"port\" sets it)");
  }
  return *parsed;
}

Listener read_listener(const JsonValue& value, const Node& self, BindSet& binds) {
  return value.object([&](JsonObject& o) {
    Listener l;
    JsonValue name = o.require("name");
    l.name = name.as_string();
    if (!is_valid_name(l.name)) {
      name.fail("invalid listener name \"" + l.name + "\": use 1.." +
                std::to_string(kMaxNodeNameLength) + " characters of A-Z a-z 0-9 _ . -");
    }
    l.tls = o.boolean("tls", l.tls);
    PortRef port{l.tls ? NodePort::Tls : NodePort::Http, 0};
    if (auto v = o.get("port")) port = read_port_ref(*v);
    l.bind = SocketAddress(read_bind_ip(o, self), port.resolve(self));
    binds.claim(value, l.bind);
    if (auto v = o.get("proxy_protocol")) {
      l.proxy_protocol = v->as_enum<AcceptProxy>({{"none", AcceptProxy::None},
                                                  {"v1", AcceptProxy::V1},
                                                  {"v2", AcceptProxy::V2},
                                                  {"any", AcceptProxy::Any}});
    }
    if (auto v = o.get("trusted_proxies")) {
      if (l.proxy_protocol == AcceptProxy::None) {
        v->fail("applies only when \"proxy_protocol\" is not \"none\"");
      }
      l.trusted_proxies = read_cidr_list(*v);
    } else if (l.proxy_protocol != AcceptProxy::None) {
      l.trusted_proxies = {*Cidr::parse("127.0.0.1/32"), *Cidr::parse("::1/128")};
    }
    l.public_port = o.integer<uint16_t>(
        "public_port", l.tls ? kDefaultTlsPublicPort : kDefaultHttpPublicPort, 1, 65535, "port");
    return l;
  });
}

// OpenSSL accepts a cipher string as long as one element matches and drops
// the rest silently; an operator's typo must not vanish like that, so each
// plain element is tried on its own first.
void check_cipher_string(const JsonValue& at, const std::string& list, bool tls13) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) throw std::bad_alloc();
  size_t i = 0;
  while (i <= list.size()) {
    size_t end = list.find_first_of(":, ", i);
    if (end == std::string::npos) end = list.size();
    const std::string element = list.substr(i, end - i);
    i = end + 1;
    if (element.empty()) continue;
    if (!tls13 && (element.front() == '!' || element.front() == '-' || element.front() == '+' ||
                   element.front() == '@')) {
      continue;  // modifiers and directives, not names
    }
    const int ok = tls13 ? SSL_CTX_set_ciphersuites(ctx.get(), element.c_str())
                         : SSL_CTX_set_cipher_list(ctx.get(), element.c_str());
    ERR_clear_error();
    if (ok != 1) {
      std::string hint;
      if (!tls13 && element.starts_with("TLS_")) hint = " (TLS 1.3 suites go in \"ciphersuites\")";
      if (tls13 && !element.starts_with("TLS_")) hint = " (TLS 1.2 ciphers go in \"ciphers\")";
      at.fail("unknown or unavailable " + std::string(tls13 ? "TLS 1.3 suite" : "cipher") + " \"" +
              element + "\"" + hint);
    }
  }
  const int ok = tls13 ? SSL_CTX_set_ciphersuites(ctx.get(), list.c_str())
                       : SSL_CTX_set_cipher_list(ctx.get(), list.c_str());
  ERR_clear_error();
  if (ok != 1) at.fail("\"" + list + "\" selects no cipher");
}

void check_groups(const JsonValue& at, const std::string& groups) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) throw std::bad_alloc();
  const long ok = SSL_CTX_set1_groups_list(ctx.get(), groups.c_str());
  ERR_clear_error();
  if (ok != 1) at.fail("unknown group in \"" + groups + "\" (e.g. \"X25519:P-256:P-384\")");
}

bool same_file(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec) || a.lexically_normal() == b.lexically_normal();
}

TlsConfig read_tls(const JsonValue& value, const fs::path& dir, const Node& self,
                   std::vector<std::string>& warnings) {
  return value.object([&](JsonObject& o) {
    TlsConfig t;
    std::vector<std::string> sources;  // pointer of the entry each certificate came from
    for (const JsonValue& e : o.require("certificates").as_array(1, kMaxCertificateEntries)) {
      fs::path path = resolve_path(e, dir, self.name);
      for (CertificateFile& c : load_certificate_entry(e, path, warnings)) {
        for (size_t i = 0; i < t.certificates.size(); ++i) {
          if (same_file(t.certificates[i].cert_file, c.cert_file)) {
            e.fail("certificate " + c.cert_file.string() + " is already loaded by " + sources[i]);
          }
        }
        t.certificates.push_back(std::move(c));
        sources.push_back(e.pointer());
      }
    }
    if (auto v = o.get("default_certificate")) {
      fs::path path = resolve_path(*v, dir, self.name);
      auto it =
          std::find_if(t.certificates.begin(), t.certificates.end(),
                       [&](const CertificateFile& c) { return same_file(c.cert_file, path); });
      if (it == t.certificates.end()) {
        v->fail(path.string() + " is not one of the certificates loaded by /tls/certificates");
      }
      t.default_certificate = static_cast<size_t>(it - t.certificates.begin());
    }
    auto version = [&](std::string_view key, TlsVersion fallback) {
      return o.enumeration(key, fallback, {{"1.2", TlsVersion::V1_2}, {"1.3", TlsVersion::V1_3}});
    };
    t.min_version = version("min_version", t.min_version);
    t.max_version = version("max_version", t.max_version);
    if (t.min_version > t.max_version) {
      o.require("min_version").fail("min_version \"1.3\" is above max_version \"1.2\"");
    }
    if (auto v = o.get("ciphers")) {
      t.ciphers = v->as_string(1);
      check_cipher_string(*v, t.ciphers, false);
    }
    if (auto v = o.get("ciphersuites")) {
      t.ciphersuites = v->as_string(1);
      check_cipher_string(*v, t.ciphersuites, true);
    }
    if (auto v = o.get("groups")) {
      t.groups = v->as_string(1);
      check_groups(*v, t.groups);
    }
    if (auto v = o.get("alpn")) {
      t.alpn.clear();
      for (const JsonValue& p : v->as_array(1, kMaxAlpnProtocols)) {
        const std::string proto = p.as_string();
        if (std::find(std::begin(kAlpnChoices), std::end(kAlpnChoices), proto) ==
            std::end(kAlpnChoices)) {
          p.fail("unsupported protocol \"" + proto +
                 "\" (edgepin speaks \"http/1.1\" and \"http/1.0\")");
        }
        if (std::find(t.alpn.begin(), t.alpn.end(), proto) != t.alpn.end()) {
          p.fail("protocol \"" + proto + "\" listed twice");
        }
        t.alpn.push_back(proto);
      }
    }
    if (auto v = o.get("session_cache")) {
      t.session_cache = v->object([](JsonObject& s) {
        SessionCacheConfig c;
        c.enabled = s.boolean("enabled", c.enabled);
        c.size = s.integer<size_t>("size", c.size, 1, kMaxSessionCacheEntries);
        c.timeout = s.seconds("timeout_s", c.timeout, 1, kMaxSessionLifetimeS);
        return c;
      });
    }
    if (auto v = o.get("tickets")) {
      t.tickets = v->object([](JsonObject& s) {
        TicketConfig c;
        c.enabled = s.boolean("enabled", c.enabled);
        c.rotate = s.seconds("rotate_s", c.rotate, kMinTicketRotateS, kMaxSessionLifetimeS);
        c.grace = s.seconds("grace_s", c.grace, 0, kMaxSessionLifetimeS);
        return c;
      });
    }
    return t;
  });
}

UpstreamConfig read_upstream(const JsonValue* value, const Node& self) {
  UpstreamConfig u;
  u.address = SocketAddress(IpAddress::loopback_v4(), 8080);
  if (value) {
    u = value->object([&](JsonObject& o) {
      UpstreamConfig c = u;
      if (auto v = o.get("address")) {
        c.address = read_socket_address(*v, false);
        if (c.address.ip().is_unspecified()) {
          v->fail("upstream " + c.address.to_string() + " is not a unicast address");
        }
      }
      c.pool_size = o.integer<uint32_t>("pool_size", c.pool_size, 0, kMaxPoolSize);
      c.connect_timeout = o.milliseconds("connect_timeout_ms", c.connect_timeout, 1, kMaxTimeoutMs);
      c.response_timeout =
          o.milliseconds("response_timeout_ms", c.response_timeout, 1, kMaxTimeoutMs);
      c.idle_timeout = o.milliseconds("idle_timeout_ms", c.idle_timeout, 1, kMaxTimeoutMs);
      return c;
    });
  }
  if (self.upstream) u.address = *self.upstream;
  return u;
}

// Reads check_interval_ms, check_timeout_ms, rise and fall into the given
// fields; the timeout may not exceed the interval (checks would overlap).
void read_check_schedule(JsonObject& o, std::chrono::milliseconds& interval,
                         std::chrono::milliseconds& timeout, uint32_t& rise, uint32_t& fall) {
  interval = o.milliseconds("check_interval_ms", interval, kMinCheckIntervalMs, kMaxTimeoutMs);
  timeout = o.milliseconds("check_timeout_ms", timeout, 1, kMaxTimeoutMs);
  if (timeout > interval) {
    o.require("check_timeout_ms")
        .fail("check_timeout_ms " + std::to_string(timeout.count()) +
              " must not exceed check_interval_ms " + std::to_string(interval.count()));
  }
  rise = o.integer<uint32_t>("rise", rise, 1, kMaxRiseFall);
  fall = o.integer<uint32_t>("fall", fall, 1, kMaxRiseFall);
}

}  // namespace

NodeProxyConfig parse_node_proxy(const JsonDocument& doc, const ClusterConfig& cluster,
                                 size_t self_index, const fs::path& dir,
                                 const std::string& cluster_file,
                                 std::vector<std::string>& warnings) {
  const Node& self = cluster.nodes.at(self_index);
  const std::string node_pointer = "/nodes/" + std::to_string(self_index);
  return doc.root().object([&](JsonObject& o) {
    NodeProxyConfig c;
    BindSet binds;
    c.peer.enabled = cluster.affinity.mode != AffinityMode::None;
    if (c.peer.enabled) {
      binds.reserve(self.endpoint(NodePort::Peer), cluster_file, node_pointer + "/peer_port");
    }
    c.threads = read_threads(o);

    const JsonValue listeners = o.require("listeners");
    std::string first_tls_pointer;
    for (const JsonValue& lv : listeners.as_array(1, kMaxListeners)) {
      Listener l = read_listener(lv, self, binds);
      for (size_t i = 0; i < c.listeners.size(); ++i) {
        if (c.listeners[i].name == l.name) {
          lv.member("name").fail("duplicate listener name \"" + l.name + "\" (also " +
                                 append_pointer(listeners.pointer(), std::to_string(i)) + ")");
        }
      }
      c.listeners.push_back(std::move(l));
      if (c.listeners.back().tls && first_tls_pointer.empty()) first_tls_pointer = lv.pointer();
    }

    if (auto v = o.get("tls")) {
      c.tls = read_tls(*v, dir, self, warnings);
    } else if (!first_tls_pointer.empty()) {
      o.fail("missing required key \"tls\" (listener " + first_tls_pointer + " has \"tls\": true)");
    }

    auto upstream = o.get("upstream");
    c.upstream = read_upstream(upstream ? &*upstream : nullptr, self);

    if (auto v = o.get("headers")) {
      c.headers = v->object([](JsonObject& h) {
        HeaderPolicy p;
        p.forwarded_rfc7239 = h.boolean("forwarded_rfc7239", p.forwarded_rfc7239);
        p.x_forwarded_host = h.boolean("x_forwarded_host", p.x_forwarded_host);
        p.x_real_ip = h.boolean("x_real_ip", p.x_real_ip);
        if (auto u = h.get("underscore_fields"))
          p.underscore_fields = u->as_enum<UnderscoreFields>(
              {{"drop", UnderscoreFields::Drop}, {"pass", UnderscoreFields::Pass}});
        return p;
      });
    }
    if (auto v = o.get("limits")) {
      c.limits = v->object([](JsonObject& l) {
        NodeLimits n;
        n.max_header_bytes = l.integer<size_t>("max_header_bytes", n.max_header_bytes,
                                               kMinHeaderBytes, kMaxHeaderBytes);
        n.max_headers = l.integer<uint32_t>("max_headers", n.max_headers, 1, kMaxHeaderCount);
        n.max_body_bytes =
            l.integer<uint64_t>("max_body_bytes", n.max_body_bytes, 0, kMaxBodyBytes);
        n.max_connections =
            l.integer<uint32_t>("max_connections", n.max_connections, 1, kMaxConnectionsLimit);
        return n;
      });
    }
    if (auto v = o.get("timeouts")) {
      c.timeouts = v->object([](JsonObject& t) {
        NodeTimeouts n;
        n.tls_handshake = t.milliseconds("tls_handshake_ms", n.tls_handshake, 1, kMaxTimeoutMs);
        n.client_header = t.milliseconds("client_header_ms", n.client_header, 1, kMaxTimeoutMs);
        n.client_idle = t.milliseconds("client_idle_ms", n.client_idle, 1, kMaxTimeoutMs);
        n.client = t.milliseconds("client_ms", n.client, 1, kMaxTimeoutMs);
        n.tunnel = t.milliseconds("tunnel_ms", n.tunnel, 1, kMaxTimeoutMs);
        return n;
      });
    }
    if (auto v = o.get("health")) {
      c.health = v->object([](JsonObject& h) {
        NodeHealthConfig n;
        if (auto p = h.get("path")) n.path = read_url_path(*p);
        if (auto p = h.get("check_path")) n.check_path = read_url_path(*p);
        read_check_schedule(h, n.check_interval, n.check_timeout, n.rise, n.fall);
        return n;
      });
    }
    c.stats.allow = loopback_cidrs();
    if (auto v = o.get("stats")) {
      c.stats = v->object([&](JsonObject& s) {
        NodeStatsConfig n;
        n.enabled = s.boolean("enabled", n.enabled);
        if (auto p = s.get("path")) n.path = read_url_path(*p);
        n.allow = loopback_cidrs();
        if (auto a = s.get("allow")) n.allow = read_cidr_list(*a);
        if (auto m = s.get("metrics_bind")) {
          n.metrics_bind = read_socket_address(*m, true);
          binds.claim(*m, *n.metrics_bind);
        }
        return n;
      });
    }
    // The metrics listener: "metrics" gives a port on the node's address
    // (one node-proxy.json serves every node, also several on one host);
    // "stats.metrics_bind" a fixed address. One listener, so not both.
    if (auto v = o.get("metrics")) {
      if (c.stats.metrics_bind) {
        v->fail("the metrics listener is already set by /stats/metrics_bind: use one of the two");
      }
      c.stats.metrics_bind = v->object([&](JsonObject& m) {
        const uint16_t port = m.require("port").as_int<uint16_t>(1, 65535, "port");
        const SocketAddress bind(read_bind_ip(m, self), port);
        binds.claim(*v, bind);
        return bind;
      });
    }
    if (c.stats.path == c.health.path) {
      // Blame the one the operator wrote (both defaults differ).
      const bool stats_path_set = o.has("stats") && o.require("stats").json().contains("path");
      const JsonValue at =
          stats_path_set ? o.require("stats").member("path") : o.require("health").member("path");
      at.fail("path \"" + c.stats.path + "\" is both the health and the stats path");
    }

    // Peer link files default to per-node paths; an error about a default
    // names the key that would override it.
    auto read_peer_files = [&](JsonObject* p) {
      auto path_at = [&](std::string_view key, std::string_view fallback, fs::path& out) {
        std::optional<JsonValue> v = p ? p->get(key) : std::nullopt;
        JsonValue at = v ? *v : JsonValue::placeholder(doc.file(), append_pointer("/peer", key));
        out =
            v ? resolve_path(at, dir, self.name) : resolve_path_text(at, fallback, dir, self.name);
        return at;
      };
      JsonValue cert_at = path_at("cert_file", "pki/peer/{node}.crt", c.peer.cert_file);
      JsonValue key_at = path_at("key_file", "pki/peer/{node}.key", c.peer.key_file);
      if (!c.peer.enabled) return;
      JsonValue ca_at = JsonValue::placeholder(cluster_file, "/cluster/peer/ca_file");
      check_peer_identity(PeerIdentityFiles{ca_at, cluster.peer_ca_file, cert_at, c.peer.cert_file,
                                            key_at, c.peer.key_file},
                          self.name);
    };
    if (auto v = o.get("peer")) {
      v->object([&](JsonObject& p) {
        c.peer.pool_size = p.integer<uint32_t>("pool_size", c.peer.pool_size, 0, kMaxPoolSize);
        c.peer.connect_timeout =
            p.milliseconds("connect_timeout_ms", c.peer.connect_timeout, 1, kMaxTimeoutMs);
        c.peer.response_timeout =
            p.milliseconds("response_timeout_ms", c.peer.response_timeout, 1, kMaxTimeoutMs);
        c.peer.idle_timeout =
            p.milliseconds("idle_timeout_ms", c.peer.idle_timeout, 1, kMaxTimeoutMs);
        read_check_schedule(p, c.peer.check_interval, c.peer.check_timeout, c.peer.rise,
                            c.peer.fall);
        read_peer_files(&p);
      });
    } else {
      read_peer_files(nullptr);
    }

    if (auto v = o.get("admin_socket")) c.admin_socket = read_admin_socket(*v, dir, self.name);
    if (auto v = o.get("log")) c.log = read_log(*v);
    c.shutdown_grace = o.milliseconds("shutdown_grace_ms", c.shutdown_grace, 0, kMaxTimeoutMs);
    return c;
  });
}

}  // namespace edgepin::config
