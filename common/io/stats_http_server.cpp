#include "stats_http_server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "http1.h"
#include "prometheus.h"

namespace edgepin {

namespace {

constexpr int kBacklog = 64;
constexpr size_t kMaxStatsRequestLine = 4096;
// How long a closing connection waits for the client's EOF (see write_cb).
constexpr timeval kStatsLingerTime{1, 0};
constexpr std::string_view kHtmlType = "text/html; charset=utf-8";
constexpr std::string_view kJsonType = "application/json";
constexpr std::string_view kTextType = "text/plain; charset=utf-8";

const char* reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
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
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Error";
  }
}

bool contains_icase(std::string_view haystack, std::string_view needle) {
  if (needle.size() > haystack.size()) return false;
  for (size_t i = 0; i + needle.size() <= haystack.size(); ++i)
    if (http1::iequals(haystack.substr(i, needle.size()), needle)) return true;
  return false;
}

}  // namespace

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

StatsPage stats_page_for(std::string_view target, std::string_view accept) {
  std::string_view path = target;
  std::string_view query;
  if (size_t q = target.find('?'); q != std::string_view::npos) {
    path = target.substr(0, q);
    query = target.substr(q + 1);
  }
  if (path == "/metrics") return StatsPage::Metrics;
  if (path == "/stats;json") return StatsPage::Json;
  if (path != "/" && path != "/stats") return StatsPage::NotFound;
  // "?json" as one of the query's parameters (HAProxy's ";json" suffix is
  // handled above).
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view param = query.substr(0, amp);
    if (param == "json") return StatsPage::Json;
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return contains_icase(accept, "application/json") ? StatsPage::Json : StatsPage::Html;
}

struct StatsHttpServer::Connection {
  StatsHttpServer* owner = nullptr;
  BufferEventPtr bev;
  EventPtr deadline;
  std::vector<uint8_t> head;
  http1::RequestParser parser{http1::Limits{.max_head_bytes = kMaxStatsRequestHead,
                                            .max_fields = kMaxStatsRequestFields,
                                            .max_request_line = kMaxStatsRequestLine}};
  bool responding = false;
  bool lingering = false;  // answer sent and write side shut: draining input
};

StatsHttpServer::StatsHttpServer(Options options, Pages pages)
    : options_(std::move(options)), pages_(std::move(pages)), loop_(options_.thread_name) {}

StatsHttpServer::~StatsHttpServer() { stop(); }

std::string StatsHttpServer::start() {
  const std::string where = options_.name + ": ";
  sockaddr_storage ss{};
  socklen_t len = options_.bind.to_sockaddr(ss);
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  int fd = ::socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  auto fail = [&](const char* what) {
    std::string err = where + what + " " + options_.bind.to_string() + ": " + std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return err;
  };
  if (fd < 0) return fail("socket");
  // SO_REUSEADDR only (no SO_REUSEPORT): a second process on the same
  // stats address must fail to start, not share the port.
  int one = 1;
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) return fail("setsockopt");
  if (sa->sa_family == AF_INET6 &&
      ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0)
    return fail("setsockopt IPV6_V6ONLY");
  if (::bind(fd, sa, len) != 0) return fail("bind");
  if (::listen(fd, kBacklog) != 0) return fail("listen");
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0)
    return fail("getsockname");
  auto bound_addr = SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&bound), bound_len);
  port_ = bound_addr ? bound_addr->port() : options_.bind.port();
  listener_.reset(evconnlistener_new(loop_.base(), accept_cb, this,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd));
  if (!listener_) return fail("evconnlistener_new");
  loop_.start();
  return {};
}

void StatsHttpServer::stop() {
  loop_.stop();
  connections_.clear();
  listener_.reset();
}

void StatsHttpServer::accept_cb(evconnlistener*, evutil_socket_t fd, sockaddr*, int, void* arg) {
  static_cast<StatsHttpServer*>(arg)->on_accept(fd);
}

void StatsHttpServer::on_accept(evutil_socket_t fd) {
  if (connections_.size() >= options_.max_clients) {
    ::close(fd);
    return;
  }
  auto c = std::make_unique<Connection>();
  c->owner = this;
  c->bev.reset(bufferevent_socket_new(loop_.base(), fd, BEV_OPT_CLOSE_ON_FREE));
  c->deadline.reset(evtimer_new(loop_.base(), deadline_cb, c.get()));
  if (!c->bev || !c->deadline) {
    if (!c->bev) ::close(fd);
    return;
  }
  Connection* raw = c.get();
  connections_.emplace(raw, std::move(c));
  bufferevent_setcb(raw->bev.get(), read_cb, write_cb, event_cb, raw);
  // The whole exchange, slow sender or slow reader, fits in one deadline.
  evtimer_add(raw->deadline.get(), &options_.deadline);
  bufferevent_setwatermark(raw->bev.get(), EV_READ, 0, kMaxStatsRequestHead);
  bufferevent_enable(raw->bev.get(), EV_READ);
}

