// The HTTP/1.1 client codec (H1Connection) with its exchanges, upstream
// requests and tunnels, in-process: one event_base on the test thread, the client
// side is a socketpair whose outer end the test drives, and the upstream is
// a small HTTP/1.1 server on 127.0.0.1 (port 0) running on the same loop.
// Every wait is bounded by a deadline (run_until).
#include <catch2/catch.hpp>

#include <event2/listener.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "counters.h"
#include "exchange.h"
#include "h1_connection.h"
#include "http1.h"
#include "upstream_pool.h"
#include "worker_context.h"

using namespace edgepin;
using namespace edgepin::nodeproxy;
using namespace std::chrono_literals;

namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

std::string field_of(const Fields& fields, std::string_view name) {
  for (const auto& [n, v] : fields)
    if (http1::iequals(n, name)) return v;
  return {};
}

size_t count_of(const Fields& fields, std::string_view name) {
  size_t n = 0;
  for (const auto& f : fields) n += http1::iequals(f.first, name) ? 1 : 0;
  return n;
}

std::string pattern(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// ---------------------------------------------------------------------------
// The upstream: parses requests with the project's parser (a request it
// cannot parse is counted in parse_errors) and answers through callbacks.

struct UpRequest {
  std::string method, target;
  Fields fields;
  std::string body;
  size_t conn = 0;  // index of the upstream connection it came on
};

class Upstream {
 public:
  struct Conn {
    Upstream* srv = nullptr;
    size_t index = 0;
    BufferEventPtr bev;
    http1::RequestParser parser;
    std::optional<http1::BodyDecoder> body;
    bool in_body = false;
    UpRequest cur;
    int served = 0;
    bool echo = false;  // after a 101: every byte goes back
    bool closing = false;
    // A generated response body written as the output drains.
    uint64_t stream_left = 0;
    uint64_t stream_pos = 0;
    bool stream_chunked = false;
    std::string stream_data;

    void send(std::string_view s) {
      if (bev) evbuffer_add(bufferevent_get_output(bev.get()), s.data(), s.size());
    }
    void close() { bev.reset(); }
    // Closes once everything written so far has gone out (close-delimited).
    void close_when_flushed() {
      if (!bev) return;
      closing = true;
      bufferevent_setwatermark(bev.get(), EV_WRITE, 0, 0);
      if (evbuffer_get_length(bufferevent_get_output(bev.get())) == 0) close();
    }
    bool open() const { return bev != nullptr; }
  };

  explicit Upstream(event_base* base) : base_(base) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = 0;
    listener_.reset(evconnlistener_new_bind(base, accept_cb, this,
                                            LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
                                            reinterpret_cast<sockaddr*>(&sin), sizeof sin));
    REQUIRE(listener_);
    sockaddr_in bound{};
    socklen_t len = sizeof bound;
    getsockname(evconnlistener_get_fd(listener_.get()), reinterpret_cast<sockaddr*>(&bound), &len);
    port = ntohs(bound.sin_port);
  }
  ~Upstream() {
    timers_.clear();
    conns.clear();
    if (rate_) ev_token_bucket_cfg_free(rate_);
  }

  // Limits how fast every later connection is read (a slow upstream).
  void limit_read_rate(size_t bytes_per_tick) {
    timeval tick{0, 10000};
    rate_ = ev_token_bucket_cfg_new(bytes_per_tick, bytes_per_tick, EV_RATE_LIMIT_MAX,
                                    EV_RATE_LIMIT_MAX, &tick);
  }

  // Runs `fn` after `ms` on the loop.
  void later(int ms, std::function<void()> fn) {
    auto t = std::make_unique<Timer>();
    t->fn = std::move(fn);
    t->ev.reset(evtimer_new(base_, timer_cb, t.get()));
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    evtimer_add(t->ev.get(), &tv);
    timers_.push_back(std::move(t));
  }

  // Answers with a generated body of `n` bytes, written as the output drains.
  void stream(Conn& c, uint64_t n, bool chunked, uint32_t seed) {
    std::string head = "HTTP/1.1 200 OK\r\n";
    head += chunked ? "Transfer-Encoding: chunked\r\n"
                    : "Content-Length: " + std::to_string(n) + "\r\n";
    head += "\r\n";
    c.send(head);
    c.stream_left = n;
    c.stream_pos = 0;
    c.stream_chunked = chunked;
    c.stream_data = pattern(n, seed);
    fill(c);
  }

  std::function<void(Conn&, const UpRequest&)> on_head;     // optional
  std::function<void(Conn&, const UpRequest&)> on_request;  // the answer
  std::vector<std::unique_ptr<Conn>> conns;
  std::vector<UpRequest> requests;
  uint64_t bytes_received = 0;
  int parse_errors = 0;
  uint16_t port = 0;

 private:
  struct Timer {
    std::function<void()> fn;
    EventPtr ev;
  };

  static void timer_cb(evutil_socket_t, short, void* arg) {
    auto* t = static_cast<Timer*>(arg);
    t->fn();
  }

  static void accept_cb(evconnlistener*, evutil_socket_t fd, sockaddr*, int, void* arg) {
    auto* self = static_cast<Upstream*>(arg);
    auto c = std::make_unique<Conn>();
    c->srv = self;
    c->index = self->conns.size();
    c->bev.reset(bufferevent_socket_new(self->base_, fd, BEV_OPT_CLOSE_ON_FREE));
    bufferevent_setcb(c->bev.get(), read_cb, write_cb, event_cb, c.get());
    bufferevent_setwatermark(c->bev.get(), EV_WRITE, 16 * 1024, 0);
    if (self->rate_) bufferevent_set_rate_limit(c->bev.get(), self->rate_);
    bufferevent_enable(c->bev.get(), EV_READ | EV_WRITE);
    self->conns.push_back(std::move(c));
  }

  static void fill(Conn& c) {
    if (!c.bev) return;
    evbuffer* out = bufferevent_get_output(c.bev.get());
    while (c.stream_left > 0 && evbuffer_get_length(out) < 64 * 1024) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(c.stream_left, 16 * 1024));
      if (c.stream_chunked) {
        char size[32];
        snprintf(size, sizeof size, "%zx;piece=1\r\n", n);
        evbuffer_add(out, size, strlen(size));
      }
      evbuffer_add(out, c.stream_data.data() + c.stream_pos, n);
      if (c.stream_chunked) evbuffer_add(out, "\r\n", 2);
      c.stream_pos += n;
      c.stream_left -= n;
      if (c.stream_left == 0 && c.stream_chunked) c.send("0\r\nX-Trailer: t\r\n\r\n");
    }
  }

  static void write_cb(bufferevent* bev, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
      c->close();
      return;
    }
    fill(*c);
  }

  static void event_cb(bufferevent*, short what, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) c->close();
  }

  static void read_cb(bufferevent* bev, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    Upstream* self = c->srv;
    evbuffer* in = bufferevent_get_input(bev);
    for (;;) {
      if (!c->open()) return;
      if (c->echo) {
        self->bytes_received += evbuffer_get_length(in);
        evbuffer_add_buffer(bufferevent_get_output(c->bev.get()), in);
        return;
      }
      if (!c->in_body) {
        const size_t len = evbuffer_get_length(in);
        if (len == 0) return;
        const uint8_t* p = evbuffer_pullup(in, static_cast<ev_ssize_t>(len));
        const auto r = c->parser.parse({p, len});
        if (r.status == ParseStatus::NeedMore) return;
        if (r.status == ParseStatus::Error) {
          ++self->parse_errors;
          c->close();
          return;
        }
        const auto& h = c->parser.head();
        c->cur = UpRequest{};
        c->cur.method = std::string(h.method);
        c->cur.target = std::string(h.target);
        c->cur.conn = c->index;
        for (const auto& f : h.fields)
          c->cur.fields.emplace_back(std::string(f.name), std::string(f.value));
        c->body.emplace(h.framing);
        evbuffer_drain(in, r.consumed);
        self->bytes_received += r.consumed;
        c->in_body = true;
        if (self->on_head) self->on_head(*c, c->cur);
        continue;
      }
      evbuffer_iovec v;
      std::span<const uint8_t> seg;
      if (evbuffer_peek(in, -1, nullptr, &v, 1) >= 1)
        seg = {static_cast<const uint8_t*>(v.iov_base), v.iov_len};
      const auto r = c->body->decode(seg);
      if (r.status == ParseStatus::Error) {
        ++self->parse_errors;
        c->close();
        return;
      }
      c->cur.body.append(reinterpret_cast<const char*>(r.data.data()), r.data.size());
      evbuffer_drain(in, r.consumed);
      self->bytes_received += r.consumed;
      if (r.status == ParseStatus::Done) {
        c->in_body = false;
        c->parser.reset();
        ++c->served;
        self->requests.push_back(c->cur);
        self->on_request(*c, c->cur);
        continue;
      }
      if (r.consumed == 0) return;
    }
  }

  event_base* base_;
  ListenerPtr listener_;
  ev_token_bucket_cfg* rate_ = nullptr;
  std::vector<std::unique_ptr<Timer>> timers_;
};

std::string ok(std::string_view body, std::string_view extra = "") {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
         std::string(extra) + "\r\n" + std::string(body);
}

