#include "http_connection.h"

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "header_policy.h"
#include "log.h"
#include "stats.h"
#include "upstream_pool.h"

namespace edgepin::nodeproxy {

namespace {

using Clock = std::chrono::steady_clock;
using http1::BodyFraming;

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

int64_t ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

// A value as it goes into a key=value log line: visible ASCII except '"'
// and '\\', others %-escaped, cut at `max` bytes (marked with "...").
std::string loggable(std::string_view s, size_t max) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c > 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out.empty() ? "-" : out;
}

// A Host value we can write from the SNI: letters, digits, '-' and '.'.
bool valid_host_name(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '.'))
      return false;
  return true;
}

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

std::span<const uint8_t> first_segment(evbuffer* buf) {
  evbuffer_iovec v;
  if (evbuffer_peek(buf, -1, nullptr, &v, 1) < 1) return {};
  return {static_cast<const uint8_t*>(v.iov_base), v.iov_len};
}

http1::Limits request_limits(const config::NodeProxyConfig& cfg) {
  http1::Limits l;
  l.max_head_bytes = cfg.limits.max_header_bytes;
  l.max_fields = cfg.limits.max_headers;
  l.max_body_bytes =
      cfg.limits.max_body_bytes == 0 ? http1::kUnlimitedBody : cfg.limits.max_body_bytes;
  return l;
}

http1::Limits response_limits(const config::NodeProxyConfig& cfg) {
  http1::Limits l;
  l.max_head_bytes = std::max(cfg.limits.max_header_bytes, kMinResponseHeadBytes);
  l.max_fields = std::max<size_t>(cfg.limits.max_headers, http1::kDefaultMaxFields);
  l.max_body_bytes = http1::kUnlimitedBody;
  return l;
}

// OpenSSL's reasons for a failed TLS upstream handshake, for the log.
std::string tls_errors(bufferevent* bev) {
  std::string out;
  size_t n = 0;
  while (unsigned long e = bufferevent_get_openssl_error(bev)) {
    if (ERR_GET_LIB(e) == 0 || n++ >= 4) continue;  // libevent's own codes; drain the rest
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += (out.empty() ? "" : "; ") + std::string(buf);
  }
  return out;
}

uint32_t unix_now() {
  return static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

bool has_body(const BodyFraming& f) {
  return f.kind == BodyFraming::Kind::Chunked ||
         (f.kind == BodyFraming::Kind::ContentLength && f.length > 0);
}

}  // namespace

const char* to_string(HttpConnection::State s) {
  switch (s) {
    case HttpConnection::State::ReadingHead:
      return "reading_head";
    case HttpConnection::State::BufferingBody:
      return "buffering_body";
    case HttpConnection::State::Connecting:
      return "connecting";
    case HttpConnection::State::Proxying:
      return "proxying";
    case HttpConnection::State::Tunnel:
      return "tunnel";
    case HttpConnection::State::Closing:
      return "closing";
    case HttpConnection::State::Closed:
      return "closed";
  }
  return "?";
}

// ---------------------------------------------------------------------------
// Life cycle.

ConnectionInfo HttpConnection::describe() const {
  ConnectionInfo out;
  out.client = info_;
  out.state = to_string(state_);
  out.requests = requests_;
  out.age = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  accepted_);
  // ex_ is reset when a request ends: between requests both stay empty.
  if (!ex_.method.empty()) out.request = ex_.method + " " + ex_.target;
  if (ex_.routed) out.destination = ex_.dest.name;
  return out;
}

HttpConnection::HttpConnection(WorkerContext& ctx, BufferEventPtr client, ClientInfo info,
                               std::function<void(HttpConnection*)> on_closed)
    : ctx_(ctx),
      cfg_(*ctx.config),
      info_(std::move(info)),
      on_closed_(std::move(on_closed)),
      client_(std::move(client)),
      timer_(evtimer_new(ctx.base, timer_cb, this)),
      destroy_ev_(evtimer_new(ctx.base, destroy_cb, this)),
      prebuffer_(evbuffer_new()),
      request_limits_(request_limits(cfg_)),
      response_limits_(response_limits(cfg_)),
      head_input_cap_(request_limits_.max_head_bytes),
      body_input_cap_(std::max(request_limits_.max_head_bytes, kHighWatermark)),
      upstream_input_cap_(std::max(response_limits_.max_head_bytes, kHighWatermark)),
      client_timeout_(to_timeval(cfg_.timeouts.client)),
      response_timeout_(to_timeval(cfg_.upstream.response_timeout)),
      request_parser_(request_limits_),
      response_parser_(response_limits_) {}

HttpConnection::~HttpConnection() = default;

void HttpConnection::start() {
  bufferevent* c = client_.get();
  bufferevent_setcb(c, client_read_cb, client_write_cb, client_event_cb, this);
  bufferevent_setwatermark(c, EV_WRITE, kLowWatermark, 0);
  set_reading_body(false);
  bufferevent_enable(c, EV_WRITE);
  set_client_reading(true);
  // The first request's header deadline runs from the accept (after the
  // handshake): a connection that never sends a request is not kept.
  ex_.started = Clock::now();
  arm_timer(TimerKind::Header, cfg_.timeouts.client_header);
  advance();
}

void HttpConnection::shutdown() {
  draining_ = true;
  // An idle connection closes now (step_read_head); a request in progress
  // is finished first.
  advance();
}

size_t HttpConnection::buffered_bytes() const {
  size_t n = evbuffer_get_length(prebuffer_.get());
  for (bufferevent* b : {client_.get(), upstream_.get()}) {
    if (!b) continue;
    n += evbuffer_get_length(bufferevent_get_input(b)) +
         evbuffer_get_length(bufferevent_get_output(b));
  }
  if (relay_) {
    for (bufferevent* b : {relay_->a(), relay_->b()})
      n += evbuffer_get_length(bufferevent_get_input(b)) +
           evbuffer_get_length(bufferevent_get_output(b));
  }
  return n;
}

// ---------------------------------------------------------------------------
// Callbacks: each records what happened and runs the state machine.

void HttpConnection::client_read_cb(bufferevent*, void* arg) {
  static_cast<HttpConnection*>(arg)->advance();
}

