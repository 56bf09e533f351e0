#include "config_cluster.h"

#include <algorithm>
#include <cctype>

#include "config_files.h"

namespace edgepin::config {
namespace {

// "\"" + value + "\"", built by appending: the operator+ form makes GCC 12
// at -O3 warn (-Wrestrict) inside libstdc++, a false positive.
std::string in_quotes(std::string_view value) {
  std::string s(1, '"');
  s += value;
  s += '"';
  return s;
}

bool is_name_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

// RFC 6265 cookie-name = token (RFC 7230 tchar).
bool is_cookie_token(std::string_view s) {
  static constexpr std::string_view kExtra = "!#$%&'*+-.^_`|~";
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           kExtra.find(c) != std::string_view::npos;
  });
}

// Printable ASCII without ';' (which would end the attribute): what a
// Path= or Domain= attribute value may hold.
bool is_attribute_value(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c > 0x20 && c < 0x7F && c != ';'; });
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string read_cookie_name(JsonObject& o, std::string_view key, std::string fallback) {
  auto v = o.get(key);
  if (!v) return fallback;
  std::string name = v->as_string(1, 256);
  if (!is_cookie_token(name)) v->fail("invalid cookie name \"" + name + "\" (RFC 6265 token)");
  return name;
}

AffinityConfig read_affinity(const JsonValue& value, const std::filesystem::path& dir) {
  return value.object([&](JsonObject& o) {
    AffinityConfig a;
    a.mode = o.enumeration("mode", AffinityMode::Cookie,
                           {{"cookie", AffinityMode::Cookie},
                            {"jvmroute", AffinityMode::JvmRoute},
                            {"none", AffinityMode::None}});
    a.cookie_name = read_cookie_name(o, "cookie_name", a.cookie_name);
    a.session_cookie = read_cookie_name(o, "session_cookie", a.session_cookie);
    if (a.cookie_name == a.session_cookie) {
      // Blame whichever of the two the operator wrote.
      (o.has("cookie_name") ? o.require("cookie_name") : o.require("session_cookie"))
          .fail("cookie_name must differ from session_cookie \"" + a.session_cookie + "\"");
    }
    if (auto v = o.get("key_file")) {
      a.key_file = resolve_path(*v, dir, {});
    } else {
      a.key_file = dir / "keys/cluster.key";
    }
    if (auto v = o.get("secure")) {
      if (v->json().is_boolean()) {
        a.secure = v->as_bool() ? CookieSecure::Always : CookieSecure::Never;
      } else if (v->json().is_string() && v->json().get_ref<const std::string&>() == "auto") {
        a.secure = CookieSecure::Auto;
      } else {
        v->fail("expected true, false or \"auto\", got " +
                (v->json().is_string() ? in_quotes(v->json().get_ref<const std::string&>())
                                       : v->type_name()));
      }
    }
    a.http_only = o.boolean("http_only", a.http_only);
    a.same_site = o.enumeration(
        "same_site", SameSite::Lax,
        {{"Lax", SameSite::Lax}, {"Strict", SameSite::Strict}, {"None", SameSite::None}});
    if (a.same_site == SameSite::None && a.secure != CookieSecure::Always) {
      o.require("same_site")
          .fail(
              "\"None\" requires \"secure\": true (browsers drop SameSite=None cookies "
              "without Secure)");
    }
    if (auto v = o.get("path")) {
      a.path = v->as_string(1, 1024);
      if (a.path.front() != '/' || !is_attribute_value(a.path)) {
        v->fail("cookie path \"" + a.path +
                "\" must start with '/' and hold no ';', space or "
                "control character");
      }
    }
    if (auto v = o.get("domain")) {
      a.domain = v->as_string(1, 253);
      if (!is_attribute_value(a.domain)) v->fail("invalid cookie domain \"" + a.domain + "\"");
    }
    if (auto v = o.get("max_age_s")) a.max_age = v->as_seconds(1, kMaxCookieAgeSeconds);
    return a;
  });
}

IpAddress read_node_address(const JsonValue& v) {
  const std::string text = v.as_string(1, 64);
  auto ip = IpAddress::parse(text);
  if (!ip) v.fail("bad address \"" + text + "\": expected an IPv4 or IPv6 literal");
  if (ip->is_unspecified() || ip->is_multicast()) {
    v.fail("address " + ip->to_string() + " is not a unicast address");
  }
  return *ip;
}

