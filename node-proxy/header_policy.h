#pragma once
// The node-proxy's header policy: which fields of a parsed HTTP/1.1 message
// cross the proxy, and which the proxy writes itself.
//
// Pure functions over a parsed head (common/wire/http1.h) and the connection's
// ClientInfo: no sockets, no libevent, no clock. They cannot fail: every
// input they read was validated by the parser or comes from configuration.
//
// Requests towards the upstream (Tomcat today, a peer node-proxy later):
//   - the request line keeps the method and the origin-form target as
//     received; an absolute-form target becomes origin-form and its
//     authority becomes Host (RFC 9112 3.2.2). The version is always
//     HTTP/1.1: the upstream connection is the proxy's and is kept alive.
//   - hop-by-hop fields go (Connection and every field it names,
//     Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade unless the request
//     will be tunnelled; TE goes even as "trailers": trailers are passed
//     through in both directions whatever the upstream was told), and so do
//     the received framing fields: the proxy
//     writes one Content-Length or "Transfer-Encoding: chunked" from the
//     parser's BodyFraming, never the client's text.
//   - the forwarding fields (X-Forwarded-For/-Proto/-Port/-Host/-SSL/
//     -Protocol, Forwarded, X-Real-IP) are removed wherever and however
//     often they appear, in any letter case, and the proxy writes its own
//     from ClientInfo, so that nothing a client sends can spoof them.
//   - fields whose name contains "_" go unless the policy says "pass"
//     (config::UnderscoreFields): X_Forwarded_For is a valid field name,
//     but a backend that maps "_" to "-" would take it for the proxy's
//     X-Forwarded-For (nginx drops them by default for the same reason).
//   - Expect is kept only for a recognised "100-continue" (the upstream
//     answers it; the proxy relays its 100).
//   - the peer link's own fields (X-Edgepin-*) are removed as well: only
//     the proxy writes them (UpstreamRequestOptions::extra_fields), so a
//     client can neither fake a relay marker nor reach a peer's trust.
//
// Relayed requests (the peer link, node-proxy/affinity.h): the relaying
// node writes X-Forwarded-For/-Proto/-Port from its own client connection
// as above, plus X-Edgepin-Relayed: <its node name> and, when the client
// sent an SNI, X-Edgepin-Sni. The owner believes those fields only on its
// mutually authenticated peer listener (relayed_client_info), then writes
// them anew for its Tomcat from that ClientInfo: Tomcat sees what it
// would have seen had the client arrived at the owner directly.
// Responses towards the client: hop-by-hop and framing fields go, the
// proxy writes the framing and connection fields it will honour.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "client_info.h"
#include "config_node_proxy.h"
#include "http1.h"

namespace edgepin::nodeproxy {

// The forwarding fields the proxy owns, lower-case. A client's copy of any
// of them is dropped.
inline constexpr std::string_view kForwardingFields[] = {
    "x-forwarded-for", "x-forwarded-proto",    "x-forwarded-port", "x-forwarded-host",
    "x-forwarded-ssl", "x-forwarded-protocol", "forwarded",        "x-real-ip",
};

// True when `name` (any case) is one of kForwardingFields.
bool is_forwarding_field(std::string_view name) noexcept;

// True when `name` contains an underscore (dropped unless configured).
bool has_underscore(std::string_view name) noexcept;

// The node-proxies' own fields start with this (any case).
inline constexpr std::string_view kEdgepinFieldPrefix = "x-edgepin-";
// Written by a relaying node (its node name) and, towards Tomcat, by the
// owner (the node the request came through): a relayed request is never
// relayed again.
inline constexpr std::string_view kRelayedField = "X-Edgepin-Relayed";
// The client's SNI, from the relaying node to the owner.
inline constexpr std::string_view kSniField = "X-Edgepin-Sni";

// True when `name` (any case) starts with kEdgepinFieldPrefix.
bool is_edgepin_field(std::string_view name) noexcept;

// For a request received on the peer listener over connection `link`
// (whose peer_node is the relaying node): the ClientInfo of the client the
// relaying node served, from the X-Forwarded-For (one IP address),
// X-Forwarded-Proto ("https" or "http"), X-Forwarded-Port (1..65535) and
// X-Edgepin-Sni (a host name) it wrote. A field that is absent keeps the
// link's value (a peer's own request, such as its health check). Returns
// nullopt and sets `error` when a field is repeated or malformed: the
// relaying node never writes such a request.
std::optional<ClientInfo> relayed_client_info(const http1::FieldList& fields,
                                              const ClientInfo& link, std::string& error);

// True for the methods RFC 9110 9.2.2 calls idempotent (GET, HEAD, OPTIONS,
// TRACE, PUT, DELETE): a request the proxy may send a second time.
bool is_idempotent_method(std::string_view method) noexcept;

// The canonical reason phrase for `status` ("Bad Gateway"); "Unknown" for
// codes without one.
std::string_view reason_phrase(int status) noexcept;

// An RFC 7239 node or value: the bare token when every byte is a tchar,
// else a quoted-string (IPv6 literals "[...]" and host:port always are).
std::string forwarded_value(std::string_view value);

struct UpstreamRequestOptions {
  // The request asks for an upgrade the proxy will tunnel after a 101:
  // keep Upgrade and write "Connection: upgrade".
  bool tunnel = false;
  // Ask the upstream to keep the connection open for the pool; false
  // writes "Connection: close" (no pooling).
  bool keep_alive = true;
  // Host to send when the request names none (HTTP/1.0 without Host). Must
  // be a valid Host value; the caller chooses it (SNI or the upstream).
  std::string_view default_host;
  // Written after the policy's own fields: the extension point of the
  // affinity layer (its cookie, its relay marker).
  std::span<const http1::Field> extra_fields;
};

// Appends to `out` the request head (request line to the final CRLF) to
// send upstream for `head`, received on a connection described by
// `client`, with the optional fields `policy` enables.
void build_upstream_request(const http1::RequestHead& head, const ClientInfo& client,
                            const config::HeaderPolicy& policy,
                            const UpstreamRequestOptions& options, std::string& out);

struct ClientResponseOptions {
  enum class Connection : uint8_t {
    Omit,       // an interim (1xx) response: no Connection field
    KeepAlive,  // the connection stays open ("keep-alive" is written for HTTP/1.0 clients)
    Close,      // "Connection: close"
    Upgrade,    // a 101 the proxy tunnels: keep Upgrade, "Connection: upgrade"
  };
  // How the proxy delimits the body towards the client: ContentLength and
  // Chunked write their field; UntilClose writes none (the connection
  // closes after the body); None writes none, except for a response to
  // HEAD or a 304, which keep the received Content-Length (and, towards an
  // HTTP/1.1 client, "Transfer-Encoding: chunked") as metadata.
  http1::BodyFraming framing;
  Connection connection = Connection::KeepAlive;
  bool client_http10 = false;
  // Written last (the affinity layer's Set-Cookie).
  std::span<const http1::Field> extra_fields;
};

// Appends to `out` the response head to send to the client for `head`
// received from upstream: "HTTP/1.1 STATUS REASON", the received fields
// minus hop-by-hop and framing fields, then the framing and connection
// fields `options` asks for.
void build_client_response(const http1::ResponseHead& head, const ClientResponseOptions& options,
                           std::string& out);

}  // namespace edgepin::nodeproxy