void HttpConnection::client_write_cb(bufferevent*, void* arg) {
  static_cast<HttpConnection*>(arg)->advance();
}

void HttpConnection::client_event_cb(bufferevent*, short what, void* arg) {
  auto* self = static_cast<HttpConnection*>(arg);
  if (what & BEV_EVENT_EOF) {
    self->client_eof_ = true;
    self->client_reading_ = false;  // libevent stops reading at EOF
    self->advance();
    return;
  }
  if (what & BEV_EVENT_TIMEOUT) {
    self->on_client_timeout((what & BEV_EVENT_WRITING) != 0);
  } else if (what & BEV_EVENT_ERROR) {
    // A reset or TLS failure: nothing more can be written to this client.
    const int err = EVUTIL_SOCKET_ERROR();
    if (self->state_ == State::Closing ||
        (self->state_ == State::ReadingHead && !self->head_started_)) {
      self->finish_connection();
    } else {
      self->abort_request(RequestEnd::ClientClosed,
                          std::string("client error: ") + std::strerror(err ? err : ECONNRESET));
    }
  }
  self->advance();
}

void HttpConnection::upstream_read_cb(bufferevent*, void* arg) {
  static_cast<HttpConnection*>(arg)->advance();
}

void HttpConnection::upstream_write_cb(bufferevent*, void* arg) {
  static_cast<HttpConnection*>(arg)->advance();
}

void HttpConnection::upstream_event_cb(bufferevent*, short what, void* arg) {
  auto* self = static_cast<HttpConnection*>(arg);
  if (self->state_ == State::Connecting) {
    if (what & BEV_EVENT_CONNECTED) {
      self->ex_.connected = Clock::now();
      self->on_upstream_ready();
    } else {
      const int err = EVUTIL_SOCKET_ERROR();
      if (self->upstream_ && self->ex_.dest.pool && self->ex_.dest.pool->tls())
        self->upstream_tls_error_ = tls_errors(self->upstream_.get());
      self->on_connect_failed(err, (what & BEV_EVENT_TIMEOUT) != 0);
    }
  } else if (what & BEV_EVENT_TIMEOUT) {
    self->on_upstream_timeout();
  } else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
    self->upstream_eof_ = true;
    self->upstream_reading_ = false;
    if (what & BEV_EVENT_ERROR) {
      const int err = EVUTIL_SOCKET_ERROR();
      self->upstream_error_ = err ? err : ECONNRESET;
    }
  }
  self->advance();
}

void HttpConnection::timer_cb(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<HttpConnection*>(arg);
  const TimerKind kind = self->timer_kind_;
  self->timer_kind_ = TimerKind::None;
  switch (kind) {
    case TimerKind::None:
      return;
    case TimerKind::Idle:
      self->ctx_.counters->http_idle_timeouts.add();
      self->begin_closing();
      break;
    case TimerKind::Linger:
      self->finish_connection();
      break;
    case TimerKind::Header:
      if (self->state_ != State::ReadingHead) return;
      if (!self->head_started_) {
        // Nothing of a request arrived: a pre-connected or abandoned
        // connection, closed without an answer (like an idle one).
        self->ctx_.counters->http_idle_timeouts.add();
        self->begin_closing();
      } else {
        self->send_error(408, "request head not received in time", true, RequestEnd::HeaderTimeout);
      }
      break;
  }
  self->advance();
}

void HttpConnection::destroy_cb(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<HttpConnection*>(arg);
  auto done = std::move(self->on_closed_);
  if (done) done(self);  // may destroy this
}

// ---------------------------------------------------------------------------
// The state machine.

void HttpConnection::advance() {
  if (in_advance_) {
    again_ = true;
    return;
  }
  in_advance_ = true;
  do {
    again_ = false;
    const State before = state_;
    switch (state_) {
      case State::ReadingHead:
        step_read_head();
        break;
      case State::BufferingBody:
        step_buffer_body();
        break;
      case State::Connecting:
        step_connecting();
        break;
      case State::Proxying:
        step_proxy();
        break;
      case State::Closing:
        step_closing();
        break;
      case State::Tunnel:
      case State::Closed:
        break;
    }
    if (state_ != before) again_ = true;
  } while (again_ && state_ != State::Closed && state_ != State::Tunnel);
  in_advance_ = false;
}

void HttpConnection::step_read_head() {
  evbuffer* in = bufferevent_get_input(client_.get());
  const size_t len = evbuffer_get_length(in);
  if (len == 0) {
    // Answers already queued still go out (begin_closing flushes them).
    if (client_eof_ || draining_) begin_closing();
    return;
  }
  // Pipelined requests wait while earlier answers pile up unread.
  if (evbuffer_get_length(bufferevent_get_output(client_.get())) >= kHighWatermark) return;
  if (!head_started_) {
    head_started_ = true;
    if (timer_kind_ != TimerKind::Header) {
      ex_.started = Clock::now();
      arm_timer(TimerKind::Header, cfg_.timeouts.client_header);
    }
  }
  // The parser decides within max_head_bytes: never show it more.
  const size_t n = std::min(len, request_limits_.max_head_bytes);
  const uint8_t* p = evbuffer_pullup(in, static_cast<ev_ssize_t>(n));
  const http1::HeadResult r = request_parser_.parse({p, n});
  switch (r.status) {
    case ParseStatus::NeedMore:
      // (A draining connection still waits for the rest of this head,
      // bounded by the header deadline.)
      if (client_eof_) {
        ex_.error = "client closed mid-head";
        end_request(RequestEnd::ClientClosed);
        begin_closing();
      }
      return;
    case ParseStatus::Error:
      on_request_error(r.error);
      return;
    case ParseStatus::Done:
      on_request_head(r.consumed);
      return;
  }
}

void HttpConnection::on_request_error(http1::Error error) {
  ctx_.counters->request_errors[static_cast<size_t>(error)].add();
  ex_.error = http1::to_string(error);
  int status = http1::http_status(error);
  if (status == 0) status = 400;
  send_error(status, http1::to_string(error), true, RequestEnd::BadRequest);
}

