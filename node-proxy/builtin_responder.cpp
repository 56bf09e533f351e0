#include "builtin_responder.h"

#include <string_view>

#include "stats.h"

namespace edgepin::nodeproxy {

namespace {

using http1::BodyFraming;

std::string_view path_of(std::string_view target_path) {
  return target_path.substr(0, target_path.find('?'));
}

std::string_view query_of(std::string_view target_path) {
  size_t q = target_path.find('?');
  return q == std::string_view::npos ? std::string_view() : target_path.substr(q + 1);
}

// "?json", "?json=1", "?a=b&json": the stats page in JSON.
bool query_asks_json(std::string_view query) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view param = query.substr(0, amp);
    if (param.substr(0, param.find('=')) == "json") return true;
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return false;
}

bool accepts_json(const http1::FieldList& fields) {
  static constexpr std::string_view kJson = "application/json";
  for (const http1::Field& f : fields) {
    if (!http1::iequals(f.name, "accept")) continue;
    for (size_t i = 0; i + kJson.size() <= f.value.size(); ++i)
      if (http1::iequals(f.value.substr(i, kJson.size()), kJson)) return true;
  }
  return false;
}

bool has_body(const BodyFraming& f) {
  return f.kind == BodyFraming::Kind::Chunked ||
         (f.kind == BodyFraming::Kind::ContentLength && f.length > 0);
}

LocalResponse text(int status, std::string body) {
  LocalResponse r;
  r.status = status;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(body);
  return r;
}

}  // namespace

std::optional<BuiltinAnswer> answer_builtin(const WorkerContext& ctx, const ClientInfo& client,
                                            const http1::RequestHead& h) {
  const config::NodeProxyConfig& cfg = *ctx.config;
  const std::string_view path = path_of(h.path);
  const bool health = path == cfg.health.path;
  const bool stats = cfg.stats.enabled && path == cfg.stats.path;
  const bool connect = h.method == "CONNECT";
  if (!health && !stats && !connect) return std::nullopt;

  BuiltinAnswer a;
  a.close = has_body(h.framing);
  const bool get = h.method == "GET" || h.method == "HEAD";
  const bool json = stats && (query_asks_json(query_of(h.path)) || accepts_json(h.fields));
  bool allowed = true;
  if (stats && !cfg.stats.allow.empty()) {
    allowed = false;
    for (const Cidr& c : cfg.stats.allow) allowed = allowed || c.contains(client.client.ip());
  }

  if (connect) {
    a.response = text(405, "405 Method Not Allowed: CONNECT is not proxied here\n");
  } else if (!get) {
    a.response = text(405, "405 Method Not Allowed: use GET or HEAD\n");
  } else if (health) {
    a.quiet = true;
    // Without node state (never in the daemon) the node counts as serving.
    const NodeState serving;
    a.response =
        render_health(ctx.node ? *ctx.node : serving,
                      client.peer_node.empty() ? HealthAudience::Balancer : HealthAudience::Peer);
  } else if (!allowed) {
    a.response = text(403, "403 Forbidden\n");
  } else if (!ctx.stats_page) {
    a.response = text(503, "503 stats unavailable\n");
  } else {
    a.response = ctx.stats_page(json);
  }
  return a;
}

}  // namespace edgepin::nodeproxy