Node read_node(const JsonValue& value) {
  return value.object([&](JsonObject& o) {
    Node n;
    JsonValue name = o.require("name");
    n.name = name.as_string();
    if (!is_valid_name(n.name)) {
      name.fail("invalid node name \"" + n.name + "\": use 1.." +
                std::to_string(kMaxNodeNameLength) + " characters of A-Z a-z 0-9 _ . -");
    }
    n.tag = o.require("tag").as_int<uint16_t>(kMinNodeTag, kMaxNodeTag, "tag");
    n.address = read_node_address(o.require("address"));
    n.tls_port = o.require("tls_port").as_int<uint16_t>(1, 65535, "port");
    n.http_port = o.require("http_port").as_int<uint16_t>(1, 65535, "port");
    n.peer_port = o.require("peer_port").as_int<uint16_t>(1, 65535, "port");
    n.weight = o.integer<uint16_t>("weight", kDefaultWeight, 0, kMaxWeight, "weight");
    if (auto v = o.get("upstream")) {
      std::string error;
      const std::string text = v->as_string(1, 64);
      auto addr = SocketAddress::parse(text, {}, &error);
      if (!addr) v->fail(error);
      if (addr->ip().is_unspecified()) {
        v->fail("upstream " + addr->to_string() + " is not a unicast address");
      }
      n.upstream = *addr;
    }
    return n;
  });
}

// A port of some node, for conflict messages.
struct UsedEndpoint {
  SocketAddress endpoint;
  std::string pointer;
};

std::vector<Node> read_nodes(const JsonValue& value) {
  std::vector<Node> nodes;
  std::vector<UsedEndpoint> used;
  for (const JsonValue& element : value.as_array(1)) {
    Node node = read_node(element);
    for (size_t i = 0; i < nodes.size(); ++i) {
      const std::string other = append_pointer(value.pointer(), std::to_string(i));
      if (lower(nodes[i].name) == lower(node.name)) {
        std::string note = nodes[i].name == node.name ? "" : "; names are compared ignoring case";
        element.member("name").fail("duplicate node name \"" + node.name + "\" (also " + other +
                                    note + ")");
      }
      if (nodes[i].tag == node.tag) {
        element.member("tag").fail("duplicate tag " + std::to_string(node.tag) + " (also " + other +
                                   ")");
      }
    }
    for (auto [which, key] :
         {std::pair{NodePort::Tls, "tls_port"}, std::pair{NodePort::Http, "http_port"},
          std::pair{NodePort::Peer, "peer_port"}}) {
      const std::string here = append_pointer(element.pointer(), key);
      const SocketAddress ep = node.endpoint(which);
      for (const auto& u : used) {
        if (u.endpoint == ep) {
          element.member(key).fail(ep.to_string() + " already used by " + u.pointer);
        }
      }
      used.push_back({ep, here});
    }
    nodes.push_back(std::move(node));
  }
  if (std::all_of(nodes.begin(), nodes.end(), [](const Node& n) { return n.weight == 0; })) {
    value.fail("every node has weight 0; at least one must take new clients");
  }
  return nodes;
}

}  // namespace

bool is_valid_name(std::string_view name, size_t max_length) {
  return !name.empty() && name.size() <= max_length &&
         std::all_of(name.begin(), name.end(), is_name_char);
}

uint16_t Node::port(NodePort which) const {
  switch (which) {
    case NodePort::Tls:
      return tls_port;
    case NodePort::Http:
      return http_port;
    case NodePort::Peer:
      return peer_port;
  }
  return 0;
}

const Node* ClusterConfig::find_node(std::string_view node_name) const {
  for (const auto& n : nodes) {
    if (n.name == node_name) return &n;
  }
  return nullptr;
}

const Node* ClusterConfig::find_tag(uint16_t tag) const {
  for (const auto& n : nodes) {
    if (n.tag == tag) return &n;
  }
  return nullptr;
}

ClusterConfig parse_cluster(const JsonDocument& doc, const std::filesystem::path& dir) {
  return doc.root().object([&](JsonObject& root) {
    ClusterConfig c;
    root.require("cluster").object([&](JsonObject& o) {
      JsonValue name = o.require("name");
      c.name = name.as_string();
      if (!is_valid_name(c.name, kMaxClusterNameLength)) {
        name.fail("invalid cluster name \"" + c.name + "\": use 1.." +
                  std::to_string(kMaxClusterNameLength) + " characters of A-Z a-z 0-9 _ . -");
      }
      c.tag_scheme =
          o.enumeration("tag_scheme", TagScheme::EdgepinV1, {{"edgepin-v1", TagScheme::EdgepinV1}});
      if (auto v = o.get("affinity")) {
        c.affinity = read_affinity(*v, dir);
      } else {
        c.affinity.key_file = dir / "keys/cluster.key";
      }
      c.peer_ca_file = dir / "pki/ca.crt";
      if (auto v = o.get("peer")) {
        v->object([&](JsonObject& p) {
          if (auto ca = p.get("ca_file")) c.peer_ca_file = resolve_path(*ca, dir, {});
        });
      }
    });
    c.nodes = read_nodes(root.require("nodes"));
    return c;
  });
}

}  // namespace edgepin::config