void HttpConnection::on_request_head(size_t consumed) {
  const http1::RequestHead& h = request_parser_.head();
  cancel_timer();
  ex_.method = std::string(h.method);
  ex_.target = loggable(h.target, kLogTargetMax);
  ex_.http10 = h.version == http1::Version::Http10;
  ex_.keep_alive = http1::request_keep_alive(h);
  ex_.expect_continue = h.expect_continue;
  ex_.upgrade = h.upgrade_websocket;
  ex_.bytes_in = consumed;

  if (answer_builtin(h, consumed)) return;

  if (http1::Error e = http1::check_body_size(h.framing, request_limits_.max_body_bytes);
      e != http1::Error::None) {
    evbuffer_drain(bufferevent_get_input(client_.get()), consumed);
    on_request_error(e);
    return;
  }

  // On the peer listener the client is the one the relaying node served,
  // as its X-Forwarded-* say (believed only here, behind mutual TLS).
  const ClientInfo* client = &info_;
  if (!info_.peer_node.empty()) {
    std::string why;
    ex_.relayed = relayed_client_info(h.fields, info_, why);
    if (!ex_.relayed) {
      evbuffer_drain(bufferevent_get_input(client_.get()), consumed);
      ex_.error = why;
      send_error(400, why, true, RequestEnd::BadRequest);
      return;
    }
    client = &*ex_.relayed;
  }

  ex_.dest = route(h);
  if (!ex_.dest.pool) {
    evbuffer_drain(bufferevent_get_input(client_.get()), consumed);
    send_error(503, "no upstream configured", true, RequestEnd::ConnectFailed);
    return;
  }
  UpstreamRequestOptions opts;
  // Only WebSocket is tunnelled; other upgrades (h2c) are not offered to
  // the upstream at all.
  opts.tunnel = h.upgrade_websocket;
  opts.keep_alive = ex_.dest.pool->config().pool_size > 0;
  const std::string fallback_host = default_host(*client);
  opts.default_host = fallback_host;
  // The marker: towards a peer it names us (the owner must not relay it
  // again); towards Tomcat, on the peer listener, the node it came through.
  std::vector<http1::Field> extra;
  if (ex_.dest.peer) {
    extra.push_back({kRelayedField, ctx_.self->name});
    if (!client->sni.empty()) extra.push_back({kSniField, client->sni});
  } else if (!info_.peer_node.empty()) {
    extra.push_back({kRelayedField, info_.peer_node});
  }
  opts.extra_fields = extra;
  build_upstream_request(h, *client, cfg_.headers, opts, ex_.upstream_head);
  if (ex_.dest.peer) {
    // Kept in case the owner cannot be reached (fall_back_locally).
    UpstreamRequestOptions local = opts;
    local.extra_fields = {};
    local.keep_alive = ctx_.upstream && ctx_.upstream->config().pool_size > 0;
    build_upstream_request(h, *client, cfg_.headers, local, ex_.fallback_head);
  }

  // The head's views die with these bytes: everything needed was copied.
  evbuffer_drain(bufferevent_get_input(client_.get()), consumed);
  request_body_.emplace(h.framing, request_limits_);
  ex_.body_done = !has_body(h.framing);
  if (!ex_.body_done && !ex_.expect_continue) {
    state_ = State::BufferingBody;
    set_reading_body(true);
    return;
  }
  if (!ex_.body_done) set_reading_body(true);
  start_upstream(false);
}

bool HttpConnection::answer_builtin(const http1::RequestHead& h, size_t consumed) {
  const std::string_view path = path_of(h.path);
  const bool health = path == cfg_.health.path;
  const bool stats = cfg_.stats.enabled && path == cfg_.stats.path;
  const bool connect = h.method == "CONNECT";
  if (!health && !stats && !connect) return false;

  const bool get = h.method == "GET" || h.method == "HEAD";
  // The request's body (if any) is not read: close after the answer so
  // that it is never taken for the next request.
  const bool close = has_body(h.framing);
  const bool json = stats && (query_asks_json(query_of(h.path)) || accepts_json(h.fields));
  bool allowed = true;
  if (stats && !cfg_.stats.allow.empty()) {
    allowed = false;
    for (const Cidr& c : cfg_.stats.allow) allowed = allowed || c.contains(info_.client.ip());
  }
  evbuffer_drain(bufferevent_get_input(client_.get()), consumed);
  ctx_.counters->requests_local.add();

  if (connect) {
    send_local(405, "text/plain; charset=utf-8",
               "405 Method Not Allowed: CONNECT is not proxied here\n", close, RequestEnd::Local);
  } else if (!get) {
    send_local(405, "text/plain; charset=utf-8", "405 Method Not Allowed: use GET or HEAD\n", close,
               RequestEnd::Local);
  } else if (health) {
    // Like HAProxy's monitor-uri: a passing check is counted, not logged.
    ex_.quiet = true;
    // Without node state (never in the daemon) the node counts as serving.
    const NodeState serving;
    const LocalResponse answer =
        render_health(ctx_.node ? *ctx_.node : serving,
                      info_.peer_node.empty() ? HealthAudience::Balancer : HealthAudience::Peer);
    send_local(answer.status, answer.content_type, answer.body, close, RequestEnd::Local);
  } else if (!allowed) {
    send_local(403, "text/plain; charset=utf-8", "403 Forbidden\n", close, RequestEnd::Local);
  } else if (!ctx_.stats_page) {
    send_local(503, "text/plain; charset=utf-8", "503 stats unavailable\n", close,
               RequestEnd::Local);
  } else {
    LocalResponse page = ctx_.stats_page(json);
    send_local(page.status, page.content_type, page.body, close, RequestEnd::Local);
  }
  return true;
}

