// The node-proxy's header policy alone: request heads parsed by the real
// parser go through build_upstream_request(), and the result is parsed again
// (it must be a valid request) before its fields are checked.
#include <catch2/catch.hpp>

#include <cctype>
#include <string>
#include <vector>

#include "header_policy.h"
#include "http1.h"

using namespace edgepin;
using namespace edgepin::nodeproxy;

namespace {

// A parsed message that keeps its bytes alive.
struct Parsed {
  std::string bytes;
  http1::RequestParser parser;
  const http1::RequestHead& head() const { return parser.head(); }
};

std::unique_ptr<Parsed> parse_request(std::string raw) {
  auto p = std::make_unique<Parsed>();
  p->bytes = std::move(raw);
  const auto r =
      p->parser.parse({reinterpret_cast<const uint8_t*>(p->bytes.data()), p->bytes.size()});
  INFO(p->bytes);
  REQUIRE(r.status == ParseStatus::Done);
  return p;
}

ClientInfo tls_client(std::string_view client_ip, uint16_t client_port = 50123) {
  ClientInfo c;
  c.listener = "https";
  c.peer = SocketAddress(*IpAddress::parse("10.1.2.3"), 40000);  // the lb
  c.client = SocketAddress(*IpAddress::parse(client_ip), client_port);
  c.proxied = true;
  c.public_port = 443;
  c.tls = true;
  c.tls_version = "TLSv1.3";
  c.sni = "app.example";
  return c;
}

ClientInfo plain_client(std::string_view ip) {
  ClientInfo c;
  c.listener = "http";
  c.peer = SocketAddress(*IpAddress::parse(ip), 40001);
  c.client = c.peer;  // no PROXY header: the socket's peer
  c.public_port = 8081;
  return c;
}

// Builds the upstream head for `raw` and parses it back.
std::unique_ptr<Parsed> forward(const std::string& raw, const ClientInfo& client,
                                config::HeaderPolicy policy = {},
                                UpstreamRequestOptions opts = {}) {
  auto in = parse_request(raw);
  std::string out;
  build_upstream_request(in->head(), client, policy, opts, out);
  return parse_request(out);
}

std::vector<std::string> values(const http1::RequestHead& h, std::string_view name) {
  std::vector<std::string> v;
  for (const auto& f : h.fields)
    if (http1::iequals(f.name, name)) v.emplace_back(f.value);
  return v;
}

std::string case_variant(std::string_view name, int variant) {
  std::string s(name);
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    switch (variant) {
      case 0:
        break;  // as written
      case 1:
        s[i] = static_cast<char>(std::tolower(c));
        break;  // lower
      case 2:
        s[i] = static_cast<char>(std::toupper(c));
        break;  // upper
      case 3:
        s[i] = static_cast<char>(i % 2 ? std::toupper(c) : std::tolower(c));
        break;  // mixed
    }
  }
  return s;
}

const char* const kForwarding[] = {"X-Forwarded-For",  "X-Forwarded-Proto", "X-Forwarded-Port",
                                   "X-Forwarded-Host", "X-Forwarded-SSL",   "X-Forwarded-Protocol",
                                   "Forwarded",        "X-Real-IP"};

}  // namespace

TEST_CASE("forged forwarding fields are removed in every letter case and every occurrence") {
  for (int variant = 0; variant < 4; ++variant) {
    std::string raw = "GET /app HTTP/1.1\r\nHost: app.example\r\n";
    for (const char* name : kForwarding) {
      // Twice each, before and after an ordinary field, with hostile values.
      raw += case_variant(name, variant) + ": 6.6.6.6\r\n";
      raw += "X-Keep: 1\r\n";
      raw += case_variant(name, variant) + ": for=6.6.6.6;proto=https, evil\r\n";
    }
    raw += "\r\n";
    auto out = forward(raw, tls_client("203.0.113.7"));
    INFO("variant " << variant << "\n" << out->bytes);
    const auto& h = out->head();
    CHECK(values(h, "X-Forwarded-For") == std::vector<std::string>{"203.0.113.7"});
    CHECK(values(h, "X-Forwarded-Proto") == std::vector<std::string>{"https"});
    CHECK(values(h, "X-Forwarded-Port") == std::vector<std::string>{"443"});
    CHECK(values(h, "X-Forwarded-SSL") == std::vector<std::string>{"on"});
    CHECK(values(h, "X-Forwarded-Protocol") == std::vector<std::string>{"https"});
    // Optional ones are off by default: gone entirely.
    CHECK(values(h, "X-Forwarded-Host").empty());
    CHECK(values(h, "Forwarded").empty());
    CHECK(values(h, "X-Real-IP").empty());
    CHECK(out->bytes.find("6.6.6.6") == std::string::npos);
    CHECK(out->bytes.find("evil") == std::string::npos);
    CHECK(values(h, "X-Keep").size() == 8);
  }
}

