#include "header_policy.h"

namespace edgepin::nodeproxy {

namespace {

constexpr std::string_view kCrlf = "\r\n";

void append_field(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append(kCrlf);
}

// RFC 9110 5.6.2 tchar.
bool is_tchar(unsigned char c) noexcept {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

// The client's address as the forwarding fields carry it: an IPv4 client
// seen on a dual-stack socket is written as IPv4.
std::string client_ip(const ClientInfo& client) {
  return client.client.ip().unmapped().to_string();
}

}  // namespace

bool is_forwarding_field(std::string_view name) noexcept {
  for (std::string_view f : kForwardingFields)
    if (http1::iequals(name, f)) return true;
  return false;
}

bool is_edgepin_field(std::string_view name) noexcept {
  return name.size() >= kEdgepinFieldPrefix.size() &&
         http1::iequals(name.substr(0, kEdgepinFieldPrefix.size()), kEdgepinFieldPrefix);
}

bool has_underscore(std::string_view name) noexcept {
  return name.find('_') != std::string_view::npos;
}

namespace {

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool is_host_name(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '.'))
      return false;
  return true;
}

}  // namespace

std::optional<ClientInfo> relayed_client_info(const http1::FieldList& fields,
                                              const ClientInfo& link, std::string& error) {
  std::optional<std::string_view> xff, proto, port, sni;
  for (const http1::Field& f : fields) {
    std::optional<std::string_view>* slot = nullptr;
    if (http1::iequals(f.name, "x-forwarded-for"))
      slot = &xff;
    else if (http1::iequals(f.name, "x-forwarded-proto"))
      slot = &proto;
    else if (http1::iequals(f.name, "x-forwarded-port"))
      slot = &port;
    else if (http1::iequals(f.name, kSniField))
      slot = &sni;
    if (!slot) continue;
    if (*slot) {
      error = "relayed request repeats " + std::string(f.name);
      return std::nullopt;
    }
    *slot = trim_ows(f.value);
  }
  ClientInfo info = link;
  if (xff) {
    const std::optional<IpAddress> ip = IpAddress::parse(*xff);
    if (!ip) {
      error = "relayed request has a malformed X-Forwarded-For";
      return std::nullopt;
    }
    info.client = SocketAddress(*ip, 0);
    info.proxied = true;
  }
  if (proto) {
    if (*proto == "https")
      info.tls = true;
    else if (*proto == "http")
      info.tls = false;
    else {
      error = "relayed request has a malformed X-Forwarded-Proto";
      return std::nullopt;
    }
  }
  if (port) {
    unsigned value = 0;
    bool ok = !port->empty() && port->size() <= 5;
    for (char c : *port) {
      ok = ok && c >= '0' && c <= '9';
      if (ok) value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (!ok || value == 0 || value > 65535) {
      error = "relayed request has a malformed X-Forwarded-Port";
      return std::nullopt;
    }
    info.public_port = static_cast<uint16_t>(value);
  }
  if (sni && !is_host_name(*sni)) {
    error = "relayed request has a malformed " + std::string(kSniField);
    return std::nullopt;
  }
  info.sni = sni ? std::string(*sni) : std::string();
  // The link's own TLS facts do not describe the client's connection.
  if (xff || proto) {
    info.tls_version.clear();
    info.tls_cipher.clear();
    info.tls_resumed = false;
    info.alpn.clear();
  }
  return info;
}

bool is_idempotent_method(std::string_view method) noexcept {
  static constexpr std::string_view kIdempotent[] = {"GET",   "HEAD", "OPTIONS",
                                                     "TRACE", "PUT",  "DELETE"};
  for (std::string_view m : kIdempotent)
    if (method == m) return true;  // methods are case-sensitive (RFC 9110 9.1)
  return false;
}

std::string_view reason_phrase(int status) noexcept {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 103:
      return "Early Hints";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 417:
      return "Expectation Failed";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

std::string forwarded_value(std::string_view value) {
  bool token = !value.empty();
  for (unsigned char c : value) token = token && is_tchar(c);
  if (token) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

void build_upstream_request(const http1::RequestHead& head, const ClientInfo& client,
                            const config::HeaderPolicy& policy,
                            const UpstreamRequestOptions& options, std::string& out) {
  // Request line: origin-form always (an absolute-form path may be empty or
  // start with "?"), HTTP/1.1 always.
  out.append(head.method);
  out.push_back(' ');
  if (head.form == http1::TargetForm::Absolute && (head.path.empty() || head.path.front() != '/'))
    out.push_back('/');
  out.append(head.form == http1::TargetForm::Authority ? head.target : head.path);
  out.append(" HTTP/1.1\r\n");

  // Host first, from the authority the request is for: with an absolute
  // target that is the target's authority, not the received Host.
  const std::string_view host = head.authority.empty() ? options.default_host : head.authority;
  if (!host.empty()) append_field(out, "Host", host);

  http1::HopByHopOptions hop;
  hop.keep_upgrade = options.tunnel;
  hop.reframe = true;
  for (const http1::Field& f : head.fields) {
    if (http1::iequals(f.name, "host")) continue;
    if (http1::is_hop_by_hop(f.name, head.fields, hop)) continue;
    if (is_forwarding_field(f.name)) continue;
    if (is_edgepin_field(f.name)) continue;
    if (policy.underscore_fields == config::UnderscoreFields::Drop && has_underscore(f.name))
      continue;
    if (http1::iequals(f.name, "expect") && !head.expect_continue) continue;
    append_field(out, f.name, f.value);
  }

  const std::string ip = client_ip(client);
  const char* proto = client.tls ? "https" : "http";
  append_field(out, "X-Forwarded-For", ip);
  append_field(out, "X-Forwarded-Proto", proto);
  append_field(out, "X-Forwarded-Port", std::to_string(client.public_port));
  if (client.tls) append_field(out, "X-Forwarded-SSL", "on");
  append_field(out, "X-Forwarded-Protocol", proto);
  if (policy.x_forwarded_host && !host.empty()) append_field(out, "X-Forwarded-Host", host);
  if (policy.x_real_ip) append_field(out, "X-Real-IP", ip);
  if (policy.forwarded_rfc7239) {
    // RFC 7239 6: an IPv6 node is "[addr]" and must be quoted.
    std::string node = client.client.ip().unmapped().is_v4() ? ip : "[" + ip + "]";
    std::string value = "for=" + forwarded_value(node) + ";proto=" + proto;
    if (!host.empty()) value += ";host=" + forwarded_value(host);
    append_field(out, "Forwarded", value);
  }

  switch (head.framing.kind) {
    case http1::BodyFraming::Kind::ContentLength:
      append_field(out, "Content-Length", std::to_string(head.framing.length));
      break;
    case http1::BodyFraming::Kind::Chunked:
      append_field(out, "Transfer-Encoding", "chunked");
      break;
    case http1::BodyFraming::Kind::None:
    case http1::BodyFraming::Kind::UntilClose:  // never for a request
      break;
  }
  append_field(out, "Connection",
               options.tunnel       ? "upgrade"
               : options.keep_alive ? "keep-alive"
                                    : "close");
  for (const http1::Field& f : options.extra_fields) append_field(out, f.name, f.value);
  out.append(kCrlf);
}

void build_client_response(const http1::ResponseHead& head, const ClientResponseOptions& options,
                           std::string& out) {
  using Connection = ClientResponseOptions::Connection;
  out.append("HTTP/1.1 ");
  out.append(std::to_string(head.status));
  out.push_back(' ');
  out.append(head.reason.empty() ? reason_phrase(head.status) : head.reason);
  out.append(kCrlf);

  http1::HopByHopOptions hop;
  hop.keep_upgrade = options.connection == Connection::Upgrade;
  hop.reframe = true;
  for (const http1::Field& f : head.fields) {
    if (http1::is_hop_by_hop(f.name, head.fields, hop)) continue;
    append_field(out, f.name, f.value);
  }

  switch (options.framing.kind) {
    case http1::BodyFraming::Kind::ContentLength:
      append_field(out, "Content-Length", std::to_string(options.framing.length));
      break;
    case http1::BodyFraming::Kind::Chunked:
      append_field(out, "Transfer-Encoding", "chunked");
      break;
    case http1::BodyFraming::Kind::UntilClose:
      break;
    case http1::BodyFraming::Kind::None:
      // No body follows, but a HEAD or 304 response describes the body a
      // GET would get (RFC 9110 8.6, 15.4.5); 1xx and 204 carry none.
      if (head.status >= 200 && head.status != 204) {
        if (head.has_content_length)
          append_field(out, "Content-Length", std::to_string(head.content_length));
        else if (head.chunked && !options.client_http10)
          append_field(out, "Transfer-Encoding", "chunked");
      }
      break;
  }
  switch (options.connection) {
    case Connection::Omit:
      break;
    case Connection::KeepAlive:
      if (options.client_http10) append_field(out, "Connection", "keep-alive");
      break;
    case Connection::Close:
      append_field(out, "Connection", "close");
      break;
    case Connection::Upgrade:
      append_field(out, "Connection", "upgrade");
      break;
  }
  for (const http1::Field& f : options.extra_fields) append_field(out, f.name, f.value);
  out.append(kCrlf);
}

}  // namespace edgepin::nodeproxy