Destination HttpConnection::route(const http1::RequestHead& h) {
  // The single routing point: the affinity layer decides here between the
  // local Tomcat and the owner's node-proxy.
  ex_.routed = true;
  if (!ctx_.cluster || !ctx_.self) {
    ex_.affinity = affinity::Outcome::Disabled;
    return local_destination();
  }
  auto link_of = [this](const config::Node& n) -> const WorkerContext::PeerLink* {
    for (const WorkerContext::PeerLink& l : ctx_.peers)
      if (l.state->node->tag == n.tag) return &l;
    return nullptr;
  };
  affinity::Request req;
  req.fields = &h.fields;
  req.relayed_in = !info_.peer_node.empty();
  req.now = unix_now();
  const affinity::Decision d = affinity::decide(
      *ctx_.cluster, *ctx_.self, ctx_.cookie_codec, req, [&](const config::Node& n) {
        const WorkerContext::PeerLink* l = link_of(n);
        return l != nullptr && l->state->up.load(std::memory_order_relaxed);
      });
  ex_.affinity = d.outcome;
  ex_.issue_cookie = d.issue_cookie && ctx_.cookie_codec != nullptr;
  const WorkerContext::PeerLink* link =
      d.outcome == affinity::Outcome::Relay && d.owner ? link_of(*d.owner) : nullptr;
  if (!link) return local_destination();
  Destination p;
  p.pool = link->pool;
  p.name = d.owner->name;
  p.address = link->pool->config().address.to_string();
  p.peer = true;
  return p;
}

Destination HttpConnection::local_destination() const {
  Destination d;
  d.pool = ctx_.upstream;
  d.name = "tomcat";
  d.known_down = ctx_.node && !ctx_.node->tomcat_up.load(std::memory_order_relaxed);
  d.address = cfg_.upstream.address.to_string();
  return d;
}

void HttpConnection::fall_back_locally(const std::string& why) {
  ctx_.counters->relay_fallbacks.add();
  log::warning("peer link to " + ex_.dest.name + " (" + ex_.dest.address + "): " + why +
               "; request served locally");
  ex_.affinity = affinity::Outcome::OwnerDown;
  // The local Tomcat may start a session here: it gets our cookie.
  ex_.issue_cookie = ctx_.cookie_codec != nullptr && ctx_.cluster &&
                     ctx_.cluster->affinity.mode == config::AffinityMode::Cookie;
  ex_.dest = local_destination();
  ex_.upstream_head = std::move(ex_.fallback_head);
  ex_.fallback_head.clear();
  if (!ex_.dest.pool) {
    fail_upstream(RequestEnd::ConnectFailed, 503, "no upstream configured");
    return;
  }
  start_upstream(false);
}

std::string HttpConnection::default_host(const ClientInfo& client) const {
  if (valid_host_name(client.sni)) return client.sni;
  return cfg_.upstream.address.to_string();
}

void HttpConnection::step_buffer_body() {
  const size_t staged = evbuffer_get_length(prebuffer_.get());
  const size_t room = staged < kPrebufferBytes ? kPrebufferBytes - staged : 0;
  if (http1::Error e = move_request_body(prebuffer_.get(), room); e != http1::Error::None) {
    on_body_error(e);
    return;
  }
  if (ex_.body_done || evbuffer_get_length(prebuffer_.get()) >= kPrebufferBytes) {
    if (ex_.body_done) set_reading_body(false);
    start_upstream(false);
    return;
  }
  if (client_eof_ && evbuffer_get_length(bufferevent_get_input(client_.get())) == 0) {
    abort_request(RequestEnd::ClientClosed, "client closed mid-body");
  }
}

void HttpConnection::step_connecting() {
  if (!ex_.body_done && client_eof_ &&
      evbuffer_get_length(bufferevent_get_input(client_.get())) == 0)
    abort_request(RequestEnd::ClientClosed, "client closed mid-body");
}

http1::Error HttpConnection::move_request_body(evbuffer* dst, size_t room) {
  evbuffer* in = bufferevent_get_input(client_.get());
  size_t moved_data = 0;
  while (!ex_.body_done) {
    const std::span<const uint8_t> seg = first_segment(in);
    const http1::BodyResult r = request_body_->decode(seg, room - moved_data);
    if (r.status == ParseStatus::Error) return r.error;
    if (r.consumed) {
      evbuffer_remove_buffer(in, dst, r.consumed);
      ex_.bytes_in += r.consumed;
    }
    moved_data += r.data.size();
    if (r.status == ParseStatus::Done) {
      ex_.body_done = true;
      break;
    }
    if (r.consumed == 0) break;  // waits for bytes, or for room
  }
  return http1::Error::None;
}

void HttpConnection::start_upstream(bool fresh) {
  state_ = State::Connecting;
  ++ex_.attempts;
  ex_.connect_started = Clock::now();
  ex_.connected.reset();
  upstream_eof_ = false;
  upstream_error_ = 0;
  upstream_tls_error_.clear();
  upstream_reading_ = false;
  UpstreamPool& pool = *ex_.dest.pool;
  response_timeout_ = to_timeval(pool.config().response_timeout);
  if (!fresh) {
    if (BufferEventPtr bev = pool.take_idle()) {
      ex_.reused = true;
      ex_.connected = ex_.connect_started;
      upstream_ = std::move(bev);
      on_upstream_ready();
      return;
    }
  }
  ex_.reused = false;
  int err = 0;
  BufferEventPtr bev = pool.connect(err);
  if (!bev) {
    on_connect_failed(err, false);
    return;
  }
  upstream_ = std::move(bev);
  bufferevent_setcb(upstream_.get(), nullptr, nullptr, upstream_event_cb, this);
}

void HttpConnection::on_upstream_ready() {
  state_ = State::Proxying;
  bufferevent* up = upstream_.get();
  bufferevent_setcb(up, upstream_read_cb, upstream_write_cb, upstream_event_cb, this);
  bufferevent_setwatermark(up, EV_READ, 0, upstream_input_cap_);
  bufferevent_setwatermark(up, EV_WRITE, kLowWatermark, 0);
  evbuffer* out = bufferevent_get_output(up);
  evbuffer_add(out, ex_.upstream_head.data(), ex_.upstream_head.size());
  const size_t staged = evbuffer_get_length(prebuffer_.get());
  if (staged) {
    ex_.body_sent += staged;
    evbuffer_add_buffer(out, prebuffer_.get());
  }
  ex_.sent = Clock::now();
  ex_.phase = ResponsePhase::Head;
  response_parser_.reset();
  update_upstream_timeouts();
  bufferevent_enable(up, EV_WRITE);
  set_upstream_reading(true);
  again_ = true;
}