TEST_CASE("is_forwarding_field matches the owned names only") {
  for (const char* name : kForwarding)
    for (int v = 0; v < 4; ++v) CHECK(is_forwarding_field(case_variant(name, v)));
  CHECK_FALSE(is_forwarding_field("X-Forwarded"));
  CHECK_FALSE(is_forwarding_field("X-Forwarded-For-Real"));
  CHECK_FALSE(is_forwarding_field("Forward"));
  CHECK_FALSE(is_forwarding_field("Host"));
}

TEST_CASE("true forwarding values: IPv4, IPv6, v4-mapped, TLS and plain, PROXY and socket") {
  config::HeaderPolicy all;
  all.forwarded_rfc7239 = true;
  all.x_forwarded_host = true;
  all.x_real_ip = true;

  SECTION("IPv4 client behind the lb (PROXY), TLS") {
    auto out =
        forward("GET / HTTP/1.1\r\nHost: app.example\r\n\r\n", tls_client("198.51.100.9"), all);
    const auto& h = out->head();
    // The PROXY source, never the lb's socket address.
    CHECK(values(h, "X-Forwarded-For") == std::vector<std::string>{"198.51.100.9"});
    CHECK(out->bytes.find("10.1.2.3") == std::string::npos);
    CHECK(values(h, "X-Real-IP") == std::vector<std::string>{"198.51.100.9"});
    CHECK(values(h, "X-Forwarded-Host") == std::vector<std::string>{"app.example"});
    CHECK(values(h, "Forwarded") ==
          std::vector<std::string>{"for=198.51.100.9;proto=https;host=app.example"});
    CHECK(values(h, "X-Forwarded-SSL") == std::vector<std::string>{"on"});
  }
  SECTION("IPv6 client, TLS: Forwarded quotes the bracketed node") {
    auto out =
        forward("GET / HTTP/1.1\r\nHost: app.example:8443\r\n\r\n", tls_client("2001:db8::1"), all);
    const auto& h = out->head();
    CHECK(values(h, "X-Forwarded-For") == std::vector<std::string>{"2001:db8::1"});
    CHECK(values(h, "X-Real-IP") == std::vector<std::string>{"2001:db8::1"});
    CHECK(values(h, "Forwarded") ==
          std::vector<std::string>{"for=\"[2001:db8::1]\";proto=https;host=\"app.example:8443\""});
  }
  SECTION("v4-mapped IPv6 peer is written as IPv4") {
    auto out = forward("GET / HTTP/1.1\r\nHost: a\r\n\r\n", tls_client("::ffff:192.0.2.44"), all);
    CHECK(values(out->head(), "X-Forwarded-For") == std::vector<std::string>{"192.0.2.44"});
    CHECK(values(out->head(), "Forwarded") ==
          std::vector<std::string>{"for=192.0.2.44;proto=https;host=a"});
  }
  SECTION("plain HTTP, no PROXY header: the socket peer and the listener's public port") {
    auto out = forward("GET / HTTP/1.1\r\nHost: a\r\n\r\n", plain_client("192.0.2.77"));
    const auto& h = out->head();
    CHECK(values(h, "X-Forwarded-For") == std::vector<std::string>{"192.0.2.77"});
    CHECK(values(h, "X-Forwarded-Proto") == std::vector<std::string>{"http"});
    CHECK(values(h, "X-Forwarded-Protocol") == std::vector<std::string>{"http"});
    CHECK(values(h, "X-Forwarded-Port") == std::vector<std::string>{"8081"});
    CHECK(values(h, "X-Forwarded-SSL").empty());
  }
}