// ---------------------------------------------------------------------------
// The client's view: responses parsed incrementally from the outer end.

struct Response {
  int status = 0;
  Fields fields;
  std::string body;
  std::string header(std::string_view n) const { return field_of(fields, n); }
  bool has(std::string_view n) const { return count_of(fields, n) > 0; }
};

class ResponseReader {
 public:
  // Methods of the requests sent, oldest first (HEAD answers have no body).
  std::deque<std::string> methods;
  std::vector<Response> responses;  // interim (1xx) ones included
  std::string after_upgrade;        // bytes after a 101
  bool upgraded = false;
  bool eof = false;
  bool error = false;

  void feed(const char* p, size_t n) {
    if (upgraded) {
      after_upgrade.append(p, n);
      return;
    }
    buf_.append(p, n);
    process();
  }
  void on_eof() {
    eof = true;
    process();
    if (in_body_ && body_) {
      const auto r = body_->finish();
      if (r.status == ParseStatus::Done)
        complete();
      else
        error = true;
    }
  }
  size_t finals() const {
    size_t n = 0;
    for (const auto& r : responses) n += (r.status >= 200 || r.status == 101) ? 1 : 0;
    return n;
  }

 private:
  void complete() {
    responses.push_back(std::move(cur_));
    cur_ = Response{};
    in_body_ = false;
    body_.reset();
    parser_.reset();
    if (!methods.empty()) methods.pop_front();
  }
  void process() {
    while (!error && !upgraded) {
      if (!in_body_) {
        if (buf_.empty()) return;
        const auto r = parser_.parse({reinterpret_cast<const uint8_t*>(buf_.data()), buf_.size()});
        if (r.status == ParseStatus::NeedMore) return;
        if (r.status == ParseStatus::Error) {
          error = true;
          return;
        }
        const auto& h = parser_.head();
        cur_.status = h.status;
        for (const auto& f : h.fields)
          cur_.fields.emplace_back(std::string(f.name), std::string(f.value));
        const std::string method = methods.empty() ? "GET" : methods.front();
        const http1::BodyFraming framing = http1::response_framing(h, method);
        buf_.erase(0, r.consumed);
        if (h.status == 101) {
          responses.push_back(std::move(cur_));
          cur_ = Response{};
          upgraded = true;
          after_upgrade = std::move(buf_);
          buf_.clear();
          return;
        }
        if (h.status < 200) {
          responses.push_back(std::move(cur_));
          cur_ = Response{};
          parser_.reset();
          continue;
        }
        body_.emplace(framing);
        in_body_ = true;
      }
      const auto r = body_->decode({reinterpret_cast<const uint8_t*>(buf_.data()), buf_.size()});
      if (r.status == ParseStatus::Error) {
        error = true;
        return;
      }
      cur_.body.append(reinterpret_cast<const char*>(r.data.data()), r.data.size());
      buf_.erase(0, r.consumed);
      if (r.status == ParseStatus::Done) {
        complete();
        continue;
      }
      if (r.consumed == 0 || buf_.empty()) return;
    }
  }

  std::string buf_;
  http1::ResponseParser parser_{http1::Limits{}};
  std::optional<http1::BodyDecoder> body_;
  Response cur_;
  bool in_body_ = false;
};

// ---------------------------------------------------------------------------
// The harness: the worker's world built by hand.

struct Client {
  int fd = -1;
  H1Connection* conn = nullptr;
  ResponseReader reader;
  size_t read_limit = SIZE_MAX;  // bytes read per loop turn (a slow client)
};

class Harness {
 public:
  Harness() : base(event_base_new()), upstream(std::make_unique<Upstream>(base.get())) {
    cfg.upstream.address = SocketAddress(IpAddress::loopback_v4(), upstream->port);
    cfg.log.access_log = false;  // failures still log (as warnings)
    ctx.base = base.get();
    ctx.config = &cfg;
    ctx.node = &node;
    ctx.counters = &counters;
    ctx.stats_page = [](bool json) {
      LocalResponse r;
      r.content_type = json ? "application/json" : "text/html; charset=utf-8";
      r.body = json ? "{\"node\":\"node-a\"}" : "<html><body>node-a</body></html>";
      return r;
    };
    tick_.reset(event_new(
        base.get(), -1, EV_PERSIST, [](evutil_socket_t, short, void*) {}, nullptr));
    timeval tv{0, 2000};
    event_add(tick_.get(), &tv);
  }
  ~Harness() {
    live.clear();
    for (auto& c : clients)
      if (c->fd >= 0) ::close(c->fd);
    pool.reset();
    upstream.reset();
    tick_.reset();
  }

  // The pool is built once the test has set cfg.upstream.
  void make_pool() {
    pool = std::make_unique<UpstreamPool>(base.get(), cfg.upstream, counters);
    ctx.upstream = pool.get();
  }

  Client& connect(ClientInfo info = default_info()) {
    if (!pool) make_pool();
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    auto c = std::make_unique<Client>();
    c->fd = sv[0];
    BufferEventPtr bev(bufferevent_socket_new(base.get(), sv[1], BEV_OPT_CLOSE_ON_FREE));
    auto conn = std::make_unique<H1Connection>(ctx, std::move(bev), std::move(info),
                                               [this](ClientConnection* hc) {
                                                 ++closed;
                                                 live.erase(hc);  // destroys it, as a worker does
                                               });
    c->conn = conn.get();
    H1Connection* raw = conn.get();
    live[raw] = std::move(conn);
    raw->start();
    clients.push_back(std::move(c));
    return *clients.back();
  }

  static ClientInfo default_info() {
    ClientInfo i;
    i.listener = "https";
    i.peer = SocketAddress(*IpAddress::parse("10.0.0.2"), 40000);
    i.client = SocketAddress(*IpAddress::parse("192.0.2.10"), 51000);
    i.proxied = true;
    i.public_port = 443;
    i.tls = true;
    i.tls_version = "TLSv1.3";
    i.sni = "app.example";
    return i;
  }

  bool alive(const Client& c) const { return live.count(c.conn) != 0; }

  // Sends `data` (all of it, turning the loop while the socket is full).
  void send(Client& c, const std::string& data, std::optional<std::string> method = std::nullopt) {
    if (method) c.reader.methods.push_back(*method);
    size_t pos = 0;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (pos < data.size() && std::chrono::steady_clock::now() < deadline) {
      ssize_t n = ::send(c.fd, data.data() + pos, data.size() - pos, MSG_NOSIGNAL);
      if (n > 0)
        pos += static_cast<size_t>(n);
      else if (n < 0 && errno != EAGAIN)
        break;
      else
        turn();
    }
    REQUIRE(pos == data.size());
  }

  void pump(Client& c) {
    char buf[16384];
    size_t total = 0;
    while (!c.reader.eof && total < c.read_limit) {
      const size_t want = std::min(sizeof buf, c.read_limit - total);
      ssize_t n = ::recv(c.fd, buf, want, 0);
      if (n > 0) {
        c.reader.feed(buf, static_cast<size_t>(n));
        total += static_cast<size_t>(n);
      } else if (n == 0) {
        c.reader.on_eof();
      } else {
        break;
      }
    }
  }

  void turn() {
    event_base_loop(base.get(), EVLOOP_ONCE);
    for (auto& [p, conn] : live) max_buffered = std::max(max_buffered, conn->buffered_bytes());
  }

  // Turns the loop (reading every client) until `done` or the deadline.
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 5000ms) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      for (auto& c : clients) pump(*c);
      if (done()) return true;
      turn();
    }
    for (auto& c : clients) pump(*c);
    return done();
  }

  bool wait_responses(Client& c, size_t n, std::chrono::milliseconds limit = 5000ms) {
    return run_until([&] { return c.reader.finals() >= n || c.reader.error; }, limit);
  }
  bool wait_eof(Client& c, std::chrono::milliseconds limit = 5000ms) {
    return run_until([&] { return c.reader.eof; }, limit);
  }

  EventBasePtr base;
  std::unique_ptr<Upstream> upstream;
  config::NodeProxyConfig cfg;
  NodeCounters counters;
  NodeState node;
  WorkerContext ctx;
  std::unique_ptr<UpstreamPool> pool;
  std::map<ClientConnection*, std::unique_ptr<H1Connection>> live;
  std::vector<std::unique_ptr<Client>> clients;
  size_t closed = 0;
  size_t max_buffered = 0;

 private:
  EventPtr tick_;
};

// Answers every request with "<method> <target> n=<body bytes>".
void echo_meta(Harness& h) {
  h.upstream->on_request = [](Upstream::Conn& c, const UpRequest& r) {
    c.send(ok(r.method + " " + r.target + " n=" + std::to_string(r.body.size())));
  };
}

uint64_t ends(const Harness& h, RequestEnd e) {
  return h.counters.request_ends[static_cast<size_t>(e)].get();
}

}  // namespace

// ---------------------------------------------------------------------------