void HttpConnection::on_connect_failed(int error, bool timeout) {
  upstream_.reset();
  const std::string timeout_detail =
      "connect to " + ex_.dest.address + " timed out after " +
      std::to_string(ex_.dest.pool->config().connect_timeout.count()) + "ms";
  const std::string failed_detail =
      "connect to " + ex_.dest.address + " failed: " +
      (!upstream_tls_error_.empty() ? "TLS: " + upstream_tls_error_
                                    : std::strerror(error ? error : ECONNREFUSED));
  if (ex_.dest.peer) {
    ctx_.counters->peer_connect_errors.add();
    if (!ex_.response_started && !ex_.fallback_head.empty()) {
      fall_back_locally(timeout ? timeout_detail : failed_detail);
      return;
    }
  } else {
    ctx_.counters->upstream_connect_errors.add();
  }
  if (timeout) {
    fail_upstream(RequestEnd::ConnectTimeout, 504, timeout_detail);
    return;
  }
  fail_upstream(RequestEnd::ConnectFailed, ex_.dest.known_down ? 503 : 502, failed_detail);
}

void HttpConnection::step_proxy() {
  if (!ex_.body_done) {
    evbuffer* out = bufferevent_get_output(upstream_.get());
    const size_t queued = evbuffer_get_length(out);
    if (queued < kHighWatermark) {
      const http1::Error e = move_request_body(out, kHighWatermark - queued);
      ex_.body_sent += evbuffer_get_length(out) - queued;
      if (e != http1::Error::None) {
        on_body_error(e);
        return;
      }
      if (ex_.body_done) {
        set_reading_body(false);
        update_upstream_timeouts();
      }
    }
    // Back-pressure: the client is read again once the upstream drained
    // below the low watermark (upstream_write_cb).
    set_client_reading(ex_.body_done || evbuffer_get_length(out) < kHighWatermark);
    if (!ex_.body_done && client_eof_ &&
        evbuffer_get_length(bufferevent_get_input(client_.get())) == 0) {
      abort_request(RequestEnd::ClientClosed, "client closed mid-body");
      return;
    }
  } else {
    set_client_reading(true);
  }
  pump_response();
  if (state_ == State::Proxying && ex_.phase == ResponsePhase::Done) complete_proxied();
}

void HttpConnection::pump_response() {
  evbuffer* uin = bufferevent_get_input(upstream_.get());
  while (ex_.phase == ResponsePhase::Head) {
    const size_t len = evbuffer_get_length(uin);
    if (len == 0) {
      if (upstream_eof_) on_upstream_gone();
      return;
    }
    ex_.response_bytes = true;
    const size_t n = std::min(len, response_limits_.max_head_bytes);
    const uint8_t* p = evbuffer_pullup(uin, static_cast<ev_ssize_t>(n));
    const http1::HeadResult r = response_parser_.parse({p, n});
    if (r.status == ParseStatus::NeedMore) {
      if (upstream_eof_) fail_upstream(RequestEnd::UpstreamClosed, 502, "upstream closed mid-head");
      return;
    }
    if (r.status == ParseStatus::Error) {
      fail_upstream(RequestEnd::UpstreamInvalid, 502,
                    std::string("invalid response: ") + http1::to_string(r.error));
      return;
    }
    if (!on_response_head(r.consumed)) return;
  }
  if (ex_.phase != ResponsePhase::Body) return;

  evbuffer* cout = bufferevent_get_output(client_.get());
  const size_t queued = evbuffer_get_length(cout);
  if (queued >= kHighWatermark) {
    // Back-pressure: client_write_cb resumes below the low watermark.
    set_upstream_reading(false);
    return;
  }
  const http1::Error e = move_response_body(cout, kHighWatermark - queued);
  ex_.bytes_out += evbuffer_get_length(cout) - queued;
  if (e != http1::Error::None) {
    abort_request(RequestEnd::UpstreamInvalid,
                  std::string("invalid response body: ") + http1::to_string(e));
    return;
  }
  if (ex_.phase == ResponsePhase::Body && upstream_eof_ && evbuffer_get_length(uin) == 0) {
    // A reset is never a clean end, even of a close-delimited body.
    const http1::BodyResult r = response_body_->finish();
    if (r.status == ParseStatus::Done && upstream_error_ == 0) {
      ex_.phase = ResponsePhase::Done;
    } else {
      abort_request(RequestEnd::UpstreamClosed,
                    upstream_error_
                        ? std::string("upstream error mid-body: ") + std::strerror(upstream_error_)
                        : std::string("upstream closed mid-body"));
      return;
    }
  }
  if (ex_.phase == ResponsePhase::Body)
    set_upstream_reading(evbuffer_get_length(cout) < kHighWatermark);
}

http1::Error HttpConnection::move_response_body(evbuffer* dst, size_t room) {
  evbuffer* in = bufferevent_get_input(upstream_.get());
  size_t moved_data = 0;
  while (ex_.phase == ResponsePhase::Body) {
    const std::span<const uint8_t> seg = first_segment(in);
    const http1::BodyResult r = response_body_->decode(seg, room - moved_data);
    if (r.status == ParseStatus::Error) return r.error;
    if (ex_.dechunk) {
      // Only the data goes on; the chunk framing around it is dropped.
      const size_t before =
          r.data.empty() ? r.consumed : static_cast<size_t>(r.data.data() - seg.data());
      const size_t data = r.data.size();
      const size_t after = r.consumed - before - data;
      evbuffer_drain(in, before);
      evbuffer_remove_buffer(in, dst, data);
      evbuffer_drain(in, after);
    } else if (r.consumed) {
      evbuffer_remove_buffer(in, dst, r.consumed);
    }
    moved_data += r.data.size();
    if (r.status == ParseStatus::Done) {
      ex_.phase = ResponsePhase::Done;
      break;
    }
    if (r.consumed == 0 || evbuffer_get_length(in) == 0) break;
  }
  return http1::Error::None;
}