void StatsHttpServer::read_cb(bufferevent*, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  c->owner->on_read(*c);
}

void StatsHttpServer::write_cb(bufferevent*, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  if (!c->responding || c->lingering) return;
  // The answer is flushed. Closing now with unread request bytes (a body,
  // the rest of an oversized head) would make the kernel send a reset that
  // can destroy the answer before the client reads it. So: send our FIN,
  // read and discard until the client's EOF, within a short linger time
  // (nginx's lingering close).
  c->lingering = true;
  ::shutdown(bufferevent_getfd(c->bev.get()), SHUT_WR);
  evbuffer_drain(bufferevent_get_input(c->bev.get()),
                 evbuffer_get_length(bufferevent_get_input(c->bev.get())));
  bufferevent_setwatermark(c->bev.get(), EV_READ, 0, 0);
  bufferevent_enable(c->bev.get(), EV_READ);
  evtimer_add(c->deadline.get(), &kStatsLingerTime);
}

void StatsHttpServer::event_cb(bufferevent*, short, void* arg) {
  // EOF before a whole request, or an error; or the client's EOF after the
  // answer: nothing more to do.
  auto* c = static_cast<Connection*>(arg);
  c->owner->close(*c);
}

void StatsHttpServer::deadline_cb(evutil_socket_t, short, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  c->owner->close(*c);
}

void StatsHttpServer::on_read(Connection& c) {
  evbuffer* in = bufferevent_get_input(c.bev.get());
  if (c.responding) {
    evbuffer_drain(in, evbuffer_get_length(in));  // lingering: discard
    return;
  }
  // The parser's own limit refuses a head over kMaxStatsRequestHead; one
  // byte past it is all it needs to say so.
  size_t room = kMaxStatsRequestHead + 1 - c.head.size();
  size_t n = std::min(room, evbuffer_get_length(in));
  size_t old = c.head.size();
  c.head.resize(old + n);
  evbuffer_remove(in, c.head.data() + old, n);
  evbuffer_drain(in, evbuffer_get_length(in));

  http1::HeadResult r = c.parser.parse(c.head);
  if (r.status == ParseStatus::NeedMore) {
    if (c.head.size() > kMaxStatsRequestHead)
      respond(c, 431, kTextType, "request head too large\n");
    return;
  }
  if (r.status == ParseStatus::Error) {
    int status = http1::http_status(r.error);
    respond(c, status, kTextType, std::string(http1::to_string(r.error)) + "\n");
    return;
  }
  const http1::RequestHead& h = c.parser.head();
  const bool head_only = h.method == "HEAD";
  if (h.method != "GET" && !head_only) {
    respond(c, 405, kTextType, "only GET and HEAD\n", "Allow: GET, HEAD\r\n");
    return;
  }
  const http1::Field* accept = h.fields.find("Accept");
  switch (stats_page_for(h.path, accept ? accept->value : std::string_view())) {
    case StatsPage::Html:
      respond(c, 200, kHtmlType, pages_.html(), {}, !head_only);
      return;
    case StatsPage::Json:
      respond(c, 200, kJsonType, pages_.json(), {}, !head_only);
      return;
    case StatsPage::Metrics:
      respond(c, 200, prometheus::kContentType, pages_.metrics(), {}, !head_only);
      return;
    case StatsPage::NotFound:
      respond(c, 404, kTextType, "not found: try /stats, /stats;json or /metrics\n", {},
              !head_only);
      return;
  }
}

void StatsHttpServer::respond(Connection& c, int status, std::string_view content_type,
                              std::string body, const std::string& extra_headers, bool send_body) {
  c.responding = true;
  bufferevent_disable(c.bev.get(), EV_READ);
  // HEAD gets the headers GET would, Content-Length included.
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) +
                     "\r\nContent-Type: " + std::string(content_type) +
                     "\r\nContent-Length: " + std::to_string(body.size()) +
                     "\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n" +
                     extra_headers + "Connection: close\r\n\r\n";
  bufferevent_write(c.bev.get(), head.data(), head.size());
  if (send_body) bufferevent_write(c.bev.get(), body.data(), body.size());
}

void StatsHttpServer::close(Connection& c) {
  // Destroys `c`: its bufferevent (closing the socket) and its timer.
  connections_.erase(&c);
}

}  // namespace edgepin