TEST_CASE("keep-alive: sequential requests share one client and one upstream connection") {
  Harness h;
  echo_meta(h);
  Client& c = h.connect();
  for (int i = 0; i < 3; ++i) {
    h.send(c,
           "GET /seq/" + std::to_string(i) +
               " HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
           "GET");
    REQUIRE(h.wait_responses(c, static_cast<size_t>(i + 1)));
    const Response& r = c.reader.responses.back();
    CHECK(r.status == 200);
    CHECK(r.body == "GET /seq/" + std::to_string(i) + " n=0");
    CHECK_FALSE(r.has("Connection"));
  }
  CHECK(h.alive(c));
  REQUIRE(h.upstream->requests.size() == 3);
  for (const auto& r : h.upstream->requests) {
    CHECK(r.conn == 0);
    CHECK(field_of(r.fields, "X-Forwarded-For") == "192.0.2.10");
    CHECK(count_of(r.fields, "X-Forwarded-For") == 1);
    CHECK(field_of(r.fields, "X-Forwarded-Proto") == "https");
    CHECK(field_of(r.fields, "X-Forwarded-Port") == "443");
    CHECK(field_of(r.fields, "X-Forwarded-SSL") == "on");
    CHECK(field_of(r.fields, "Connection") == "keep-alive");
  }
  CHECK(h.counters.upstream_connects.get() == 1);
  CHECK(h.counters.upstream_reuses.get() == 2);
  CHECK(ends(h, RequestEnd::Complete) == 3);
  CHECK(h.counters.responses_by_class[2].get() == 3);
  CHECK(h.pool->idle_count() == 1);
}

TEST_CASE("pipelined requests are answered in order, one at a time") {
  Harness h;
  // The first answer is the slowest: a proxy answering out of order or
  // forwarding the next request early would show it.
  h.upstream->on_request = [&h](Upstream::Conn& c, const UpRequest& r) {
    Upstream::Conn* cp = &c;
    const std::string body = r.target + " seen=" + std::to_string(h.upstream->requests.size());
    if (r.target == "/a")
      h.upstream->later(80, [cp, body] { cp->send(ok(body)); });
    else
      c.send(ok(body));
  };
  Client& c = h.connect();
  std::string all;
  for (const char* t : {"/a", "/b", "/c"}) {
    all += std::string("GET ") + t + " HTTP/1.1\r\nHost: a\r\n\r\n";
    c.reader.methods.push_back("GET");
  }
  all += "POST /d HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody";
  c.reader.methods.push_back("POST");
  h.send(c, all);
  REQUIRE(h.wait_responses(c, 4));
  REQUIRE(c.reader.responses.size() == 4);
  CHECK(c.reader.responses[0].body == "/a seen=1");
  CHECK(c.reader.responses[1].body == "/b seen=2");
  CHECK(c.reader.responses[2].body == "/c seen=3");
  CHECK(c.reader.responses[3].body == "/d seen=4");
  REQUIRE(h.upstream->requests.size() == 4);
  CHECK(h.upstream->requests[3].body == "body");
  CHECK(h.upstream->conns.size() == 1);
}

TEST_CASE("chunked request re-framed as chunked, chunked response relayed") {
  Harness h;
  h.upstream->on_request = [](Upstream::Conn& c, const UpRequest& r) {
    char size[16];
    snprintf(size, sizeof size, "%zx", r.body.size());
    c.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n \r\n" +
           std::string(size) + "\r\n" + r.body + "\r\n0\r\nX-Trailer: 1\r\n\r\n");
  };
  Client& c = h.connect();
  h.send(c,
         "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
         "3;name=value\r\nabc\r\na\r\n0123456789\r\n0\r\nX-T: t\r\n\r\n",
         "POST");
  REQUIRE(h.wait_responses(c, 1));
  const Response& r = c.reader.responses[0];
  CHECK(r.status == 200);
  CHECK(r.header("Transfer-Encoding") == "chunked");
  CHECK(r.body == "hello abc0123456789");
  REQUIRE(h.upstream->requests.size() == 1);
  const UpRequest& up = h.upstream->requests[0];
  CHECK(up.body == "abc0123456789");
  CHECK(field_of(up.fields, "Transfer-Encoding") == "chunked");
  CHECK(count_of(up.fields, "Content-Length") == 0);
  CHECK(h.upstream->parse_errors == 0);
  // And the connection is in sync for the next request.
  h.upstream->on_request = [](Upstream::Conn& cc, const UpRequest&) { cc.send(ok("next")); };
  h.send(c, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
  REQUIRE(h.wait_responses(c, 2));
  CHECK(c.reader.responses[1].body == "next");
}

TEST_CASE("Content-Length bodies both ways") {
  Harness h;
  h.upstream->on_request = [](Upstream::Conn& c, const UpRequest& r) {
    c.send(ok("got:" + r.body));
  };
  Client& c = h.connect();
  h.send(c, "PUT /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world", "PUT");
  REQUIRE(h.wait_responses(c, 1));
  CHECK(c.reader.responses[0].header("Content-Length") == "15");
  CHECK(c.reader.responses[0].body == "got:hello world");
  REQUIRE(h.upstream->requests.size() == 1);
  CHECK(field_of(h.upstream->requests[0].fields, "Content-Length") == "11");
}