bool HttpConnection::on_response_head(size_t consumed) {
  const http1::ResponseHead& h = response_parser_.head();
  evbuffer* uin = bufferevent_get_input(upstream_.get());
  evbuffer* cout = bufferevent_get_output(client_.get());

  if (h.status == 101) {
    if (ex_.upgrade && ex_.body_done && http1::is_upgrade_accepted(h)) {
      start_tunnel(consumed);
      return false;
    }
    fail_upstream(RequestEnd::UpstreamInvalid, 502, "unexpected 101 response");
    return false;
  }
  if (h.status < 200) {
    // Interim: relayed to HTTP/1.1 clients only (RFC 9110 15.2), then the
    // final head follows.
    ex_.got_interim = true;
    if (!ex_.http10) {
      std::string head;
      ClientResponseOptions o;
      o.framing = BodyFraming::none();
      o.connection = ClientResponseOptions::Connection::Omit;
      build_client_response(h, o, head);
      evbuffer_add(cout, head.data(), head.size());
      ex_.bytes_out += head.size();
    }
    evbuffer_drain(uin, consumed);
    response_parser_.reset();
    update_upstream_timeouts();
    return true;
  }

  ex_.status = h.status;
  ex_.response_head = Clock::now();
  const BodyFraming framing = http1::response_framing(h, ex_.method);
  ex_.upstream_keep_alive = http1::response_keep_alive(h, framing);
  BodyFraming towards_client = framing;
  bool close = !ex_.keep_alive || draining_ || client_eof_ || !ex_.body_done;
  if (framing.kind == BodyFraming::Kind::Chunked && ex_.http10) {
    // HTTP/1.0 has no chunked coding: send the data, end it by closing.
    ex_.dechunk = true;
    towards_client = BodyFraming::until_close();
    close = true;
  }
  if (framing.kind == BodyFraming::Kind::UntilClose) close = true;
  ex_.close_after = close;

  std::string head;
  ClientResponseOptions o;
  o.framing = towards_client;
  o.connection = close ? ClientResponseOptions::Connection::Close
                       : ClientResponseOptions::Connection::KeepAlive;
  o.client_http10 = ex_.http10;
  // Our Tomcat started a session for a client without a valid cookie of
  // ours: record the owner beside it (affinity.h, cookie mode).
  std::string cookie;
  http1::Field cookie_field;
  // The codec is read again here: a reload between the request and its
  // response may have turned cookie mode off (no codec any more).
  if (ex_.issue_cookie && !ex_.dest.peer && ctx_.cookie_codec != nullptr &&
      affinity::response_sets_cookie(h.fields, ctx_.cluster->affinity.session_cookie)) {
    cookie = affinity::set_cookie_value(
        ctx_.cluster->affinity, ctx_.cookie_codec->encode(ctx_.self->tag, unix_now()), info_.tls);
    cookie_field = {"Set-Cookie", cookie};
    o.extra_fields = {&cookie_field, 1};
    ex_.cookie_issued = true;
    ctx_.counters->affinity_cookies_issued.add();
  }
  build_client_response(h, o, head);
  evbuffer_add(cout, head.data(), head.size());
  ex_.bytes_out += head.size();
  evbuffer_drain(uin, consumed);
  ex_.response_started = true;
  ex_.upstream_head.clear();
  response_body_.emplace(framing, response_limits_);
  ex_.phase = framing.kind == BodyFraming::Kind::None ? ResponsePhase::Done : ResponsePhase::Body;
  update_upstream_timeouts();
  return true;
}

void HttpConnection::on_upstream_gone() {
  // The upstream closed (or reset) before any byte of a response.
  const bool retry = ex_.reused && !ex_.retried && !ex_.response_bytes && !ex_.got_interim &&
                     ex_.body_sent == 0 && is_idempotent_method(ex_.method);
  if (retry) {
    // A pooled connection the upstream had already given up on: the
    // request cannot have been processed, send it again on a new one.
    (ex_.dest.peer ? ctx_.counters->peer_retries : ctx_.counters->upstream_retries).add();
    ex_.retried = true;
    upstream_.reset();
    start_upstream(true);
    return;
  }
  fail_upstream(RequestEnd::UpstreamClosed, 502,
                upstream_error_ ? std::string("upstream error before responding: ") +
                                      std::strerror(upstream_error_)
                                : std::string("upstream closed before responding"));
}

void HttpConnection::on_upstream_timeout() {
  (ex_.dest.peer ? ctx_.counters->peer_timeouts : ctx_.counters->upstream_timeouts).add();
  fail_upstream(RequestEnd::UpstreamTimeout, 504,
                "no progress from upstream within " +
                    std::to_string(ex_.dest.pool->config().response_timeout.count()) + "ms");
}

void HttpConnection::on_client_timeout(bool writing) {
  if (state_ == State::Closing || (state_ == State::ReadingHead && !head_started_)) {
    finish_connection();
    return;
  }
  if (writing || ex_.response_started) {
    abort_request(RequestEnd::ClientTimeout,
                  writing ? "client not reading" : "client silent mid-body");
    return;
  }
  upstream_.reset();
  send_error(408, "request body not received in time", true, RequestEnd::ClientTimeout);
}

void HttpConnection::on_body_error(http1::Error error) {
  ctx_.counters->request_errors[static_cast<size_t>(error)].add();
  // The upstream may have the head and part of the body: it must never
  // see the connection again, nor anything that follows on it.
  upstream_.reset();
  if (ex_.response_started) {
    abort_request(RequestEnd::BadBody, http1::to_string(error));
    return;
  }
  ex_.error = http1::to_string(error);
  send_error(http1::http_status(error), http1::to_string(error), true, RequestEnd::BadBody);
}