TEST_CASE("hop-by-hop fields go, including those named in Connection") {
  const std::string raw =
      "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret, x-other-secret\r\n"
      "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\n"
      "Upgrade: h2c\r\nX-Secret: 1\r\nX-Other-Secret: 2\r\nConnection: X-Third\r\nX-Third: 3\r\n"
      "X-Visible: yes\r\n\r\n";
  auto out = forward(raw, tls_client("192.0.2.1"));
  const auto& h = out->head();
  for (const char* gone : {"Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade", "X-Secret",
                           "X-Other-Secret", "X-Third"}) {
    INFO(gone);
    CHECK(values(h, gone).empty());
  }
  CHECK(values(h, "X-Visible") == std::vector<std::string>{"yes"});
  // The proxy's own connection management towards the upstream.
  CHECK(values(h, "Connection") == std::vector<std::string>{"keep-alive"});
  CHECK(h.version == http1::Version::Http11);
}

TEST_CASE("framing is the proxy's own: one Content-Length or chunked") {
  SECTION("repeated identical Content-Length becomes one") {
    auto out =
        forward("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
                tls_client("192.0.2.1"));
    CHECK(values(out->head(), "Content-Length") == std::vector<std::string>{"5"});
    CHECK(out->head().framing == http1::BodyFraming::content_length(5));
  }
  SECTION("chunked stays chunked") {
    auto out = forward("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tCHUNKED\r\n\r\n",
                       tls_client("192.0.2.1"));
    CHECK(values(out->head(), "Transfer-Encoding") == std::vector<std::string>{"chunked"});
    CHECK(values(out->head(), "Content-Length").empty());
  }
  SECTION("no body: no framing field") {
    auto out = forward("GET / HTTP/1.1\r\nHost: a\r\n\r\n", tls_client("192.0.2.1"));
    CHECK(values(out->head(), "Content-Length").empty());
    CHECK(values(out->head(), "Transfer-Encoding").empty());
  }
}

TEST_CASE("absolute-form becomes origin-form with Host from the authority") {
  struct Case {
    const char* target;
    const char* path;
    const char* host;
  };
  for (const Case& c : {Case{"http://app.example:8080/p/q?x=1", "/p/q?x=1", "app.example:8080"},
                        Case{"https://app.example?only=query", "/?only=query", "app.example"},
                        Case{"http://[2001:db8::5]", "/", "[2001:db8::5]"}}) {
    INFO(c.target);
    auto out = forward(std::string("GET ") + c.target + " HTTP/1.1\r\nHost: other.example\r\n\r\n",
                       tls_client("192.0.2.1"));
    CHECK(out->head().form == http1::TargetForm::Origin);
    CHECK(out->head().target == c.path);
    CHECK(values(out->head(), "Host") == std::vector<std::string>{c.host});
    CHECK(out->bytes.find("other.example") == std::string::npos);
  }
}