TEST_CASE("HEAD, 204 and 304 have no body and keep the connection in sync") {
  Harness h;
  h.upstream->on_request = [](Upstream::Conn& c, const UpRequest& r) {
    if (r.method == "HEAD")
      c.send("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
    else if (r.target == "/204")
      c.send("HTTP/1.1 204 No Content\r\n\r\n");
    else if (r.target == "/304")
      c.send("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 77\r\n\r\n");
    else
      c.send(ok("after"));
  };
  Client& c = h.connect();
  h.send(c, "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n", "HEAD");
  h.send(c, "GET /204 HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
  h.send(c, "GET /304 HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"x\"\r\n\r\n", "GET");
  h.send(c, "GET /last HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
  REQUIRE(h.wait_responses(c, 4));
  const auto& rs = c.reader.responses;
  CHECK(rs[0].status == 200);
  CHECK(rs[0].header("Content-Length") == "1234");
  CHECK(rs[0].body.empty());
  CHECK(rs[1].status == 204);
  CHECK_FALSE(rs[1].has("Content-Length"));
  CHECK(rs[2].status == 304);
  CHECK(rs[2].header("Content-Length") == "77");
  CHECK(rs[3].body == "after");
  CHECK(h.upstream->conns.size() == 1);
  CHECK_FALSE(c.reader.error);
}

TEST_CASE("close-delimited response: relayed, then the client connection closes") {
  Harness h;
  h.upstream->on_request = [](Upstream::Conn& c, const UpRequest&) {
    c.send("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end");
    c.close_when_flushed();
  };
  Client& c = h.connect();
  h.send(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
  REQUIRE(h.wait_eof(c));
  REQUIRE(c.reader.responses.size() == 1);
  CHECK(c.reader.responses[0].body == "until the end");
  CHECK(c.reader.responses[0].header("Connection") == "close");
  CHECK_FALSE(c.reader.error);
  ::shutdown(c.fd, SHUT_WR);
  CHECK(h.run_until([&] { return !h.alive(c); }));
  CHECK(ends(h, RequestEnd::Complete) == 1);
}

TEST_CASE("chunked response to an HTTP/1.0 client is de-chunked and close-delimited") {
  Harness h;
  h.upstream->on_request = [](Upstream::Conn& c, const UpRequest&) {
    c.send(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nold "
        "\r\n6;x=y\r\nclient\r\n0\r\n\r\n");
  };
  Client& c = h.connect();
  h.send(c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "GET");
  REQUIRE(h.wait_eof(c));
  REQUIRE(c.reader.responses.size() == 1);
  CHECK(c.reader.responses[0].body == "old client");
  CHECK_FALSE(c.reader.responses[0].has("Transfer-Encoding"));
  // The upstream still got a valid HTTP/1.1 request with a Host.
  REQUIRE(h.upstream->requests.size() == 1);
  CHECK(field_of(h.upstream->requests[0].fields, "Host") == "app.example");
}

TEST_CASE("Expect: 100-continue is forwarded and the upstream's 100 relayed") {
  Harness h;
  h.upstream->on_head = [](Upstream::Conn& c, const UpRequest& r) {
    if (field_of(r.fields, "Expect") == "100-continue") c.send("HTTP/1.1 100 Continue\r\n\r\n");
  };
  h.upstream->on_request = [](Upstream::Conn& c, const UpRequest& r) {
    c.send(ok("stored " + r.body));
  };
  Client& c = h.connect();
  h.send(c, "PUT /file HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
         "PUT");
  // The body is held back until the 100 arrives.
  REQUIRE(h.run_until([&] { return !c.reader.responses.empty(); }));
  CHECK(c.reader.responses[0].status == 100);
  CHECK(h.upstream->requests.empty());
  h.send(c, "12345");
  REQUIRE(h.wait_responses(c, 1));
  REQUIRE(c.reader.responses.size() == 2);
  CHECK(c.reader.responses[1].status == 200);
  CHECK(c.reader.responses[1].body == "stored 12345");
}

TEST_CASE("4 MB each way streams through bounded buffers") {
  Harness h;
  constexpr size_t kSize = 4 * 1024 * 1024;
  // Back-pressure bound: a handful of watermarks, far below the body size.
  constexpr size_t kBound = 6 * kHighWatermark;

  SECTION("upload (Content-Length) to a slow upstream") {
    h.upstream->limit_read_rate(96 * 1024);  // about 9.6 MB/s: slower than the client
    h.upstream->on_request = [](Upstream::Conn& c, const UpRequest& r) {
      c.send(ok(std::to_string(r.body.size()) + ":" +
                std::to_string(std::hash<std::string>{}(r.body))));
    };
    const std::string body = pattern(kSize, 7);
    Client& c = h.connect();
    h.send(c,
           "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: " + std::to_string(kSize) +
               "\r\n\r\n" + body,
           "POST");
    REQUIRE(h.wait_responses(c, 1, 20000ms));
    CHECK(c.reader.responses[0].body ==
          std::to_string(kSize) + ":" + std::to_string(std::hash<std::string>{}(body)));
    CHECK(h.max_buffered > 0);
    CHECK(h.max_buffered <= kBound);
  }
  SECTION("download (chunked and Content-Length) to a client that stalls") {
    h.upstream->on_request = [&h](Upstream::Conn& c, const UpRequest& r) {
      h.upstream->stream(c, kSize, r.target == "/chunked", 11);
    };
    Client& c = h.connect();
    const std::string expected = pattern(kSize, 11);
    for (const char* t : {"/chunked", "/length"}) {
      INFO(t);
      h.max_buffered = 0;
      c.read_limit = 0;  // the client reads nothing for a while
      h.send(c, std::string("GET ") + t + " HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
      const auto stall_end = std::chrono::steady_clock::now() + 300ms;
      h.run_until([&] { return std::chrono::steady_clock::now() >= stall_end; });
      // The proxy filled its client-side buffer up to the watermark and
      // stopped there, although the upstream has megabytes to give.
      CHECK(h.max_buffered >= kHighWatermark / 2);
      CHECK(h.max_buffered <= kBound);
      c.read_limit = SIZE_MAX;
      const size_t n = c.reader.finals() + 1;
      REQUIRE(h.wait_responses(c, n, 30000ms));
      CHECK(c.reader.responses.back().body.size() == kSize);
      CHECK(c.reader.responses.back().body == expected);
      CHECK(h.max_buffered <= kBound);
    }
    CHECK(h.upstream->conns.size() == 1);
  }
}

TEST_CASE("upstream refusing: 502, or 503 when the health check says it is down") {
  Harness h;
  // A port nothing listens on: bind, read it, close.
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0);
  socklen_t len = sizeof sin;
  getsockname(s, reinterpret_cast<sockaddr*>(&sin), &len);
  ::close(s);
  h.cfg.upstream.address = SocketAddress(IpAddress::loopback_v4(), ntohs(sin.sin_port));
  h.make_pool();
  Client& c = h.connect();
  h.send(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
  REQUIRE(h.wait_responses(c, 1));
  CHECK(c.reader.responses[0].status == 502);
  CHECK_FALSE(c.reader.responses[0].body.empty());
  // The request was read in full: the connection stays usable.
  h.node.tomcat_up = false;
  h.send(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
  REQUIRE(h.wait_responses(c, 2));
  CHECK(c.reader.responses[1].status == 503);
  CHECK(h.counters.upstream_connect_errors.get() == 2);
  CHECK(ends(h, RequestEnd::ConnectFailed) == 2);
}

TEST_CASE("slow upstream: 504 after response_timeout") {
  Harness h;
  h.cfg.upstream.response_timeout = 150ms;
  h.upstream->on_request = [](Upstream::Conn&, const UpRequest&) {};  // never answers
  Client& c = h.connect();
  const auto t0 = std::chrono::steady_clock::now();
  h.send(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
  REQUIRE(h.wait_responses(c, 1));
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(c.reader.responses[0].status == 504);
  CHECK(waited >= 140ms);
  CHECK(waited < 3000ms);
  CHECK(h.counters.upstream_timeouts.get() == 1);
  CHECK(ends(h, RequestEnd::UpstreamTimeout) == 1);
  // The timed-out upstream connection is never reused.
  CHECK(h.pool->idle_count() == 0);
}

TEST_CASE("slow client header: 408 and close; idle keep-alive: silent close") {
  Harness h;
  h.cfg.timeouts.client_header = 150ms;
  h.cfg.timeouts.client_idle = 150ms;
  echo_meta(h);
  SECTION("partial head") {
    Client& c = h.connect();
    h.send(c, "GET / HTTP/1.1\r\nHost: a\r\n", "GET");
    REQUIRE(h.wait_eof(c));
    REQUIRE(c.reader.responses.size() == 1);
    CHECK(c.reader.responses[0].status == 408);
    CHECK(c.reader.responses[0].header("Connection") == "close");
    CHECK(ends(h, RequestEnd::HeaderTimeout) == 1);
    CHECK(h.upstream->bytes_received == 0);
  }
  SECTION("nothing sent at all") {
    Client& c = h.connect();
    REQUIRE(h.wait_eof(c));
    CHECK(c.reader.responses.empty());
    CHECK(h.counters.http_idle_timeouts.get() == 1);
  }
  SECTION("idle after a response") {
    Client& c = h.connect();
    h.send(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
    REQUIRE(h.wait_responses(c, 1));
    REQUIRE(h.wait_eof(c));
    CHECK(c.reader.responses.size() == 1);
    CHECK(h.counters.http_idle_timeouts.get() == 1);
  }
}

TEST_CASE("a reused pooled connection found dead is retried once, only when safe") {
  Harness h;
  // The upstream drops the connection when the second request arrives on
  // it, as a Tomcat reaching its keep-alive timeout at that moment would.
  h.upstream->on_request = [](Upstream::Conn& c, const UpRequest& r) {
    if (c.served == 2) {
      c.close();
      return;
    }
    c.send(ok("served " + r.method + " " + r.target));
  };
  Client& c = h.connect();
  h.send(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
  REQUIRE(h.wait_responses(c, 1));
  SECTION("idempotent without body: retried on a new connection") {
    h.send(c, "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
    REQUIRE(h.wait_responses(c, 2));
    CHECK(c.reader.responses[1].status == 200);
    CHECK(c.reader.responses[1].body == "served GET /2");
    CHECK(h.counters.upstream_retries.get() == 1);
    CHECK(h.upstream->conns.size() == 2);
  }
  SECTION("POST: not retried, 502") {
    h.send(c, "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", "POST");
    REQUIRE(h.wait_responses(c, 2));
    CHECK(c.reader.responses[1].status == 502);
    CHECK(h.counters.upstream_retries.get() == 0);
    CHECK(ends(h, RequestEnd::UpstreamClosed) == 1);
  }
}

TEST_CASE("request body over max_body_bytes: 413 before anything reaches the upstream") {
  Harness h;
  h.cfg.limits.max_body_bytes = 1000;
  echo_meta(h);
  Client& c = h.connect();
  h.send(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n", "POST");
  REQUIRE(h.wait_eof(c));
  REQUIRE(c.reader.responses.size() == 1);
  CHECK(c.reader.responses[0].status == 413);
  CHECK(h.upstream->bytes_received == 0);
  CHECK(h.counters.request_errors[static_cast<size_t>(http1::Error::BodyTooLarge)].get() == 1);
}

namespace {

struct SmugglingCase {
  int status;
  std::string error;
  std::string name;
  std::string raw;
};

// Decodes a RAW field of the corpus (format in the file's header).
std::string decode_raw(const std::string& text) {
  std::string expanded;
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, 2, "\\[") == 0) {
      const size_t close = text.find(']', i);
      const size_t open = close + 1;
      const size_t end = text.find(')', open);
      REQUIRE((close != std::string::npos && end != std::string::npos && text[open] == '('));
      const int n = std::stoi(text.substr(i + 2, close - i - 2));
      const std::string unit = text.substr(open + 1, end - open - 1);
      for (int k = 0; k < n; ++k) expanded += unit;
      i = end + 1;
    } else {
      expanded += text[i++];
    }
  }
  std::string out;
  for (size_t i = 0; i < expanded.size(); ++i) {
    if (expanded[i] != '\\' || i + 1 == expanded.size()) {
      out += expanded[i];
      continue;
    }
    const char e = expanded[++i];
    switch (e) {
      case 'r':
        out += '\r';
        break;
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case '0':
        out += '\0';
        break;
      case '\\':
        out += '\\';
        break;
      case 'x':
        REQUIRE(i + 2 < expanded.size());
        out += static_cast<char>(std::stoi(expanded.substr(i + 1, 2), nullptr, 16));
        i += 2;
        break;
      default:
        FAIL("unknown escape \\" << e);
    }
  }
  return out;
}

std::vector<SmugglingCase> load_corpus(std::map<std::string, uint64_t>& limits) {
  std::ifstream in(std::string(EDGEPIN_SOURCE_DIR) +
                   "/tests/unit/common/http1_smuggling_cases.txt");
  REQUIRE(in);
  std::vector<SmugglingCase> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    if (line.rfind("@limit", 0) == 0) {
      std::string kw, name;
      uint64_t value = 0;
      ls >> kw >> name >> value;
      limits[name] = value;
      continue;
    }
    SmugglingCase c;
    ls >> c.status >> c.error >> c.name;
    ls >> std::ws;
    std::string rest;
    std::getline(ls, rest);
    c.raw = decode_raw(rest);
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace

TEST_CASE("every smuggling corpus row is answered with its status and never reaches the upstream") {
  std::map<std::string, uint64_t> limits;
  const auto cases = load_corpus(limits);
  REQUIRE(cases.size() > 100);
  Harness h;
  // The corpus assumes these limits; the others are the parser's defaults,
  // which the node-proxy's defaults match.
  for (const auto& [name, value] : limits) {
    if (name == "max_body_bytes")
      h.cfg.limits.max_body_bytes = value;
    else
      FAIL("limit the test does not configure: " << name);
  }
  REQUIRE(h.cfg.limits.max_header_bytes == http1::kDefaultMaxHeadBytes);
  REQUIRE(h.cfg.limits.max_headers == http1::kDefaultMaxFields);
  echo_meta(h);
  for (const auto& sc : cases) {
    INFO(sc.name);
    http1::Error code = http1::Error::None;
    REQUIRE(http1::error_from_string(sc.error, code));
    const uint64_t errors_before = h.counters.request_errors[static_cast<size_t>(code)].get();
    const size_t requests_before = h.upstream->requests.size();
    const uint64_t bytes_before = h.upstream->bytes_received;
    Client& c = h.connect();
    h.send(c, sc.raw);
    REQUIRE(h.wait_eof(c));
    CHECK_FALSE(c.reader.error);
    REQUIRE_FALSE(c.reader.responses.empty());
    // The last answer is the rejection; any before it answered valid
    // requests pipelined ahead of the bad one.
    CHECK(c.reader.responses.back().status == sc.status);
    CHECK(c.reader.responses.back().header("Connection") == "close");
    const size_t forwarded = c.reader.responses.size() - 1;
    for (size_t i = 0; i < forwarded; ++i) CHECK(c.reader.responses[i].status == 200);
    CHECK(h.upstream->requests.size() - requests_before == forwarded);
    if (forwarded == 0) CHECK(h.upstream->bytes_received == bytes_before);
    CHECK(h.counters.request_errors[static_cast<size_t>(code)].get() == errors_before + 1);
    // The client closes its side: the proxy's lingering close ends at once.
    ::shutdown(c.fd, SHUT_WR);
    CHECK(h.run_until([&] { return !h.alive(c); }, 1000ms));
  }
  CHECK(h.upstream->parse_errors == 0);
}

TEST_CASE("WebSocket upgrade: 101 relayed, then a byte-exact tunnel") {
  Harness h;
  h.upstream->on_request = [](Upstream::Conn& c, const UpRequest& r) {
    if (field_of(r.fields, "Upgrade") == "websocket") {
      c.send(
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");
      c.echo = true;
    } else {
      c.send(ok("plain"));
    }
  };
  Client& c = h.connect();
  h.send(
      c,
      "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      "GET");
  REQUIRE(h.run_until([&] { return c.reader.upgraded; }));
  CHECK(c.reader.responses.back().status == 101);
  CHECK(c.reader.responses.back().header("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  REQUIRE(h.upstream->requests.size() == 1);
  CHECK(field_of(h.upstream->requests[0].fields, "Upgrade") == "websocket");
  CHECK(field_of(h.upstream->requests[0].fields, "Connection") == "upgrade");
  CHECK(c.conn->state() == H1Connection::State::Tunnel);

  const std::string frames = pattern(300 * 1024, 99);  // every byte value, binary
  h.send(c, frames);
  REQUIRE(h.run_until([&] { return c.reader.after_upgrade.size() >= frames.size(); }));
  CHECK(c.reader.after_upgrade == frames);
  CHECK(h.counters.tunnels.get() == 1);

  ::shutdown(c.fd, SHUT_WR);
  REQUIRE(h.run_until([&] { return !h.alive(c); }));
  CHECK(ends(h, RequestEnd::TunnelClosed) == 1);
  CHECK(h.pool->idle_count() == 0);  // a tunnelled connection never returns to the pool
}

TEST_CASE("health and stats are answered by the proxy itself") {
  Harness h;
  echo_meta(h);
  Client& c = h.connect();
  auto get = [&](const std::string& target, const std::string& extra = "") {
    h.send(c, "GET " + target + " HTTP/1.1\r\nHost: a\r\n" + extra + "\r\n", "GET");
    const size_t n = c.reader.finals() + 1;
    REQUIRE(h.wait_responses(c, n));
    return c.reader.responses.back();
  };
  Response r = get("/_edgepin/health");
  CHECK(r.status == 200);
  CHECK(r.body == "UP\n");
  h.node.tomcat_up = false;
  r = get("/_edgepin/health?full");
  CHECK(r.status == 503);
  CHECK(r.body.find("tomcat") != std::string::npos);
  h.node.tomcat_up = true;
  h.node.draining = true;
  r = get("/_edgepin/health");
  CHECK(r.status == 503);
  CHECK(r.body.find("draining") != std::string::npos);
  h.node.draining = false;

  r = get("/_edgepin/stats");
  CHECK(r.status == 200);
  CHECK(r.header("Content-Type") == "text/html; charset=utf-8");
  CHECK(r.body.find("node-a") != std::string::npos);
  r = get("/_edgepin/stats?json");
  CHECK(r.header("Content-Type") == "application/json");
  CHECK(r.body == "{\"node\":\"node-a\"}");
  r = get("/_edgepin/stats", "Accept: text/html;q=0.5, application/json\r\n");
  CHECK(r.header("Content-Type") == "application/json");

  h.send(c, "HEAD /_edgepin/health HTTP/1.1\r\nHost: a\r\n\r\n", "HEAD");
  REQUIRE(h.wait_responses(c, c.reader.finals() + 1));
  CHECK(c.reader.responses.back().status == 200);
  CHECK(c.reader.responses.back().body.empty());

  CHECK(h.upstream->bytes_received == 0);
  CHECK(h.counters.requests_local.get() == 7);

  SECTION("stats limited to allowed sources") {
    h.cfg.stats.allow.push_back(*Cidr::parse("10.0.0.0/8"));
    r = get("/_edgepin/stats");
    CHECK(r.status == 403);
    ClientInfo inside = Harness::default_info();
    inside.client = SocketAddress(*IpAddress::parse("10.9.8.7"), 1234);
    Client& c2 = h.connect(inside);
    h.send(c2, "GET /_edgepin/stats HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
    REQUIRE(h.wait_responses(c2, 1));
    CHECK(c2.reader.responses[0].status == 200);
  }
}

TEST_CASE("shutdown finishes the request in progress, then closes") {
  Harness h;
  Upstream::Conn* pending = nullptr;
  h.upstream->on_request = [&](Upstream::Conn& c, const UpRequest&) { pending = &c; };
  Client& c = h.connect();
  h.send(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
  REQUIRE(h.run_until([&] { return pending != nullptr; }));
  c.conn->shutdown();
  pending->send(ok("last"));
  REQUIRE(h.wait_eof(c));
  REQUIRE(c.reader.responses.size() == 1);
  CHECK(c.reader.responses[0].body == "last");
  CHECK(c.reader.responses[0].header("Connection") == "close");
  SECTION("an idle connection closes at once") {
    Client& idle = h.connect();
    REQUIRE(h.alive(idle));
    idle.conn->shutdown();
    REQUIRE(h.wait_eof(idle));
    CHECK(idle.reader.responses.empty());
  }
}

namespace {

// Captures what the process writes to stderr (where log lines go) while
// it lives.
class StderrCapture {
 public:
  StderrCapture() {
    REQUIRE(pipe(pipe_) == 0);
    fcntl(pipe_[0], F_SETFL, O_NONBLOCK);
    saved_ = dup(STDERR_FILENO);
    dup2(pipe_[1], STDERR_FILENO);
  }
  ~StderrCapture() {
    dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    ::close(pipe_[0]);
    ::close(pipe_[1]);
  }
  std::vector<std::string> lines() {
    char buf[4096];
    for (ssize_t n; (n = ::read(pipe_[0], buf, sizeof buf)) > 0;)
      text_.append(buf, static_cast<size_t>(n));
    std::vector<std::string> out;
    std::istringstream in(text_);
    for (std::string l; std::getline(in, l);)
      if (l.find(" http client=") != std::string::npos) out.push_back(l);
    return out;
  }

 private:
  int pipe_[2] = {-1, -1};
  int saved_ = -1;
  std::string text_;
};

}  // namespace

TEST_CASE("access log: one key=value line per request, sanitised and bounded") {
  Harness h;
  echo_meta(h);
  StderrCapture capture;
  SECTION("access_log on: every request") {
    h.cfg.log.access_log = true;
    Client& c = h.connect();
    h.send(c, "GET /x?q=\"a\" HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
    const std::string long_path = "/" + std::string(600, 'p');
    h.send(c, "GET " + long_path + " HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
    REQUIRE(h.wait_responses(c, 2));
    const auto lines = capture.lines();
    REQUIRE(lines.size() == 2);
    const std::string& l = lines[0];
    INFO(l);
    for (const char* part :
         {" client=192.0.2.10:51000 ", " listener=https ", " tls=TLSv1.3 ", " resumed=0 ",
          " sni=app.example ", " method=GET ", " path=/x?q=%22a%22 ", " status=200 ",
          " upstream=tomcat ", " reused=0 ",
          " connect_ms=", " upstream_ms=", " total_ms=", " end=complete"}) {
      CHECK(l.find(part) != std::string::npos);
    }
    CHECK(l.find(" bytes_in=" +
                 std::to_string(std::string("GET /x?q=\"a\" HTTP/1.1\r\nHost: a\r\n\r\n").size()) +
                 " ") != std::string::npos);
    INFO(lines[1]);
    CHECK(lines[1].find(" path=" + long_path.substr(0, kLogTargetMax) + "... ") !=
          std::string::npos);
    CHECK(lines[1].find(" reused=1 ") != std::string::npos);
  }
  SECTION("access_log off: only failures, as warnings") {
    h.cfg.log.access_log = false;
    Client& c = h.connect();
    h.send(c, "GET /fine HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
    REQUIRE(h.wait_responses(c, 1));
    h.send(c, "GET /bad HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "GET");
    REQUIRE(h.wait_eof(c));
    const auto lines = capture.lines();
    REQUIRE(lines.size() == 1);
    INFO(lines[0]);
    CHECK(lines[0].find("warning") != std::string::npos);
    CHECK(lines[0].find(" status=400 ") != std::string::npos);
    CHECK(lines[0].find(" end=bad_request ") != std::string::npos);
    CHECK(lines[0].find("error=\"multiple_host\"") != std::string::npos);
  }
}

TEST_CASE("upstream misbehaving and clients giving up") {
  Harness h;
  SECTION("invalid response head: 502, connection not reused") {
    h.upstream->on_request = [](Upstream::Conn& c, const UpRequest&) {
      c.send("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    };
    Client& c = h.connect();
    h.send(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
    REQUIRE(h.wait_responses(c, 1));
    CHECK(c.reader.responses[0].status == 502);
    CHECK(ends(h, RequestEnd::UpstreamInvalid) == 1);
    CHECK(h.pool->idle_count() == 0);
  }
  SECTION("body cut short after the head went out: the client connection is cut") {
    h.upstream->on_request = [](Upstream::Conn& c, const UpRequest&) {
      c.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten!!");
      c.close_when_flushed();
    };
    Client& c = h.connect();
    h.send(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
    REQUIRE(h.run_until([&] { return c.reader.eof || !h.alive(c); }));
    h.run_until([&] { return c.reader.eof; }, 200ms);
    // Whatever the client got, it never looks like a complete response.
    CHECK(c.reader.finals() == 0);
    CHECK(ends(h, RequestEnd::UpstreamClosed) == 1);
  }
  SECTION("early answer before the request body was read: relayed with Connection: close") {
    h.upstream->on_head = [](Upstream::Conn& c, const UpRequest&) {
      c.send("HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\n\r\nbig!");
    };
    h.upstream->on_request = [](Upstream::Conn&, const UpRequest&) {};
    Client& c = h.connect();
    const size_t size = 1024 * 1024;  // well past the pre-buffer
    h.send(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n",
           "POST");
    h.send(c, std::string(256 * 1024, 'x'));
    REQUIRE(h.wait_responses(c, 1));
    CHECK(c.reader.responses[0].status == 413);
    CHECK(c.reader.responses[0].header("Connection") == "close");
    REQUIRE(h.wait_eof(c));
    CHECK(h.pool->idle_count() == 0);
  }
  SECTION("client gone mid-body: the upstream connection is dropped") {
    h.upstream->on_request = [](Upstream::Conn& c, const UpRequest&) { c.send(ok("never")); };
    Client& c = h.connect();
    h.send(
        c,
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 500000\r\n\r\n" + std::string(200000, 'y'),
        "POST");
    REQUIRE(h.run_until([&] { return h.upstream->bytes_received > 0; }));
    ::close(c.fd);
    c.fd = -1;
    REQUIRE(h.run_until([&] { return !h.alive(c); }));
    CHECK(ends(h, RequestEnd::ClientClosed) == 1);
    CHECK(h.run_until([&] { return !h.upstream->conns[0]->open(); }));
    CHECK(h.upstream->requests.empty());
    CHECK(h.pool->idle_count() == 0);
  }
}

TEST_CASE("an upstream that says more than its response is closed, never reused") {
  // Pipelined /a and /b: the upstream answers /a with a second response (or
  // a stray byte) right behind the first. /b must get its own answer, on a
  // new connection, and the poisoned connection is counted and closed.
  struct Case {
    const char* name;
    std::string answer;
  };
  const Case cases[] = {
      {"a second response", ok("a") + ok("extra")},
      {"after a chunked body",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n" + ok("extra")},
      {"a 204 behind it", ok("a") + "HTTP/1.1 204 No Content\r\n\r\n"},
      {"one stray byte", ok("a") + "x"},
  };
  for (const Case& k : cases) {
    INFO(k.name);
    Harness h;
    const std::string answer = k.answer;
    h.upstream->on_request = [answer](Upstream::Conn& c, const UpRequest& r) {
      c.send(r.target == "/a" ? answer : ok("b"));
    };
    Client& c = h.connect();
    c.reader.methods = {"GET", "GET"};
    h.send(c, "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    REQUIRE(h.wait_responses(c, 2));
    CHECK(c.reader.responses[0].body == "a");
    CHECK(c.reader.responses[1].body == "b");
    CHECK(h.upstream->conns.size() == 2);
    CHECK(h.upstream->requests.size() == 2);
    CHECK(h.counters.upstream_extra_bytes.get() == 1);
    // The first connection is closed; only the second one is pooled.
    CHECK(h.run_until([&] { return !h.upstream->conns[0]->open(); }));
    CHECK(h.pool->idle_count() == 1);
  }
}

// ---------------------------------------------------------------------------
// L7 affinity in the HTTP layer: cookie issuance, relaying to a peer's pool
// (plain TCP here; the peer link's TLS is covered by the integration test),
// the relay marker, the one-hop rule and the fallback to the local Tomcat.

namespace {

struct AffinityHarness {
  AffinityHarness() : peer(h.base.get()) {
    for (uint16_t i = 1; i <= 2; ++i) {
      config::Node n;
      n.name = "node" + std::to_string(i);
      n.tag = i;
      n.address = *IpAddress::parse("127.0.0.1");
      n.peer_port = i == 2 ? peer.port : 1;
      cluster.nodes.push_back(n);
    }
    cluster.name = "test";
    codec = std::make_unique<affinity::CookieCodec>(std::vector<uint8_t>(32, 7), cluster.name);
    state = std::make_unique<PeerState>(cluster.nodes[1]);
    state->up.store(true);
    config::UpstreamConfig uc;
    uc.address = cluster.nodes[1].endpoint(config::NodePort::Peer);
    peer_pool = std::make_unique<UpstreamPool>(h.base.get(), uc, h.counters.peer_connects,
                                               h.counters.peer_reuses);
    h.ctx.cluster = &cluster;
    h.ctx.self = &cluster.nodes[0];
    h.ctx.cookie_codec = codec.get();
    h.ctx.peers.push_back(WorkerContext::PeerLink{state.get(), peer_pool.get()});
    auto answer = [](const char* who) {
      return [who](Upstream::Conn& c, const UpRequest& r) {
        // Starts a session when the request has none, as Tomcat does.
        const bool has_session =
            field_of(r.fields, "Cookie").find("JSESSIONID=") != std::string::npos;
        c.send(ok(std::string(who) + " " + r.target + " n=" + std::to_string(r.body.size()),
                  has_session ? "" : "Set-Cookie: JSESSIONID=abc; Path=/\r\n"));
      };
    };
    h.upstream->on_request = answer("local");
    peer.on_request = answer("peer");
  }
  ~AffinityHarness() {
    h.live.clear();  // connections first: they borrow the context below
    h.ctx.peers.clear();
  }

  std::string cookie_of(uint16_t tag) const {
    return codec->encode(tag, static_cast<uint32_t>(std::time(nullptr)));
  }
  uint64_t outcome(affinity::Outcome o) const {
    return h.counters.affinity[static_cast<size_t>(o)].get();
  }

  Harness h;
  Upstream peer;
  config::ClusterConfig cluster;
  std::unique_ptr<affinity::CookieCodec> codec;
  std::unique_ptr<PeerState> state;
  std::unique_ptr<UpstreamPool> peer_pool;
};

}  // namespace

TEST_CASE("affinity: a new session gets our cookie; our own cookie gets none") {
  AffinityHarness a;
  Client& c = a.h.connect();
  a.h.send(c, "GET /login HTTP/1.1\r\nHost: app.example\r\n\r\n", "GET");
  REQUIRE(a.h.wait_responses(c, 1));
  const Response& first = c.reader.responses.back();
  CHECK(first.body == "local /login n=0");
  REQUIRE(count_of(first.fields, "Set-Cookie") == 2);
  std::string ours;
  for (const auto& [n, v] : first.fields)
    if (http1::iequals(n, "Set-Cookie") && v.rfind("EDGEPIN_NODE=", 0) == 0) ours = v;
  REQUIRE_FALSE(ours.empty());
  CHECK(ours.find("; Secure") != std::string::npos);  // secure auto, client on TLS
  CHECK(ours.find("; HttpOnly") != std::string::npos);
  const std::string value = ours.substr(13, ours.find(';') - 13);
  const auto decoded =
      a.codec->decode(value, static_cast<uint32_t>(std::time(nullptr)), std::nullopt);
  REQUIRE(decoded);
  CHECK(decoded->tag == 1);

  // The same client, with its cookies, starts no new session.
  a.h.send(c,
           "GET /next HTTP/1.1\r\nHost: app.example\r\nCookie: JSESSIONID=abc; EDGEPIN_NODE=" +
               value + "\r\n\r\n",
           "GET");
  REQUIRE(a.h.wait_responses(c, 2));
  CHECK_FALSE(c.reader.responses.back().has("Set-Cookie"));
  // A new session with our valid cookie: Tomcat's cookie only.
  a.h.send(
      c, "GET /relogin HTTP/1.1\r\nHost: app.example\r\nCookie: EDGEPIN_NODE=" + value + "\r\n\r\n",
      "GET");
  REQUIRE(a.h.wait_responses(c, 3));
  CHECK(count_of(c.reader.responses.back().fields, "Set-Cookie") == 1);
  CHECK(a.outcome(affinity::Outcome::NoCookie) == 1);
  CHECK(a.outcome(affinity::Outcome::Local) == 2);
  CHECK(a.h.counters.affinity_cookies_issued.get() == 1);
}

TEST_CASE(
    "affinity: another node's cookie is relayed to its pool with the client's facts and the "
    "marker") {
  AffinityHarness a;
  Client& c = a.h.connect();
  const std::string cookie = a.cookie_of(2);
  a.h.send(c,
           "POST /cart HTTP/1.1\r\nHost: app.example\r\nX-Edgepin-Relayed: node9\r\nCookie: "
           "EDGEPIN_NODE=" +
               cookie + "\r\nContent-Length: 5\r\n\r\nhello",
           "POST");
  REQUIRE(a.h.wait_responses(c, 1));
  const Response& r = c.reader.responses.back();
  CHECK(r.body == "peer /cart n=5");
  // The owner starts the session and writes its own cookie: the relaying
  // node adds none.
  CHECK(count_of(r.fields, "Set-Cookie") == 1);
  REQUIRE(a.peer.requests.size() == 1);
  const UpRequest& up = a.peer.requests[0];
  CHECK(field_of(up.fields, "X-Edgepin-Relayed") == "node1");
  CHECK(count_of(up.fields, "X-Edgepin-Relayed") == 1);
  CHECK(field_of(up.fields, "X-Edgepin-Sni") == "app.example");
  CHECK(field_of(up.fields, "X-Forwarded-For") == "192.0.2.10");
  CHECK(field_of(up.fields, "X-Forwarded-Proto") == "https");
  CHECK(field_of(up.fields, "X-Forwarded-Port") == "443");
  CHECK(a.h.upstream->requests.empty());
  CHECK(a.outcome(affinity::Outcome::Relay) == 1);
  CHECK(a.h.counters.peer_connects.get() == 1);
  CHECK(a.h.counters.upstream_connects.get() == 0);

  // Peer down (health checker): served locally, and the new session moves
  // the cookie here.
  a.state->up.store(false);
  a.h.send(c,
           "GET /down HTTP/1.1\r\nHost: app.example\r\nCookie: EDGEPIN_NODE=" + cookie + "\r\n\r\n",
           "GET");
  REQUIRE(a.h.wait_responses(c, 2));
  CHECK(c.reader.responses.back().body == "local /down n=0");
  CHECK(count_of(c.reader.responses.back().fields, "Set-Cookie") == 2);
  CHECK(a.outcome(affinity::Outcome::OwnerDown) == 1);
}

TEST_CASE(
    "affinity: a request from the peer listener is served locally with the relaying node's "
    "client") {
  AffinityHarness a;
  ClientInfo link;
  link.listener = "peer";
  link.peer = SocketAddress(*IpAddress::parse("127.0.0.12"), 41000);
  link.client = link.peer;
  link.public_port = 9443;
  link.tls = true;
  link.peer_node = "node2";
  Client& c = a.h.connect(link);
  // Owned by node2 (up): still never relayed again.
  a.h.send(
      c,
      "GET /hop HTTP/1.1\r\nHost: app.example\r\nCookie: EDGEPIN_NODE=" + a.cookie_of(2) +
          "\r\nX-Forwarded-For: 198.51.100.8\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 80\r\n"
          "X-Edgepin-Relayed: node2\r\n\r\n",
      "GET");
  REQUIRE(a.h.wait_responses(c, 1));
  CHECK(c.reader.responses.back().body == "local /hop n=0");
  // No affinity cookie on a relayed request's response.
  CHECK(count_of(c.reader.responses.back().fields, "Set-Cookie") == 1);
  REQUIRE(a.h.upstream->requests.size() == 1);
  const UpRequest& up = a.h.upstream->requests[0];
  CHECK(field_of(up.fields, "X-Forwarded-For") == "198.51.100.8");
  CHECK(field_of(up.fields, "X-Forwarded-Proto") == "http");
  CHECK(field_of(up.fields, "X-Forwarded-Port") == "80");
  CHECK(field_of(up.fields, "X-Edgepin-Relayed") == "node2");
  CHECK(a.peer.requests.empty());
  CHECK(a.outcome(affinity::Outcome::Relayed) == 1);

  // A malformed relayed request is refused, not guessed at.
  a.h.send(c, "GET /bad HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: nonsense\r\n\r\n", "GET");
  REQUIRE(a.h.wait_responses(c, 2));
  CHECK(c.reader.responses.back().status == 400);
  CHECK(a.h.upstream->requests.size() == 1);
}

TEST_CASE("affinity: a relay whose peer refuses the connection is served locally") {
  AffinityHarness a;
  // Nothing listens on the owner's peer port any more.
  a.peer_pool.reset();
  config::UpstreamConfig uc;
  uc.address = SocketAddress(*IpAddress::parse("127.0.0.1"), 1);
  a.peer_pool = std::make_unique<UpstreamPool>(a.h.base.get(), uc, a.h.counters.peer_connects,
                                               a.h.counters.peer_reuses);
  a.h.ctx.peers[0].pool = a.peer_pool.get();
  Client& c = a.h.connect();
  a.h.send(c,
           "PUT /x HTTP/1.1\r\nHost: app.example\r\nCookie: EDGEPIN_NODE=" + a.cookie_of(2) +
               "\r\nContent-Length: 3\r\n\r\nabc",
           "PUT");
  REQUIRE(a.h.wait_responses(c, 1));
  CHECK(c.reader.responses.back().status == 200);
  CHECK(c.reader.responses.back().body == "local /x n=3");
  CHECK(count_of(c.reader.responses.back().fields, "Set-Cookie") == 2);
  REQUIRE(a.h.upstream->requests.size() == 1);
  CHECK(field_of(a.h.upstream->requests[0].fields, "X-Edgepin-Relayed").empty());
  CHECK(a.outcome(affinity::Outcome::OwnerDown) == 1);
  CHECK(a.outcome(affinity::Outcome::Relay) == 0);
  CHECK(a.h.counters.relay_fallbacks.get() == 1);
  CHECK(a.h.counters.peer_connect_errors.get() == 1);
}

// ---------------------------------------------------------------------------
// Failover (issue 11): a request the local Tomcat cannot take goes to a
// healthy peer over the peer link, when that is safe.

namespace {

// A loopback port nothing listens on: bound, read, closed.
uint16_t refused_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0);
  socklen_t len = sizeof sin;
  getsockname(s, reinterpret_cast<sockaddr*>(&sin), &len);
  ::close(s);
  return ntohs(sin.sin_port);
}

uint64_t failovers(const Harness& h, FailoverReason r) {
  return h.counters.failovers[static_cast<size_t>(r)].get();
}

}  // namespace

TEST_CASE("failover: a refused Tomcat sends the request to a peer and is marked down at once") {
  AffinityHarness a;
  a.h.cfg.upstream.address = SocketAddress(IpAddress::loopback_v4(), refused_port());
  a.h.cfg.log.access_log = true;
  Client& c = a.h.connect();
  a.h.send(c,
           "GET /first HTTP/1.1\r\nHost: app.example\r\nCookie: EDGEPIN_NODE=" + a.cookie_of(1) +
               "\r\n\r\n",
           "GET");
  REQUIRE(a.h.wait_responses(c, 1));
  const Response& r = c.reader.responses.back();
  CHECK(r.status == 200);
  CHECK(r.body == "peer /first n=0");
  // The peer starts the session; this node adds no cookie of its own.
  CHECK(count_of(r.fields, "Set-Cookie") == 1);
  REQUIRE(a.peer.requests.size() == 1);
  const UpRequest& up = a.peer.requests[0];
  CHECK(field_of(up.fields, "X-Edgepin-Relayed") == "node1");
  CHECK(field_of(up.fields, "X-Edgepin-Failover") == "connect_failed");
  CHECK(field_of(up.fields, "X-Edgepin-Sni") == "app.example");
  CHECK(field_of(up.fields, "X-Forwarded-For") == "192.0.2.10");
  CHECK(field_of(up.fields, "Host") == "app.example");
  CHECK(count_of(up.fields, "X-Forwarded-For") == 1);
  CHECK(a.h.counters.upstream_connect_errors.get() == 1);
  CHECK(failovers(a.h, FailoverReason::ConnectFailed) == 1);
  // Passive health: the health endpoint says 503 from now on.
  CHECK_FALSE(a.h.node.tomcat_up.load());
  a.h.send(c, "GET /_edgepin/health HTTP/1.1\r\nHost: a\r\n\r\n", "GET");
  REQUIRE(a.h.wait_responses(c, 2));
  CHECK(c.reader.responses.back().status == 503);

  // Known down: the next requests go straight to the peer, body and all,
  // without another connect to Tomcat.
  a.h.send(c, "POST /next HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\n\r\nhello", "POST");
  REQUIRE(a.h.wait_responses(c, 3));
  CHECK(c.reader.responses.back().body == "peer /next n=5");
  CHECK(a.h.counters.upstream_connect_errors.get() == 1);
  CHECK(failovers(a.h, FailoverReason::TomcatDown) == 1);
  REQUIRE(a.peer.requests.size() == 2);
  CHECK(field_of(a.peer.requests[1].fields, "X-Edgepin-Failover") == "tomcat_down");
  CHECK(a.peer.requests[1].body == "hello");

  // No healthy peer either: the error stays this node's (503: Tomcat is
  // known down), counted.
  a.state->up.store(false);
  a.h.send(c, "GET /nowhere HTTP/1.1\r\nHost: app.example\r\n\r\n", "GET");
  REQUIRE(a.h.wait_responses(c, 4));
  CHECK(c.reader.responses.back().status == 503);
  CHECK(a.h.counters.failovers_impossible.get() == 1);
  CHECK(a.peer.requests.size() == 2);
}

TEST_CASE("failover: a POST with its body is sent to a peer when Tomcat refuses the connect") {
  AffinityHarness a;
  a.h.cfg.upstream.address = SocketAddress(IpAddress::loopback_v4(), refused_port());
  Client& c = a.h.connect();
  const std::string body = pattern(20000, 3);
  a.h.send(c, "POST /order HTTP/1.1\r\nHost: app.example\r\nContent-Length: 20000\r\n\r\n" + body,
           "POST");
  REQUIRE(a.h.wait_responses(c, 1));
  CHECK(c.reader.responses.back().body == "peer /order n=20000");
  REQUIRE(a.peer.requests.size() == 1);
  CHECK(a.peer.requests[0].body == body);
  CHECK(failovers(a.h, FailoverReason::ConnectFailed) == 1);
}

TEST_CASE(
    "failover: Tomcat closing before any response byte: GET goes to a peer, a POST is not "
    "retried") {
  AffinityHarness a;
  // Tomcat reads each request and closes without a byte of response.
  a.h.upstream->on_request = [](Upstream::Conn& c, const UpRequest&) { c.close(); };
  Client& c = a.h.connect();
  a.h.send(c, "GET /idem HTTP/1.1\r\nHost: app.example\r\n\r\n", "GET");
  REQUIRE(a.h.wait_responses(c, 1));
  CHECK(c.reader.responses.back().body == "peer /idem n=0");
  CHECK(failovers(a.h, FailoverReason::EmptyResponse) == 1);
  REQUIRE(a.peer.requests.size() == 1);
  CHECK(field_of(a.peer.requests[0].fields, "X-Edgepin-Failover") == "empty_response");
  // Not a failed connect: Tomcat is not marked down by it.
  CHECK(a.h.node.tomcat_up.load());

  // A PUT is idempotent: its body, kept whole, goes to the peer again.
  a.h.send(c, "PUT /doc HTTP/1.1\r\nHost: app.example\r\nContent-Length: 4\r\n\r\nv1.0", "PUT");
  REQUIRE(a.h.wait_responses(c, 2));
  CHECK(c.reader.responses.back().body == "peer /doc n=4");
  REQUIRE(a.peer.requests.size() == 2);
  CHECK(a.peer.requests[1].body == "v1.0");
  CHECK(a.h.upstream->requests.back().body == "v1.0");

  // The POST's body may have reached Tomcat: it is never sent again.
  a.h.send(c, "POST /pay HTTP/1.1\r\nHost: app.example\r\nContent-Length: 3\r\n\r\nabc", "POST");
  REQUIRE(a.h.wait_responses(c, 3));
  CHECK(c.reader.responses.back().status == 502);
  CHECK(a.peer.requests.size() == 2);
  REQUIRE(a.h.upstream->requests.size() == 3);
  CHECK(a.h.upstream->requests[2].body == "abc");
  CHECK(ends(a.h, RequestEnd::UpstreamClosed) == 1);
}

TEST_CASE("failover: one hop — a relayed request whose Tomcat refuses is not sent on") {
  AffinityHarness a;
  a.h.cfg.upstream.address = SocketAddress(IpAddress::loopback_v4(), refused_port());
  ClientInfo link;
  link.listener = "peer";
  link.peer = SocketAddress(*IpAddress::parse("127.0.0.12"), 41000);
  link.client = link.peer;
  link.public_port = 9443;
  link.tls = true;
  link.peer_node = "node2";
  Client& c = a.h.connect(link);
  a.h.send(c,
           "GET /hop HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 198.51.100.8\r\n"
           "X-Edgepin-Relayed: node2\r\nX-Edgepin-Failover: connect_failed\r\n\r\n",
           "GET");
  REQUIRE(a.h.wait_responses(c, 1));
  // 503 with the marker: the relaying node serves it itself (nothing of
  // it reached this Tomcat).
  CHECK(c.reader.responses.back().status == 503);
  CHECK(c.reader.responses.back().header("X-Edgepin-Failover") == "connect_failed");
  CHECK(a.peer.requests.empty());
  CHECK(failovers(a.h, FailoverReason::ConnectFailed) == 0);
}

TEST_CASE("failover: a relay whose owner says its Tomcat refused is served here, body and all") {
  AffinityHarness a;
  a.peer.on_request = [](Upstream::Conn& c, const UpRequest&) {
    c.send(
        "HTTP/1.1 503 Service Unavailable\r\nX-Edgepin-Failover: connect_failed\r\n"
        "Content-Length: 4\r\n\r\n503\n");
  };
  Client& c = a.h.connect();
  a.h.send(c,
           "PUT /cart HTTP/1.1\r\nHost: app.example\r\nCookie: EDGEPIN_NODE=" + a.cookie_of(2) +
               "\r\nContent-Length: 5\r\n\r\nhello",
           "PUT");
  REQUIRE(a.h.wait_responses(c, 1));
  const Response& r = c.reader.responses.back();
  CHECK(r.status == 200);
  CHECK(r.body == "local /cart n=5");
  // The session starts here: this node's cookie goes with it.
  CHECK(count_of(r.fields, "Set-Cookie") == 2);
  REQUIRE(a.peer.requests.size() == 1);
  REQUIRE(a.h.upstream->requests.size() == 1);
  CHECK(a.h.upstream->requests[0].body == "hello");
  CHECK(a.h.counters.relay_fallbacks.get() == 1);
  CHECK(a.outcome(affinity::Outcome::OwnerDown) == 1);
  CHECK(a.outcome(affinity::Outcome::Relay) == 0);

  // Any other 503 of the owner is its answer, relayed as it is.
  a.peer.on_request = [](Upstream::Conn& cc, const UpRequest&) {
    cc.send("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy");
  };
  a.h.send(c,
           "GET /busy HTTP/1.1\r\nHost: app.example\r\nCookie: EDGEPIN_NODE=" + a.cookie_of(2) +
               "\r\n\r\n",
           "GET");
  REQUIRE(a.h.wait_responses(c, 2));
  CHECK(c.reader.responses.back().status == 503);
  CHECK(c.reader.responses.back().body == "busy");
  CHECK(a.h.counters.relay_fallbacks.get() == 1);
}

TEST_CASE("failover: the serving node records itself in the response (cookie mode)") {
  AffinityHarness a;
  ClientInfo link;
  link.listener = "peer";
  link.peer = SocketAddress(*IpAddress::parse("127.0.0.12"), 41000);
  link.client = link.peer;
  link.public_port = 9443;
  link.tls = true;
  link.peer_node = "node2";
  Client& c = a.h.connect(link);
  // node2's Tomcat failed; its user (cookie of node2) is served here and
  // this Tomcat starts a new session: the response names node1.
  a.h.send(c,
           "GET /moved HTTP/1.1\r\nHost: app.example\r\nCookie: EDGEPIN_NODE=" + a.cookie_of(2) +
               "\r\nX-Forwarded-For: 198.51.100.8\r\nX-Edgepin-Relayed: node2\r\n"
               "X-Edgepin-Failover: connect_failed\r\n\r\n",
           "GET");
  REQUIRE(a.h.wait_responses(c, 1));
  const Response& r = c.reader.responses.back();
  CHECK(r.body == "local /moved n=0");
  REQUIRE(count_of(r.fields, "Set-Cookie") == 2);
  std::string ours;
  for (const auto& [n, v] : r.fields)
    if (http1::iequals(n, "Set-Cookie") && v.rfind("EDGEPIN_NODE=", 0) == 0) ours = v;
  const std::string value = ours.substr(13, ours.find(';') - 13);
  const auto decoded =
      a.codec->decode(value, static_cast<uint32_t>(std::time(nullptr)), std::nullopt);
  REQUIRE(decoded);
  CHECK(decoded->tag == 1);
  // The marker never reaches Tomcat.
  REQUIRE(a.h.upstream->requests.size() == 1);
  CHECK(field_of(a.h.upstream->requests[0].fields, "X-Edgepin-Failover").empty());
}