void HttpConnection::start_tunnel(size_t consumed) {
  const http1::ResponseHead& h = response_parser_.head();
  std::string head;
  ClientResponseOptions o;
  o.framing = BodyFraming::none();
  o.connection = ClientResponseOptions::Connection::Upgrade;
  build_client_response(h, o, head);
  bufferevent* c = client_.get();
  bufferevent* up = upstream_.get();
  evbuffer_add(bufferevent_get_output(c), head.data(), head.size());
  ex_.bytes_out += head.size();
  evbuffer_drain(bufferevent_get_input(up), consumed);
  ex_.status = 101;
  ex_.response_head = Clock::now();
  ex_.response_started = true;
  ex_.phase = ResponsePhase::Done;
  ctx_.counters->tunnels.add();
  cancel_timer();
  state_ = State::Tunnel;
  for (bufferevent* b : {c, up}) {
    bufferevent_set_timeouts(b, nullptr, nullptr);
    bufferevent_setwatermark(b, EV_READ, 0, 0);
  }
  Relay::Options ro;
  ro.high_watermark = kHighWatermark;
  ro.idle_timeout = to_timeval(cfg_.timeouts.tunnel);
  relay_ = std::make_unique<Relay>(std::move(client_), std::move(upstream_), ro,
                                   [this](const Relay::Result& r) { on_tunnel_end(r); });
  relay_->start();
}

void HttpConnection::on_tunnel_end(const Relay::Result& r) {
  ex_.bytes_in += relay_->bytes_a_to_b();
  ex_.bytes_out += relay_->bytes_b_to_a();
  RequestEnd end = RequestEnd::TunnelClosed;
  switch (r.end) {
    case RelayEnd::BothClosed:
      end = RequestEnd::TunnelClosed;
      break;
    case RelayEnd::IdleTimeout:
      end = RequestEnd::TunnelTimeout;
      break;
    case RelayEnd::AReset:
    case RelayEnd::BReset:
      end = RequestEnd::TunnelError;
      ex_.error = std::string(r.end == RelayEnd::AReset ? "client" : "upstream") +
                  " error: " + std::strerror(r.error ? r.error : ECONNRESET);
      break;
    case RelayEnd::Stopped:
      end = RequestEnd::Shutdown;
      break;
  }
  end_request(end);
  finish_connection();
}

void HttpConnection::complete_proxied() {
  if (upstream_) {
    bufferevent* up = upstream_.get();
    const bool reusable = ex_.upstream_keep_alive && ex_.body_done && !upstream_eof_ &&
                          evbuffer_get_length(bufferevent_get_input(up)) == 0 &&
                          evbuffer_get_length(bufferevent_get_output(up)) == 0;
    bufferevent_setcb(up, nullptr, nullptr, nullptr, nullptr);
    bufferevent_set_timeouts(up, nullptr, nullptr);
    if (reusable) ex_.dest.pool->release(std::move(upstream_));
    upstream_.reset();
  }
  const bool close = ex_.close_after || draining_ || client_eof_;
  end_request(RequestEnd::Complete);
  if (close)
    begin_closing();
  else
    next_request();
}

// ---------------------------------------------------------------------------
// Answers made by the proxy.

void HttpConnection::send_local(int status, std::string_view content_type, std::string_view body,
                                bool close, RequestEnd end) {
  close = close || !ex_.keep_alive || draining_ || client_eof_;
  std::string out =
      "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason_phrase(status)) + "\r\n";
  out += "Content-Type: ";
  out += content_type;
  out += "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nCache-Control: no-store\r\n";
  if (close)
    out += "Connection: close\r\n";
  else if (ex_.http10)
    out += "Connection: keep-alive\r\n";
  out += "\r\n";
  if (ex_.method != "HEAD") out += body;
  evbuffer_add(bufferevent_get_output(client_.get()), out.data(), out.size());
  ex_.bytes_out += out.size();
  ex_.status = status;
  ex_.close_after = close;
  end_request(end);
  if (close)
    begin_closing();
  else
    next_request();
}

void HttpConnection::send_error(int status, std::string_view detail, bool close, RequestEnd end) {
  if (ex_.error.empty()) ex_.error = std::string(detail);
  std::string body = std::to_string(status) + " " + std::string(reason_phrase(status)) + "\n";
  send_local(status, "text/plain; charset=utf-8", body, close, end);
}

void HttpConnection::fail_upstream(RequestEnd end, int status, std::string detail) {
  upstream_.reset();
  if (ex_.response_started) {
    abort_request(end, std::move(detail));
    return;
  }
  ex_.error = std::move(detail);
  // The connection can carry the next request only if this one was read
  // to its end.
  send_error(status, ex_.error, !ex_.body_done, end);
}