TEST_CASE("request line, Host default, upgrade, expect") {
  SECTION("HTTP/1.0 without Host gets the default host and goes out as HTTP/1.1") {
    UpstreamRequestOptions o;
    o.default_host = "app.example";
    auto out = forward("GET /old HTTP/1.0\r\n\r\n", plain_client("192.0.2.1"), {}, o);
    CHECK(out->head().version == http1::Version::Http11);
    CHECK(out->head().target == "/old");
    CHECK(values(out->head(), "Host") == std::vector<std::string>{"app.example"});
  }
  SECTION("asterisk-form OPTIONS is kept") {
    auto out = forward("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", plain_client("192.0.2.1"));
    CHECK(out->head().target == "*");
  }
  SECTION("a tunnelled WebSocket keeps Upgrade and asks for Connection: upgrade") {
    UpstreamRequestOptions o;
    o.tunnel = true;
    auto out = forward(
        "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: "
        "Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n",
        tls_client("192.0.2.1"), {}, o);
    CHECK(values(out->head(), "Upgrade") == std::vector<std::string>{"websocket"});
    CHECK(values(out->head(), "Connection") == std::vector<std::string>{"upgrade"});
    CHECK(out->head().upgrade_websocket);
    CHECK(values(out->head(), "Sec-WebSocket-Key") == std::vector<std::string>{"k"});
  }
  SECTION("no pooling: Connection: close") {
    UpstreamRequestOptions o;
    o.keep_alive = false;
    auto out = forward("GET / HTTP/1.1\r\nHost: a\r\n\r\n", tls_client("192.0.2.1"), {}, o);
    CHECK(values(out->head(), "Connection") == std::vector<std::string>{"close"});
  }
  SECTION("Expect: 100-continue is forwarded; an ignored HTTP/1.0 Expect is not") {
    auto out =
        forward("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
                tls_client("192.0.2.1"));
    CHECK(out->head().expect_continue);
    auto old = forward("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
                       plain_client("192.0.2.1"), {}, UpstreamRequestOptions{false, true, "h", {}});
    CHECK(values(old->head(), "Expect").empty());
  }
  SECTION("extra fields from the affinity layer come last") {
    const http1::Field extra[] = {{"X-Edgepin-Relay", "node-b"}};
    UpstreamRequestOptions o;
    o.extra_fields = extra;
    auto out = forward("GET / HTTP/1.1\r\nHost: a\r\n\r\n", tls_client("192.0.2.1"), {}, o);
    const auto& h = out->head();
    REQUIRE(h.fields.size() > 0);
    CHECK(h.fields[h.fields.size() - 1].name == "X-Edgepin-Relay");
    CHECK(h.fields[h.fields.size() - 1].value == "node-b");
  }
}

TEST_CASE("forwarded_value quotes what is not a token") {
  CHECK(forwarded_value("192.0.2.1") == "192.0.2.1");
  CHECK(forwarded_value("[2001:db8::1]") == "\"[2001:db8::1]\"");
  CHECK(forwarded_value("a.example:443") == "\"a.example:443\"");
  CHECK(forwarded_value("a\"b\\c") == "\"a\\\"b\\\\c\"");
  CHECK(forwarded_value("") == "\"\"");
}

namespace {

struct ParsedResponse {
  std::string bytes;
  http1::ResponseParser parser;
};

std::unique_ptr<ParsedResponse> parse_response(std::string raw) {
  auto p = std::make_unique<ParsedResponse>();
  p->bytes = std::move(raw);
  const auto r =
      p->parser.parse({reinterpret_cast<const uint8_t*>(p->bytes.data()), p->bytes.size()});
  INFO(p->bytes);
  REQUIRE(r.status == ParseStatus::Done);
  return p;
}

std::vector<std::string> rvalues(const http1::ResponseHead& h, std::string_view name) {
  std::vector<std::string> v;
  for (const auto& f : h.fields)
    if (http1::iequals(f.name, name)) v.emplace_back(f.value);
  return v;
}

std::unique_ptr<ParsedResponse> relay_response(const std::string& raw, ClientResponseOptions o) {
  auto in = parse_response(raw);
  std::string out;
  build_client_response(in->parser.head(), o, out);
  return parse_response(out);
}

}  // namespace

