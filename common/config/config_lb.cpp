#include "config_lb.h"

namespace edgepin::config {
namespace {

constexpr size_t kMaxBindsPerFrontend = 64;
constexpr uint32_t kMaxRetries = 100;
constexpr uint32_t kMaxRiseFall = 100;
// Checks more often than every 100 ms load the nodes without detecting
// failures any sooner in practice.
constexpr int64_t kMinCheckIntervalMs = 100;
constexpr int64_t kMaxStickExpireS = 7LL * 24 * 3600;

InspectConfig read_inspect(const JsonValue& value) {
  return value.object([](JsonObject& o) {
    InspectConfig in;
    in.buffer_bytes = o.integer<size_t>("buffer_bytes", kDefaultInspectBufferBytes,
                                        kMinInspectBufferBytes, kMaxInspectBufferBytes);
    in.timeout = o.milliseconds("timeout_ms", in.timeout, 1, kMaxTimeoutMs);
    in.on_failure =
        o.enumeration("on_failure", InspectFailure::Balance,
                      {{"balance", InspectFailure::Balance}, {"reject", InspectFailure::Reject}});
    return in;
  });
}

Frontend read_frontend(const JsonValue& value, const ClusterConfig& cluster, BindSet& binds) {
  return value.object([&](JsonObject& o) {
    Frontend f;
    JsonValue name = o.require("name");
    f.name = name.as_string();
    if (!is_valid_name(f.name)) {
      name.fail("invalid frontend name \"" + f.name + "\": use 1.." +
                std::to_string(kMaxNodeNameLength) + " characters of A-Z a-z 0-9 _ . -");
    }
    f.mode = o.require("mode").as_enum<FrontendMode>(
        {{"tls", FrontendMode::Tls}, {"tcp", FrontendMode::Tcp}});
    f.server_port = f.mode == FrontendMode::Tls ? NodePort::Tls : NodePort::Http;
    if (auto v = o.get("server_port")) {
      f.server_port = v->as_enum<NodePort>({{"tls", NodePort::Tls}, {"http", NodePort::Http}});
    }
    for (const JsonValue& b : o.require("bind").as_array(1, kMaxBindsPerFrontend)) {
      SocketAddress addr = read_socket_address(b, true);
      binds.claim(b, addr);
      for (const Node& node : cluster.nodes) {
        if (node.endpoint(f.server_port) == addr) {
          b.fail("bind " + addr.to_string() + " is the " + std::string(to_string(f.server_port)) +
                 " port of node \"" + node.name + "\": the lb would connect to itself");
        }
      }
      f.bind.push_back(addr);
    }
    if (auto v = o.get("proxy_protocol")) f.proxy_protocol = read_proxy_protocol(*v);
    if (auto v = o.get("inspect")) {
      if (f.mode != FrontendMode::Tls) v->fail("applies only to \"mode\": \"tls\"");
      f.inspect = read_inspect(*v);
    }
    return f;
  });
}

HealthCheckConfig read_health_check(const JsonValue& value) {
  return value.object([](JsonObject& o) {
    HealthCheckConfig h;
    h.enabled = o.boolean("enabled", h.enabled);
    h.type = o.enumeration("type", HealthCheckType::Http,
                           {{"tcp", HealthCheckType::Tcp},
                            {"tls-hello", HealthCheckType::TlsHello},
                            {"http", HealthCheckType::Http}});
    h.port = PortRef{h.type == HealthCheckType::Http ? NodePort::Http : NodePort::Tls, 0};
    if (auto v = o.get("port")) h.port = read_port_ref(*v);
    if (auto v = o.get("path")) {
      if (h.type != HealthCheckType::Http) v->fail("applies only to \"type\": \"http\"");
      h.path = read_url_path(*v);
    }
    if (auto v = o.get("proxy_protocol")) h.proxy_protocol = read_proxy_protocol(*v);
    h.interval = o.milliseconds("interval_ms", h.interval, kMinCheckIntervalMs, kMaxTimeoutMs);
    h.timeout = o.milliseconds("timeout_ms", h.timeout, 1, kMaxTimeoutMs);
    if (h.timeout > h.interval) {
      // A check that may outlast its interval would overlap the next one.
      o.require("timeout_ms")
          .fail("timeout_ms " + std::to_string(h.timeout.count()) +
                " must not exceed interval_ms " + std::to_string(h.interval.count()));
    }
    h.rise = o.integer<uint32_t>("rise", h.rise, 1, kMaxRiseFall);
    h.fall = o.integer<uint32_t>("fall", h.fall, 1, kMaxRiseFall);
    return h;
  });
}

}  // namespace

LbConfig parse_lb(const JsonDocument& doc, const ClusterConfig& cluster,
                  const std::filesystem::path& dir) {
  return doc.root().object([&](JsonObject& o) {
    LbConfig lb;
    BindSet binds;
    lb.threads = read_threads(o);

    const JsonValue frontends = o.require("frontends");
    for (const JsonValue& fv : frontends.as_array(1)) {
      Frontend f = read_frontend(fv, cluster, binds);
      for (size_t i = 0; i < lb.frontends.size(); ++i) {
        if (lb.frontends[i].name == f.name) {
          fv.member("name").fail("duplicate frontend name \"" + f.name + "\" (also " +
                                 append_pointer(frontends.pointer(), std::to_string(i)) + ")");
        }
      }
      lb.frontends.push_back(std::move(f));
    }

    if (auto v = o.get("balance")) {
      lb.balance = v->object([](JsonObject& b) {
        BalanceConfig c;
        c.algorithm = b.enumeration("algorithm", c.algorithm,
                                    {{"roundrobin", BalanceAlgorithm::RoundRobin},
                                     {"leastconn", BalanceAlgorithm::LeastConn},
                                     {"hash", BalanceAlgorithm::Hash}});
        c.hash_function =
            b.enumeration("hash_function", c.hash_function,
                          {{"maglev", HashFunction::Maglev}, {"ring", HashFunction::Ring}});
        return c;
      });
    }
    if (auto v = o.get("source_affinity")) {
      lb.source_affinity = v->object([](JsonObject& s) {
        SourceAffinityConfig c;
        c.enabled = s.boolean("enabled", c.enabled);
        c.ipv4_prefix = s.integer<uint8_t>("ipv4_prefix", c.ipv4_prefix, 1, 32);
        c.ipv6_prefix = s.integer<uint8_t>("ipv6_prefix", c.ipv6_prefix, 1, 128);
        return c;
      });
    }
    if (auto v = o.get("stick_table")) {
      lb.stick_table = v->object([](JsonObject& s) {
        StickTableConfig c;
        c.size = s.integer<size_t>("size", c.size, 0, kMaxStickTableEntries);
        c.expire = s.seconds("expire_s", c.expire, 1, kMaxStickExpireS);
        return c;
      });
    }
    lb.retries = o.integer<uint32_t>("retries", lb.retries, 0, kMaxRetries);
    lb.redispatch = o.boolean("redispatch", lb.redispatch);
    if (auto v = o.get("timeouts")) {
      lb.timeouts = v->object([](JsonObject& t) {
        LbTimeouts c;
        c.connect = t.milliseconds("connect_ms", c.connect, 1, kMaxTimeoutMs);
        c.client = t.milliseconds("client_ms", c.client, 1, kMaxTimeoutMs);
        c.server = t.milliseconds("server_ms", c.server, 1, kMaxTimeoutMs);
        // 0: no tunnel timeout; the client and server timeouts then apply
        // for the whole connection (HAProxy without `timeout tunnel`).
        c.tunnel = t.milliseconds("tunnel_ms", c.tunnel, 0, kMaxTimeoutMs);
        c.queue = t.milliseconds("queue_ms", c.queue, 1, kMaxTimeoutMs);
        return c;
      });
    }
    lb.maxconn = o.integer<uint32_t>("maxconn", lb.maxconn, 1, kMaxConnections);
    lb.server_maxconn =
        o.integer<uint32_t>("server_maxconn", lb.server_maxconn, 0, kMaxConnections);
    lb.queue_size = o.integer<uint32_t>("queue_size", lb.queue_size, 0, kMaxConnections);
    if (auto v = o.get("health_check")) lb.health_check = read_health_check(*v);
    if (auto v = o.get("stats")) {
      lb.stats = v->object([&](JsonObject& s) {
        LbStatsConfig c;
        if (auto b = s.get("bind")) c.bind = read_socket_address(*b, true);
        binds.claim(s.has("bind") ? s.require("bind") : s.value(), c.bind);
        return c;
      });
    }
    if (auto v = o.get("admin_socket")) lb.admin_socket = read_admin_socket(*v, dir, {});
    if (auto v = o.get("log")) lb.log = read_log(*v);
    lb.shutdown_grace = o.milliseconds("shutdown_grace_ms", lb.shutdown_grace, 0, kMaxTimeoutMs);
    return lb;
  });
}

}  // namespace edgepin::config