void HttpConnection::abort_request(RequestEnd end, std::string detail) {
  if (state_ == State::Closed) return;
  if (ex_.error.empty()) ex_.error = std::move(detail);
  end_request(end);
  if (ex_.response_started && client_) {
    // A response cut short must not look complete to the client (a
    // close-delimited one would): close with a reset, not a FIN.
    if (evutil_socket_t fd = bufferevent_getfd(client_.get()); fd >= 0) {
      const linger reset{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    }
  }
  finish_connection();
}

// ---------------------------------------------------------------------------
// Request boundaries and the end of the connection.

void HttpConnection::end_request(RequestEnd end) {
  NodeCounters& c = *ctx_.counters;
  ++requests_;
  c.requests.add();
  c.request_ends[static_cast<size_t>(end)].add();
  const int cls = ex_.status / 100;
  c.responses_by_class[(cls >= 1 && cls <= 5) ? static_cast<size_t>(cls) : 0].add();
  c.bytes_in.add(ex_.bytes_in);
  c.bytes_out.add(ex_.bytes_out);
  if (ex_.routed) c.affinity[static_cast<size_t>(ex_.affinity)].add();

  // Without an access log, failures still get their line (as a warning).
  const bool failed =
      ex_.status >= 500 || ex_.status == 408 ||
      (end != RequestEnd::Complete && end != RequestEnd::Local && end != RequestEnd::TunnelClosed);
  if (ex_.quiet && !failed) return;
  if (!cfg_.log.access_log && !failed) return;
  const Clock::time_point now = Clock::now();
  // A relayed request is logged with the client the relaying node served.
  const ClientInfo& who = ex_.relayed ? *ex_.relayed : info_;
  std::string line =
      "http client=" + (ex_.relayed ? who.client.ip().to_string() : who.client.to_string()) +
      " listener=" + loggable(info_.listener, 64);
  line += " tls=" + (info_.tls ? loggable(info_.tls_version, 16) : std::string("-"));
  line += std::string(" resumed=") + (info_.tls ? (info_.tls_resumed ? "1" : "0") : "-");
  line += " sni=" + loggable(who.sni, 128);
  line += " method=" + loggable(ex_.method, 32) +
          " path=" + (ex_.target.empty() ? std::string("-") : ex_.target);
  line += " status=" + (ex_.status ? std::to_string(ex_.status) : std::string("-"));
  line +=
      " bytes_in=" + std::to_string(ex_.bytes_in) + " bytes_out=" + std::to_string(ex_.bytes_out);
  if (ex_.attempts) {
    line += " upstream=" + ex_.dest.name + " reused=" + (ex_.reused ? "1" : "0");
    line += " connect_ms=" + (ex_.connected
                                  ? std::to_string(ms_between(*ex_.connect_started, *ex_.connected))
                                  : std::string("-"));
    line += " upstream_ms=" + (ex_.sent && ex_.response_head
                                   ? std::to_string(ms_between(*ex_.sent, *ex_.response_head))
                                   : std::string("-"));
    if (ex_.retried) line += " retried=1";
  } else {
    line += " upstream=-";
  }
  if (ex_.routed) line += std::string(" affinity=") + affinity::to_string(ex_.affinity);
  if (!info_.peer_node.empty()) line += " relayed_from=" + info_.peer_node;
  if (ex_.cookie_issued) line += " cookie=issued";
  line += " total_ms=" + std::to_string(ms_between(ex_.started, now));
  line += std::string(" end=") + to_string(end);
  if (!ex_.error.empty()) line += " error=\"" + loggable(ex_.error, 200) + "\"";
  if (cfg_.log.access_log)
    log::info(line);
  else
    log::warning(line);
}

void HttpConnection::next_request() {
  ex_ = Exchange{};
  ex_.started = Clock::now();
  request_parser_.reset();
  response_parser_.reset();
  request_body_.reset();
  response_body_.reset();
  head_started_ = false;
  upstream_eof_ = false;
  upstream_error_ = 0;
  state_ = State::ReadingHead;
  set_reading_body(false);
  set_client_reading(true);
  arm_timer(TimerKind::Idle, cfg_.timeouts.client_idle);
  again_ = true;
}

void HttpConnection::begin_closing() {
  upstream_.reset();
  cancel_timer();
  state_ = State::Closing;
  bufferevent* c = client_.get();
  set_reading_body(false);
  // write_cb now fires only once everything has been written.
  bufferevent_setwatermark(c, EV_WRITE, 0, 0);
  again_ = true;
}

void HttpConnection::step_closing() {
  bufferevent* c = client_.get();
  evbuffer* in = bufferevent_get_input(c);
  if (!lingering_) {
    if (evbuffer_get_length(bufferevent_get_output(c)) != 0) {
      set_client_reading(false);
      return;  // client_write_cb comes back when it is flushed
    }
    start_linger();
    if (state_ == State::Closed) return;
  }
  evbuffer_drain(in, evbuffer_get_length(in));
  if (client_eof_) finish_connection();
}

void HttpConnection::start_linger() {
  lingering_ = true;
  if (client_eof_) {
    finish_connection();
    return;
  }
  bufferevent* c = client_.get();
  if (SSL* ssl = bufferevent_openssl_get_ssl(c)) {
    SSL_shutdown(ssl);  // close_notify: the response is complete
  } else if (evutil_socket_t fd = bufferevent_getfd(c); fd >= 0) {
    ::shutdown(fd, SHUT_WR);
  }
  arm_timer(TimerKind::Linger, kLingerTimeout);
  set_client_reading(true);
}

void HttpConnection::finish_connection() {
  if (state_ == State::Closed) return;
  state_ = State::Closed;
  cancel_timer();
  upstream_.reset();
  client_.reset();
  // relay_ may be calling us: it is destroyed with this object.
  if (relay_) relay_->stop();
  static const timeval kNow{0, 0};
  evtimer_add(destroy_ev_.get(), &kNow);
}

// ---------------------------------------------------------------------------
// Timers, reading switches, timeouts.

void HttpConnection::arm_timer(TimerKind kind, std::chrono::milliseconds after) {
  timer_kind_ = kind;
  const timeval tv = to_timeval(after);
  evtimer_add(timer_.get(), &tv);
}

void HttpConnection::cancel_timer() {
  timer_kind_ = TimerKind::None;
  evtimer_del(timer_.get());
}

void HttpConnection::set_client_reading(bool on) {
  if (!client_ || on == client_reading_) return;
  if (on && client_eof_) return;
  client_reading_ = on;
  if (on)
    bufferevent_enable(client_.get(), EV_READ);
  else
    bufferevent_disable(client_.get(), EV_READ);
}

void HttpConnection::set_reading_body(bool on) {
  if (!client_) return;
  // The write timeout always applies: a client that stops reading its
  // response is dropped after `client`; the read timeout only while a body
  // is due.
  bufferevent_set_timeouts(client_.get(), on ? &client_timeout_ : nullptr, &client_timeout_);
  // A body streams through a watermark's worth of input; otherwise the
  // input holds at most one head (pipelined requests wait in the kernel).
  bufferevent_setwatermark(client_.get(), EV_READ, 0, on ? body_input_cap_ : head_input_cap_);
}

void HttpConnection::update_upstream_timeouts() {
  if (!upstream_) return;
  // The upstream owes bytes once the request is complete, while a response
  // streams, and while an expected 100 has not come.
  const bool waiting = ex_.phase == ResponsePhase::Body || ex_.body_done ||
                       (ex_.expect_continue && !ex_.got_interim);
  bufferevent_set_timeouts(upstream_.get(), waiting ? &response_timeout_ : nullptr,
                           &response_timeout_);
}

void HttpConnection::set_upstream_reading(bool on) {
  if (!upstream_ || on == upstream_reading_) return;
  if (on && upstream_eof_) return;
  upstream_reading_ = on;
  if (on)
    bufferevent_enable(upstream_.get(), EV_READ);
  else
    bufferevent_disable(upstream_.get(), EV_READ);
}

}  // namespace edgepin::nodeproxy