TEST_CASE("responses: hop-by-hop removed, framing and connection written by the proxy") {
  const std::string raw =
      "HTTP/1.1 200 OK\r\nServer: tomcat\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: "
      "timeout=20\r\n"
      "X-Hop: 1\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";
  SECTION("chunked passed through to an HTTP/1.1 client, keep-alive") {
    ClientResponseOptions o;
    o.framing = http1::BodyFraming::chunked();
    auto out = relay_response(raw, o);
    const auto& h = out->parser.head();
    CHECK(h.status == 200);
    CHECK(rvalues(h, "Transfer-Encoding") == std::vector<std::string>{"chunked"});
    CHECK(rvalues(h, "Connection").empty());
    CHECK(rvalues(h, "Keep-Alive").empty());
    CHECK(rvalues(h, "X-Hop").empty());
    CHECK(rvalues(h, "Set-Cookie") == std::vector<std::string>{"a=1", "b=2"});
    CHECK(rvalues(h, "Server") == std::vector<std::string>{"tomcat"});
  }
  SECTION("de-chunked for HTTP/1.0: no framing field, Connection: close") {
    ClientResponseOptions o;
    o.framing = http1::BodyFraming::until_close();
    o.connection = ClientResponseOptions::Connection::Close;
    o.client_http10 = true;
    auto out = relay_response(raw, o);
    const auto& h = out->parser.head();
    CHECK(rvalues(h, "Transfer-Encoding").empty());
    CHECK(rvalues(h, "Content-Length").empty());
    CHECK(rvalues(h, "Connection") == std::vector<std::string>{"close"});
  }
  SECTION("HTTP/1.0 keep-alive is announced") {
    ClientResponseOptions o;
    o.framing = http1::BodyFraming::content_length(3);
    o.client_http10 = true;
    auto out = relay_response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", o);
    CHECK(rvalues(out->parser.head(), "Connection") == std::vector<std::string>{"keep-alive"});
    CHECK(rvalues(out->parser.head(), "Content-Length") == std::vector<std::string>{"3"});
  }
  SECTION("HEAD and 304 keep Content-Length as metadata; 204 and 1xx carry none") {
    ClientResponseOptions o;
    o.framing = http1::BodyFraming::none();
    CHECK(
        rvalues(relay_response("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", o)->parser.head(),
                "Content-Length") == std::vector<std::string>{"1234"});
    CHECK(rvalues(relay_response("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", o)
                      ->parser.head(),
                  "Content-Length") == std::vector<std::string>{"99"});
    CHECK(rvalues(relay_response("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", o)
                      ->parser.head(),
                  "Content-Length")
              .empty());
    o.connection = ClientResponseOptions::Connection::Omit;
    auto interim = relay_response("HTTP/1.1 100 Continue\r\n\r\n", o);
    CHECK(interim->parser.head().status == 100);
    CHECK(interim->parser.head().fields.empty());
  }
  SECTION("101 keeps Upgrade and says Connection: upgrade") {
    ClientResponseOptions o;
    o.framing = http1::BodyFraming::none();
    o.connection = ClientResponseOptions::Connection::Upgrade;
    auto out = relay_response(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
        "Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n",
        o);
    const auto& h = out->parser.head();
    CHECK(http1::is_upgrade_accepted(h));
    CHECK(rvalues(h, "Sec-WebSocket-Accept") == std::vector<std::string>{"x"});
  }
  SECTION("a missing reason phrase gets the canonical one") {
    ClientResponseOptions o;
    o.framing = http1::BodyFraming::content_length(0);
    auto out = relay_response("HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n", o);
    CHECK(out->parser.head().reason == "Service Unavailable");
  }
}

TEST_CASE("idempotent methods and reason phrases") {
  for (const char* m : {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
    CHECK(is_idempotent_method(m));
  for (const char* m : {"POST", "PATCH", "CONNECT", "get", "LOCK"})
    CHECK_FALSE(is_idempotent_method(m));
  CHECK(reason_phrase(502) == "Bad Gateway");
  CHECK(reason_phrase(408) == "Request Timeout");
  CHECK(reason_phrase(599) == "Unknown");
}

// ---------------------------------------------------------------------------
// The peer link's fields (affinity relaying).

TEST_CASE("X-Edgepin-* fields from a client never reach the upstream; the proxy's own do") {
  const std::string raw =
      "GET / HTTP/1.1\r\nHost: app.example\r\nX-Edgepin-Relayed: node3\r\nx-edgepin-sni: evil\r\n"
      "X-EDGEPIN-Whatever: 1\r\nX-Edgepinned: kept\r\n\r\n";
  auto out = forward(raw, tls_client("203.0.113.9"));
  CHECK(values(out->head(), "x-edgepin-relayed").empty());
  CHECK(values(out->head(), "x-edgepin-sni").empty());
  CHECK(values(out->head(), "x-edgepin-whatever").empty());
  CHECK(values(out->head(), "x-edgepinned") == std::vector<std::string>{"kept"});

  const http1::Field extra[] = {{kRelayedField, "node1"}, {kSniField, "app.example"}};
  UpstreamRequestOptions opts;
  opts.extra_fields = extra;
  auto relayed = forward(raw, tls_client("203.0.113.9"), {}, opts);
  CHECK(values(relayed->head(), "x-edgepin-relayed") == std::vector<std::string>{"node1"});
  CHECK(values(relayed->head(), "x-edgepin-sni") == std::vector<std::string>{"app.example"});
}

TEST_CASE("is_edgepin_field matches the prefix in any case") {
  CHECK(is_edgepin_field("X-Edgepin-Relayed"));
  CHECK(is_edgepin_field("x-edgepin-"));
  CHECK(is_edgepin_field("X-EDGEPIN-SNI"));
  CHECK_FALSE(is_edgepin_field("X-Edgepin"));
  CHECK_FALSE(is_edgepin_field("X-Edgepinned"));
  CHECK_FALSE(is_edgepin_field("X-Forwarded-For"));
}

namespace {

ClientInfo peer_link() {
  ClientInfo c;
  c.listener = "peer";
  c.peer = SocketAddress(*IpAddress::parse("127.0.0.12"), 41000);
  c.client = c.peer;
  c.public_port = 9443;
  c.tls = true;
  c.tls_version = "TLSv1.3";
  c.peer_node = "node2";
  return c;
}

}  // namespace

TEST_CASE(
    "relayed_client_info: the relaying node's client facts round-trip to the owner's Tomcat") {
  // What node2 sends for a client it served over TLS (public port 443)...
  const http1::Field extra[] = {{kRelayedField, "node2"}, {kSniField, "app.example"}};
  UpstreamRequestOptions opts;
  opts.extra_fields = extra;
  const ClientInfo original = tls_client("2001:db8::7");
  auto relayed = forward("POST /cart HTTP/1.1\r\nHost: app.example\r\nContent-Length: 0\r\n\r\n",
                         original, {}, opts);

  // ...is read back on the owner's peer listener...
  std::string error;
  const auto info = relayed_client_info(relayed->head().fields, peer_link(), error);
  REQUIRE(info);
  CHECK(error.empty());
  CHECK(info->client.ip().to_string() == "2001:db8::7");
  CHECK(info->tls);
  CHECK(info->public_port == 443);
  CHECK(info->sni == "app.example");
  CHECK(info->tls_version.empty());  // the link's TLS is not the client's
  CHECK(info->peer_node == "node2");

  // ...and the owner's Tomcat gets the same forwarding fields the relaying
  // node's Tomcat would have got.
  std::string to_owner, to_self;
  build_upstream_request(relayed->head(), *info, {}, {}, to_owner);
  auto a = parse_request(to_owner);
  auto direct =
      forward("POST /cart HTTP/1.1\r\nHost: app.example\r\nContent-Length: 0\r\n\r\n", original);
  for (std::string_view f :
       {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-port", "x-forwarded-ssl"})
    CHECK(values(a->head(), f) == values(direct->head(), f));
  CHECK(values(a->head(), "x-forwarded-for") == std::vector<std::string>{"2001:db8::7"});
}

TEST_CASE("relayed_client_info: plain HTTP clients and requests without forwarding fields") {
  std::string error;
  auto plain = forward("GET / HTTP/1.1\r\nHost: h\r\n\r\n", plain_client("198.51.100.4"));
  auto info = relayed_client_info(plain->head().fields, peer_link(), error);
  REQUIRE(info);
  CHECK_FALSE(info->tls);
  CHECK(info->public_port == 8081);
  CHECK(info->client.ip().to_string() == "198.51.100.4");
  CHECK(info->sni.empty());

  // A peer's own request (its health check): the link's facts stand.
  auto own = parse_request("GET /_edgepin/health HTTP/1.1\r\nHost: node1\r\n\r\n");
  info = relayed_client_info(own->head().fields, peer_link(), error);
  REQUIRE(info);
  CHECK(info->client == peer_link().client);
  CHECK(info->tls);
  CHECK(info->public_port == 9443);
}

TEST_CASE("relayed_client_info: repeated or malformed fields are refused") {
  const char* bad[] = {
      "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n",
      "X-Forwarded-For: 1.2.3.4, 5.6.7.8\r\n",
      "X-Forwarded-For: not-an-ip\r\n",
      "X-Forwarded-Proto: ftp\r\n",
      "X-Forwarded-Proto: https\r\nx-forwarded-proto: https\r\n",
      "X-Forwarded-Port: 0\r\n",
      "X-Forwarded-Port: 65536\r\n",
      "X-Forwarded-Port: 44a\r\n",
      "X-Forwarded-Port: \r\n",
      "X-Edgepin-Sni: bad_name!\r\n",
  };
  for (const char* fields : bad) {
    INFO(fields);
    auto p = parse_request(std::string("GET / HTTP/1.1\r\nHost: h\r\n") + fields + "\r\n");
    std::string error;
    CHECK_FALSE(relayed_client_info(p->head().fields, peer_link(), error));
    CHECK_FALSE(error.empty());
  }
}

// Issue 12 point 7: underscore field names.
TEST_CASE("fields named with '_' are dropped by default, in any case and position") {
  const std::string raw =
      "POST /form HTTP/1.1\r\nHost: app.example\r\n"
      "X_Forwarded_For: 6.6.6.6\r\n"
      "x_forwarded_proto: http\r\n"
      "X-Keep: 1\r\n"
      "Transfer_Encoding: chunked\r\n"
      "Content_Length: 99\r\n"
      "X_Real_IP: 6.6.6.6\r\n"
      "_: leading\r\n"
      "Trailing_: x\r\n"
      "Content-Length: 3\r\n"
      "\r\nabc";
  auto out = forward(raw, tls_client("203.0.113.7"));
  INFO(out->bytes);
  const auto& h = out->head();
  for (const auto& f : h.fields) CHECK(f.name.find('_') == std::string_view::npos);
  CHECK(out->bytes.find("6.6.6.6") == std::string::npos);
  CHECK(values(h, "X-Forwarded-For") == std::vector<std::string>{"203.0.113.7"});
  CHECK(values(h, "X-Forwarded-Proto") == std::vector<std::string>{"https"});
  CHECK(values(h, "X-Keep") == std::vector<std::string>{"1"});
  // The framing is the parser's (Content-Length: 3), never the dropped fields'.
  CHECK(values(h, "Content-Length") == std::vector<std::string>{"3"});
  CHECK(values(h, "Transfer-Encoding").empty());
}

TEST_CASE("underscore_fields pass forwards them as ordinary fields; the proxy's own stay true") {
  const std::string raw =
      "GET / HTTP/1.1\r\nHost: app.example\r\n"
      "X_Forwarded_For: 6.6.6.6\r\n"
      "My_Header: kept\r\n"
      "\r\n";
  config::HeaderPolicy policy;
  policy.underscore_fields = config::UnderscoreFields::Pass;
  auto out = forward(raw, tls_client("203.0.113.7"), policy);
  INFO(out->bytes);
  const auto& h = out->head();
  CHECK(values(h, "X_Forwarded_For") == std::vector<std::string>{"6.6.6.6"});
  CHECK(values(h, "My_Header") == std::vector<std::string>{"kept"});
  CHECK(values(h, "X-Forwarded-For") == std::vector<std::string>{"203.0.113.7"});
}

TEST_CASE("has_underscore") {
  CHECK(has_underscore("X_Forwarded_For"));
  CHECK(has_underscore("_"));
  CHECK(has_underscore("a_"));
  CHECK_FALSE(has_underscore("X-Forwarded-For"));
  CHECK_FALSE(has_underscore(""));
}
