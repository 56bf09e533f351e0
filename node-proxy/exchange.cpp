#include "exchange.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "builtin_responder.h"
#include "header_policy.h"
#include "log.h"
#include "upstream_pool.h"

namespace edgepin::nodeproxy {

namespace {

int64_t ms_between(std::chrono::steady_clock::time_point a,
                   std::chrono::steady_clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

using http1::BodyFraming;

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

http1::Limits response_limits(const config::NodeProxyConfig& cfg) {
  http1::Limits l;
  l.max_head_bytes = std::max(cfg.limits.max_header_bytes, kMinResponseHeadBytes);
  l.max_fields = std::max<size_t>(cfg.limits.max_headers, http1::kDefaultMaxFields);
  l.max_body_bytes = http1::kUnlimitedBody;
  return l;
}

uint64_t request_body_limit(const config::NodeProxyConfig& cfg) {
  return cfg.limits.max_body_bytes == 0 ? http1::kUnlimitedBody : cfg.limits.max_body_bytes;
}

uint32_t unix_now() {
  return static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

Exchange::Exchange(WorkerContext& ctx, const config::NodeProxyConfig& cfg, ClientStream& client,
                   Clock::time_point started)
    : ctx_(ctx), cfg_(cfg), client_(client), started_(started) {}

Exchange::~Exchange() = default;

const char* Exchange::phase_name() const {
  switch (phase_) {
    case Phase::Head:
      return "reading_head";
    case Phase::BufferingBody:
      return "buffering_body";
    case Phase::Connecting:
      return "connecting";
    case Phase::Proxying:
      return "proxying";
    case Phase::Tunnel:
      return "tunnel";
    case Phase::Done:
      return "done";
  }
  return "?";
}

std::string Exchange::request_line() const {
  return method_.empty() ? std::string() : method_ + " " + target_;
}

std::string Exchange::destination() const { return routed_ ? dest_.name : std::string(); }

size_t Exchange::buffered_bytes() const {
  size_t n = prebuffer_ ? evbuffer_get_length(prebuffer_.get()) : 0;
  if (up_) n += up_->buffered_bytes();
  if (tunnel_) n += tunnel_->buffered_bytes();
  return n;
}

// ---------------------------------------------------------------------------
// How the request arrived.

void Exchange::on_head(const http1::RequestHead& h, size_t head_bytes) {
  method_ = std::string(h.method);
  target_ = loggable(h.target, kLogTargetMax);
  expect_continue_ = h.expect_continue;
  upgrade_ = h.upgrade_websocket;
  bytes_in_ = head_bytes;

  if (std::optional<BuiltinAnswer> a = answer_builtin(ctx_, client_.client(), h)) {
    ctx_.counters->requests_local.add();
    quiet_ = a->quiet;
    send_local(a->response.status, a->response.content_type, a->response.body, a->close,
               RequestEnd::Local);
    return;
  }

  if (http1::Error e = http1::check_body_size(h.framing, request_body_limit(cfg_));
      e != http1::Error::None) {
    reject(e);
    return;
  }

  // On the peer listener the client is the one the relaying node served,
  // as its X-Forwarded-* say (believed only here, behind mutual TLS).
  const ClientInfo& info = client_.client();
  const ClientInfo* client = &info;
  if (!info.peer_node.empty()) {
    std::string why;
    relayed_ = relayed_client_info(h.fields, info, why);
    if (!relayed_) {
      error_ = why;
      send_error(400, why, true, RequestEnd::BadRequest);
      return;
    }
    client = &*relayed_;
  }

  dest_ = route(h);
  if (relayed_ && ctx_.cookie_codec != nullptr && ctx_.cluster &&
      ctx_.cluster->affinity.mode == config::AffinityMode::Cookie) {
    // A failover from the relaying node (its Tomcat failed): this node is
    // the owner from now on, and says so if its Tomcat starts a session.
    for (const http1::Field& f : h.fields)
      if (http1::iequals(f.name, kFailoverField)) issue_cookie_ = true;
  }
  if (!dest_.pool) {
    send_error(503, "no upstream configured", true, RequestEnd::ConnectFailed);
    return;
  }
  UpstreamRequestOptions opts;
  // Only WebSocket is tunnelled; other upgrades (h2c) are not offered to
  // the upstream at all.
  opts.tunnel = h.upgrade_websocket;
  opts.keep_alive = dest_.pool->config().pool_size > 0;
  const std::string fallback_host = default_host(*client);
  opts.default_host = fallback_host;
  // The marker: towards a peer it names us (the owner must not relay it
  // again); towards Tomcat, on the peer listener, the node it came through.
  std::vector<http1::Field> extra;
  if (dest_.peer) {
    extra.push_back({kRelayedField, ctx_.self->name});
    if (!client->sni.empty()) extra.push_back({kSniField, client->sni});
  } else if (!info.peer_node.empty()) {
    extra.push_back({kRelayedField, info.peer_node});
  }
  opts.extra_fields = extra;
  build_upstream_request(h, *client, cfg_.headers, opts, upstream_head_);
  if (dest_.peer) {
    // Kept in case the owner cannot be reached (fall_back_locally).
    UpstreamRequestOptions local = opts;
    local.extra_fields = {};
    local.keep_alive = ctx_.upstream && ctx_.upstream->config().pool_size > 0;
    build_upstream_request(h, *client, cfg_.headers, local, fallback_head_);
  }

  // Everything needed from the head's views was copied.
  if (!client_.body_done() && !expect_continue_) {
    phase_ = Phase::BufferingBody;
    return;
  }
  start_upstream(false);
}

void Exchange::reject(http1::Error error) {
  ctx_.counters->request_errors[static_cast<size_t>(error)].add();
  error_ = http1::to_string(error);
  int status = http1::http_status(error);
  if (status == 0) status = 400;
  send_error(status, http1::to_string(error), true, RequestEnd::BadRequest);
}

void Exchange::head_timed_out() {
  send_error(408, "request head not received in time", true, RequestEnd::HeaderTimeout);
}

void Exchange::client_closed_mid_head() {
  error_ = "client closed mid-head";
  end_request(RequestEnd::ClientClosed);
  client_.finish(true);
}

void Exchange::client_failed(int err) {
  abort_request(RequestEnd::ClientClosed,
                std::string("client error: ") + std::strerror(err ? err : ECONNRESET));
}

void Exchange::client_timed_out(bool writing) {
  if (done()) return;
  if (writing || response_started_) {
    abort_request(RequestEnd::ClientTimeout,
                  writing ? "client not reading" : "client silent mid-body");
    return;
  }
  up_.reset();
  send_error(408, "request body not received in time", true, RequestEnd::ClientTimeout);
}

// ---------------------------------------------------------------------------
// Routing.

Destination Exchange::route(const http1::RequestHead& h) {
  // The single routing point: the affinity layer decides here between the
  // local Tomcat and the owner's node-proxy.
  routed_ = true;
  if (!ctx_.cluster || !ctx_.self) {
    affinity_ = affinity::Outcome::Disabled;
    return local_destination();
  }
  auto link_of = [this](const config::Node& n) -> const WorkerContext::PeerLink* {
    for (const WorkerContext::PeerLink& l : ctx_.peers)
      if (l.state->node->tag == n.tag) return &l;
    return nullptr;
  };
  affinity::Request req;
  req.fields = &h.fields;
  req.relayed_in = !client_.client().peer_node.empty();
  req.now = unix_now();
  const affinity::Decision d = affinity::decide(
      *ctx_.cluster, *ctx_.self, ctx_.cookie_codec, req, [&](const config::Node& n) {
        const WorkerContext::PeerLink* l = link_of(n);
        return l != nullptr && l->state->up.load(std::memory_order_relaxed);
      });
  affinity_ = d.outcome;
  issue_cookie_ = d.issue_cookie && ctx_.cookie_codec != nullptr;
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

Destination Exchange::local_destination() const {
  Destination d;
  d.pool = ctx_.upstream;
  d.name = "tomcat";
  d.known_down = ctx_.node && !ctx_.node->tomcat_up.load(std::memory_order_relaxed);
  d.address = cfg_.upstream.address.to_string();
  return d;
}

void Exchange::fall_back_locally(const std::string& why) {
  ctx_.counters->relay_fallbacks.add();
  log::warning("peer link to " + dest_.name + " (" + dest_.address + "): " + why +
               "; request served locally");
  affinity_ = affinity::Outcome::OwnerDown;
  // The local Tomcat may start a session here: it gets our cookie.
  issue_cookie_ = ctx_.cookie_codec != nullptr && ctx_.cluster &&
                  ctx_.cluster->affinity.mode == config::AffinityMode::Cookie;
  dest_ = local_destination();
  upstream_head_ = std::move(fallback_head_);
  fallback_head_.clear();
  if (!dest_.pool) {
    fail_upstream(RequestEnd::ConnectFailed, 503, "no upstream configured");
    return;
  }
  start_upstream(false);
}

std::string Exchange::default_host(const ClientInfo& client) const {
  if (valid_host_name(client.sni)) return client.sni;
  return cfg_.upstream.address.to_string();
}

// ---------------------------------------------------------------------------
// Failover to a peer (issue 11) and passive health.

const WorkerContext::PeerLink* Exchange::failover_link() const {
  if (!ctx_.cluster || !ctx_.self || !client_.client().peer_node.empty()) return nullptr;
  if (ctx_.cluster->affinity.mode == config::AffinityMode::None) return nullptr;
  // The first healthy node after this one in cluster.json order (wrapping):
  // every failover of a node goes to the same peer while it is up, so the
  // sessions its users start there stay together.
  const auto& nodes = ctx_.cluster->nodes;
  auto position = [&](uint16_t tag) {
    for (size_t i = 0; i < nodes.size(); ++i)
      if (nodes[i].tag == tag) return i;
    return nodes.size();
  };
  const size_t n = nodes.size();
  const size_t self = position(ctx_.self->tag);
  const WorkerContext::PeerLink* best = nullptr;
  size_t best_distance = SIZE_MAX;
  for (const WorkerContext::PeerLink& l : ctx_.peers) {
    if (!l.pool || !l.state->up.load(std::memory_order_relaxed)) continue;
    const size_t at = position(l.state->node->tag);
    if (at == n || self == n) continue;
    const size_t distance = (at + n - self) % n;
    if (distance < best_distance) {
      best = &l;
      best_distance = distance;
    }
  }
  return best;
}

bool Exchange::switch_to_peer(FailoverReason why) {
  if (failover_ || dest_.peer || response_started_ || got_interim_ || !body_held()) return false;
  const WorkerContext::PeerLink* link = failover_link();
  if (!link) {
    if (why != FailoverReason::TomcatDown) ctx_.counters->failovers_impossible.add();
    return false;
  }
  // The peer gets the request Tomcat would have got, rebuilt from that head
  // (the same client facts) with the relay marker and the failover marker.
  http1::Limits limits;
  limits.max_head_bytes = upstream_head_.size();
  limits.max_fields = http1::kDefaultMaxFields + cfg_.limits.max_headers;
  http1::RequestParser parser(limits);
  const http1::HeadResult r = parser.parse(
      {reinterpret_cast<const uint8_t*>(upstream_head_.data()), upstream_head_.size()});
  if (r.status != ParseStatus::Done) return false;  // never: we wrote it
  const http1::RequestHead& h = parser.head();
  const ClientInfo& client = client_.client();
  const std::string host = default_host(client);
  std::vector<http1::Field> extra{{kRelayedField, ctx_.self->name}};
  if (!client.sni.empty()) extra.push_back({kSniField, client.sni});
  extra.push_back({kFailoverField, to_string(why)});
  UpstreamRequestOptions opts;
  opts.tunnel = h.upgrade_websocket;
  opts.keep_alive = link->pool->config().pool_size > 0;
  opts.default_host = host;
  opts.extra_fields = extra;
  std::string head;
  build_upstream_request(h, client, cfg_.headers, opts, head);
  upstream_head_ = std::move(head);
  failover_ = why;
  ctx_.counters->failovers[static_cast<size_t>(why)].add();
  dest_.pool = link->pool;
  dest_.name = link->state->node->name;
  dest_.address = link->pool->config().address.to_string();
  dest_.known_down = false;
  dest_.peer = true;
  fallback_head_.clear();
  restore_body();
  retried_ = false;  // a dead pooled peer connection gets its own retry
  return true;
}

void Exchange::restore_body() {
  // The body goes again, from the copy (nothing of it is lost yet).
  if (!body_copy_) return;
  prebuffer_.reset(evbuffer_new());
  evbuffer_add(prebuffer_.get(), evbuffer_pullup(body_copy_.get(), -1),
               evbuffer_get_length(body_copy_.get()));
  body_sent_ = 0;
}

bool Exchange::fail_over(FailoverReason why) {
  if (!switch_to_peer(why)) return false;
  ++retries_;
  start_upstream(false);
  return true;
}

// The checker (tomcat_check.h) then needs `rise` successes from here on.
// Only the call that flips the verdict logs and counts the transition.
void Exchange::report_tomcat_failure(const std::string& why) {
  if (!ctx_.node || !ctx_.node->tomcat_up.exchange(false, std::memory_order_relaxed)) return;
  ctx_.counters->tomcat_passive_downs.add();
  log::warning("Tomcat at " + dest_.address + " is DOWN (reported by the data path: " + why + ")");
}

void Exchange::report_peer_failure(const std::string& why) {
  for (const WorkerContext::PeerLink& l : ctx_.peers) {
    if (l.pool != dest_.pool) continue;
    if (!l.state->up.exchange(false, std::memory_order_relaxed)) return;
    ctx_.counters->peer_passive_downs.add();
    log::warning("peer " + l.state->node->name + " at " + dest_.address +
                 " is DOWN (reported by the data path: " + why + ")");
    return;
  }
}

// ---------------------------------------------------------------------------
// The steps.

void Exchange::step() {
  Phase before;
  do {
    before = phase_;
    switch (phase_) {
      case Phase::BufferingBody:
        step_buffer_body();
        break;
      case Phase::Connecting:
        step_connecting();
        break;
      case Phase::Proxying:
        step_proxy();
        break;
      case Phase::Head:
      case Phase::Tunnel:
      case Phase::Done:
        return;
    }
  } while (phase_ != before);
}

void Exchange::step_buffer_body() {
  if (!prebuffer_) prebuffer_.reset(evbuffer_new());
  evbuffer* pre = prebuffer_.get();
  const size_t staged = evbuffer_get_length(pre);
  const size_t room = staged < kPrebufferBytes ? kPrebufferBytes - staged : 0;
  const ClientStream::BodyRead r = client_.read_body(pre, room);
  bytes_in_ += r.bytes;
  if (r.error != http1::Error::None) {
    on_body_error(r.error);
    return;
  }
  if (client_.body_done() || evbuffer_get_length(pre) >= kPrebufferBytes) {
    start_upstream(false);
    return;
  }
  if (client_.body_abandoned()) abort_request(RequestEnd::ClientClosed, "client closed mid-body");
}

void Exchange::start_upstream(bool fresh) {
  // The local Tomcat is known down (its check, or an earlier request saw it
  // fail): a peer serves the request at once instead of a doomed connect.
  if (attempts_ == 0 && !dest_.peer && dest_.known_down) switch_to_peer(FailoverReason::TomcatDown);
  phase_ = Phase::Connecting;
  ++attempts_;
  connect_started_ = Clock::now();
  connected_.reset();
  up_.reset();
  up_.emplace(*dest_.pool, response_limits(cfg_), client_);
  switch (up_->start(fresh)) {
    case UpstreamRequest::Start::Ready:
      reused_ = true;
      connected_ = connect_started_;
      on_upstream_ready();
      return;
    case UpstreamRequest::Start::Failed:
      reused_ = false;
      on_connect_failed(up_->error(), false);
      return;
    case UpstreamRequest::Start::Connecting:
      reused_ = false;
      return;
  }
}

void Exchange::step_connecting() {
  switch (up_->connect_state()) {
    case UpstreamRequest::ConnectState::Connected:
      connected_ = up_->connected_at();
      on_upstream_ready();
      return;
    case UpstreamRequest::ConnectState::Failed:
    case UpstreamRequest::ConnectState::TimedOut:
      on_connect_failed(up_->error(),
                        up_->connect_state() == UpstreamRequest::ConnectState::TimedOut);
      return;
    case UpstreamRequest::ConnectState::Pending:
      break;
  }
  if (!client_.body_done() && client_.body_abandoned())
    abort_request(RequestEnd::ClientClosed, "client closed mid-body");
}

void Exchange::on_upstream_ready() {
  phase_ = Phase::Proxying;
  evbuffer* staged = prebuffer_.get();
  if (staged) {
    const size_t n = evbuffer_get_length(staged);
    // The whole body is in hand: keep a copy so that a retry can resend it.
    if (n && client_.body_done() && !body_copy_) {
      body_copy_.reset(evbuffer_new());
      evbuffer_add(body_copy_.get(), evbuffer_pullup(staged, -1), n);
    }
    body_sent_ += n;
  }
  up_->send(upstream_head_, staged);
  sent_ = Clock::now();
  response_phase_ = ResponsePhase::Head;
  update_upstream_timeouts();
}

void Exchange::on_connect_failed(int error, bool timeout) {
  const std::string tls_error = up_ ? up_->tls_error() : std::string();
  up_.reset();
  const std::string timeout_detail = "connect to " + dest_.address + " timed out after " +
                                     std::to_string(dest_.pool->config().connect_timeout.count()) +
                                     "ms";
  const std::string failed_detail =
      "connect to " + dest_.address + " failed: " +
      (!tls_error.empty() ? "TLS: " + tls_error : std::strerror(error ? error : ECONNREFUSED));
  const std::string& detail = timeout ? timeout_detail : failed_detail;
  if (dest_.peer) {
    ctx_.counters->peer_connect_errors.add();
    report_peer_failure(detail);
    if (!response_started_ && !fallback_head_.empty()) {
      fall_back_locally(detail);
      return;
    }
  } else {
    ctx_.counters->upstream_connect_errors.add();
    report_tomcat_failure(detail);
    // Nothing reached Tomcat: any method may go to a peer.
    const FailoverReason why =
        timeout ? FailoverReason::ConnectTimeout : FailoverReason::ConnectFailed;
    if (fail_over(why)) return;
    if (!client_.client().peer_node.empty() && !response_started_) {
      // Relayed here (one hop): 503 with the marker, the relaying node
      // then serves it itself (nothing of it reached this Tomcat).
      owner_unavailable_ = why;
      fail_upstream(RequestEnd::ConnectFailed, 503, detail);
      return;
    }
  }
  if (timeout) {
    fail_upstream(RequestEnd::ConnectTimeout, 504, timeout_detail);
    return;
  }
  fail_upstream(RequestEnd::ConnectFailed, dest_.known_down ? 503 : 502, failed_detail);
}

void Exchange::step_proxy() {
  if (up_->take_timeout()) {
    on_upstream_timeout();
    return;
  }
  if (!client_.body_done()) {
    evbuffer* out = up_->request_sink();
    const size_t queued = evbuffer_get_length(out);
    if (queued < kHighWatermark) {
      const ClientStream::BodyRead r = client_.read_body(out, kHighWatermark - queued);
      bytes_in_ += r.bytes;
      body_sent_ += evbuffer_get_length(out) - queued;
      if (r.error != http1::Error::None) {
        on_body_error(r.error);
        return;
      }
      if (client_.body_done()) update_upstream_timeouts();
    }
    // Back-pressure: the client is read again once the upstream drained
    // below the low watermark (its write callback wakes us).
    client_.set_body_flow(client_.body_done() || evbuffer_get_length(out) < kHighWatermark);
    if (!client_.body_done() && client_.body_abandoned()) {
      abort_request(RequestEnd::ClientClosed, "client closed mid-body");
      return;
    }
  } else {
    client_.set_body_flow(true);
  }
  pump_response();
  if (phase_ == Phase::Proxying && response_phase_ == ResponsePhase::Done) complete_proxied();
}

void Exchange::pump_response() {
  while (response_phase_ == ResponsePhase::Head) {
    const UpstreamRequest::HeadStep s = up_->parse_head();
    switch (s.kind) {
      case UpstreamRequest::HeadStep::Kind::NeedMore:
        return;
      case UpstreamRequest::HeadStep::Kind::Gone:
        on_upstream_gone();
        return;
      case UpstreamRequest::HeadStep::Kind::Truncated:
        fail_upstream(RequestEnd::UpstreamClosed, 502, "upstream closed mid-head");
        return;
      case UpstreamRequest::HeadStep::Kind::Invalid:
        fail_upstream(RequestEnd::UpstreamInvalid, 502,
                      std::string("invalid response: ") + http1::to_string(s.error));
        return;
      case UpstreamRequest::HeadStep::Kind::Head:
        if (!on_response_head(s.consumed)) return;
        break;
    }
  }
  if (response_phase_ != ResponsePhase::Body) return;

  const size_t room = client_.response_room();
  if (room == 0) {
    // Back-pressure: the codec wakes us once the client drained.
    up_->set_reading(false);
    return;
  }
  evbuffer* sink = client_.response_sink();
  const size_t before = evbuffer_get_length(sink);
  const UpstreamRequest::BodyStep r = up_->move_body(sink, room, data_only_);
  bytes_out_ += evbuffer_get_length(sink) - before;
  if (r.error != http1::Error::None) {
    abort_request(RequestEnd::UpstreamInvalid,
                  std::string("invalid response body: ") + http1::to_string(r.error));
    return;
  }
  if (r.done) response_phase_ = ResponsePhase::Done;
  if (response_phase_ == ResponsePhase::Body) {
    switch (up_->body_end()) {
      case UpstreamRequest::BodyEnd::Open:
        break;
      case UpstreamRequest::BodyEnd::Clean:
        response_phase_ = ResponsePhase::Done;
        break;
      case UpstreamRequest::BodyEnd::Cut:
        abort_request(RequestEnd::UpstreamClosed, up_->socket_error()
                                                      ? std::string("upstream error mid-body: ") +
                                                            std::strerror(up_->socket_error())
                                                      : std::string("upstream closed mid-body"));
        return;
    }
  }
  if (response_phase_ == ResponsePhase::Body) up_->set_reading(client_.response_room() > 0);
}

bool Exchange::on_response_head(size_t consumed) {
  const http1::ResponseHead& h = up_->head();
  if (h.status == 503 && dest_.peer && !failover_ && !fallback_head_.empty() && body_held()) {
    // The owner's Tomcat refused this relayed request before any byte of
    // it got there (the owner says so with the failover marker): the owner
    // is as good as down, this node serves it.
    for (const http1::Field& f : h.fields) {
      if (!http1::iequals(f.name, kFailoverField)) continue;
      const std::string why = "owner's Tomcat unavailable (" + std::string(f.value) + ")";
      up_.reset();
      restore_body();
      fall_back_locally(why);
      return false;
    }
  }
  if (h.status == 101) {
    if (upgrade_ && client_.body_done() && http1::is_upgrade_accepted(h)) {
      start_tunnel(consumed);
      return false;
    }
    fail_upstream(RequestEnd::UpstreamInvalid, 502, "unexpected 101 response");
    return false;
  }
  if (h.status < 200) {
    // Interim: relayed (RFC 9110 15.2), then the final head follows.
    got_interim_ = true;
    bytes_out_ += client_.send_interim(h);
    up_->skip_head(consumed);
    update_upstream_timeouts();
    return true;
  }

  status_ = h.status;
  response_head_ = Clock::now();
  const BodyFraming framing = http1::response_framing(h, method_);
  upstream_keep_alive_ = http1::response_keep_alive(h, framing);
  // Our Tomcat started a session for a client without a valid cookie of
  // ours: record the owner beside it (affinity.h, cookie mode).
  std::string cookie;
  http1::Field cookie_field;
  std::span<const http1::Field> extra;
  // The codec is read again here: a reload between the request and its
  // response may have turned cookie mode off (no codec any more).
  if (issue_cookie_ && !dest_.peer && ctx_.cookie_codec != nullptr &&
      affinity::response_sets_cookie(h.fields, ctx_.cluster->affinity.session_cookie)) {
    cookie = affinity::set_cookie_value(ctx_.cluster->affinity,
                                        ctx_.cookie_codec->encode(ctx_.self->tag, unix_now()),
                                        (relayed_ ? *relayed_ : client_.client()).tls);
    cookie_field = {"Set-Cookie", cookie};
    extra = {&cookie_field, 1};
    cookie_issued_ = true;
    ctx_.counters->affinity_cookies_issued.add();
  }
  const ClientStream::ResponseStart s =
      client_.start_response(h, framing, !client_.body_done(), extra);
  bytes_out_ += s.head_bytes;
  close_after_ = s.close;
  data_only_ = s.data_only;
  up_->begin_body(consumed, framing);
  response_started_ = true;
  upstream_head_.clear();
  response_phase_ =
      framing.kind == BodyFraming::Kind::None ? ResponsePhase::Done : ResponsePhase::Body;
  update_upstream_timeouts();
  return true;
}

void Exchange::on_upstream_gone() {
  // The upstream closed (or reset) before any byte of a response.
  // Its bytes may have reached the upstream: only an idempotent request
  // whose whole body is still held goes again, and only while no byte of
  // a response came (HAProxy's retry-on conn-failure empty-response).
  const bool safe =
      !up_->any_response_bytes() && !got_interim_ && body_held() && is_idempotent_method(method_);
  if (safe && reused_ && !retried_) {
    // A pooled connection the upstream had already given up on: send it
    // again on a new one first.
    (dest_.peer ? ctx_.counters->peer_retries : ctx_.counters->upstream_retries).add();
    retried_ = true;
    ++retries_;
    start_upstream(true);
    return;
  }
  if (safe && !dest_.peer && fail_over(FailoverReason::EmptyResponse)) return;
  const int err = up_->socket_error();
  fail_upstream(RequestEnd::UpstreamClosed, 502,
                err ? std::string("upstream error before responding: ") + std::strerror(err)
                    : std::string("upstream closed before responding"));
}

void Exchange::on_upstream_timeout() {
  (dest_.peer ? ctx_.counters->peer_timeouts : ctx_.counters->upstream_timeouts).add();
  fail_upstream(RequestEnd::UpstreamTimeout, 504,
                "no progress from upstream within " +
                    std::to_string(dest_.pool->config().response_timeout.count()) + "ms");
}

void Exchange::on_body_error(http1::Error error) {
  ctx_.counters->request_errors[static_cast<size_t>(error)].add();
  // The upstream may have the head and part of the body: it must never
  // see the connection again, nor anything that follows on it.
  up_.reset();
  if (response_started_) {
    abort_request(RequestEnd::BadBody, http1::to_string(error));
    return;
  }
  error_ = http1::to_string(error);
  send_error(http1::http_status(error), http1::to_string(error), true, RequestEnd::BadBody);
}

void Exchange::start_tunnel(size_t consumed) {
  size_t head_bytes = 0;
  BufferEventPtr client = client_.take_for_tunnel(up_->head(), head_bytes);
  if (!client) {
    fail_upstream(RequestEnd::UpstreamInvalid, 502, "unexpected 101 response");
    return;
  }
  bytes_out_ += head_bytes;
  up_->drain(consumed);
  status_ = 101;
  response_head_ = Clock::now();
  response_started_ = true;
  response_phase_ = ResponsePhase::Done;
  ctx_.counters->tunnels.add();
  phase_ = Phase::Tunnel;
  tunnel_ = std::make_unique<UpgradeTunnel>(
      std::move(client), up_->take(), cfg_.timeouts.tunnel,
      [this](const UpgradeTunnel::Outcome& o) { on_tunnel_end(o); });
  up_.reset();
  tunnel_->start();
}

void Exchange::on_tunnel_end(const UpgradeTunnel::Outcome& o) {
  bytes_in_ += o.client_to_upstream;
  bytes_out_ += o.upstream_to_client;
  if (!o.error.empty()) error_ = o.error;
  end_request(o.end);
  client_.finish(true);
}

void Exchange::complete_proxied() {
  if (up_) {
    if (up_->release(upstream_keep_alive_ && client_.body_done())) {
      (dest_.peer ? ctx_.counters->peer_extra_bytes : ctx_.counters->upstream_extra_bytes).add();
      log::warning("upstream " + dest_.name + " (" + dest_.address +
                   ") sent bytes after the end of its response: connection closed");
    }
    up_.reset();
  }
  end_request(RequestEnd::Complete);
  client_.finish(close_after_);
}

void Exchange::update_upstream_timeouts() {
  if (!up_) return;
  // The upstream owes bytes once the request is complete, while a response
  // streams, and while an expected 100 has not come.
  up_->set_waiting(response_phase_ == ResponsePhase::Body || client_.body_done() ||
                   (expect_continue_ && !got_interim_));
}

// ---------------------------------------------------------------------------
// Answers made by the proxy, and the end.

void Exchange::send_local(int status, std::string_view content_type, std::string_view body,
                          bool close, RequestEnd end) {
  // A relayed request this node cannot serve (its Tomcat refused): the
  // relaying node is told, so that it serves the request itself.
  std::string reason;
  http1::Field marker;
  std::span<const http1::Field> extra;
  if (owner_unavailable_) {
    reason = to_string(*owner_unavailable_);
    marker = {kFailoverField, reason};
    extra = {&marker, 1};
  }
  const ClientStream::LocalSent sent = client_.send_local(status, content_type, body, close, extra);
  bytes_out_ += sent.bytes;
  status_ = status;
  close_after_ = sent.close;
  end_request(end);
  client_.finish(sent.close);
}

void Exchange::send_error(int status, std::string_view detail, bool close, RequestEnd end) {
  if (error_.empty()) error_ = std::string(detail);
  std::string body = std::to_string(status) + " " + std::string(reason_phrase(status)) + "\n";
  send_local(status, "text/plain; charset=utf-8", body, close, end);
}

void Exchange::fail_upstream(RequestEnd end, int status, std::string detail) {
  up_.reset();
  if (response_started_) {
    abort_request(end, std::move(detail));
    return;
  }
  error_ = std::move(detail);
  // The connection can carry the next request only if this one was read
  // to its end.
  send_error(status, error_, !client_.body_done(), end);
}

void Exchange::abort_request(RequestEnd end, std::string detail) {
  if (done()) return;
  if (error_.empty()) error_ = std::move(detail);
  end_request(end);
  up_.reset();
  client_.abort(response_started_);
}

void Exchange::end_request(RequestEnd end) {
  phase_ = Phase::Done;
  NodeCounters& c = *ctx_.counters;
  c.requests.add();
  c.request_ends[static_cast<size_t>(end)].add();
  const int cls = status_ / 100;
  c.responses_by_class[(cls >= 1 && cls <= 5) ? static_cast<size_t>(cls) : 0].add();
  c.bytes_in.add(bytes_in_);
  c.bytes_out.add(bytes_out_);
  if (routed_) c.affinity[static_cast<size_t>(affinity_)].add();

  // Without an access log, failures still get their line (as a warning).
  const bool failed =
      status_ >= 500 || status_ == 408 ||
      (end != RequestEnd::Complete && end != RequestEnd::Local && end != RequestEnd::TunnelClosed);
  if (quiet_ && !failed) return;
  if (!cfg_.log.access_log && !failed) return;
  log_request(end, Clock::now());
}

void Exchange::log_request(RequestEnd end, Clock::time_point now) const {
  const ClientInfo& info = client_.client();
  // A relayed request is logged with the client the relaying node served.
  const ClientInfo& who = relayed_ ? *relayed_ : info;
  std::string line =
      "http client=" + (relayed_ ? who.client.ip().to_string() : who.client.to_string()) +
      " listener=" + loggable(info.listener, 64);
  line += " tls=" + (info.tls ? loggable(info.tls_version, 16) : std::string("-"));
  line += std::string(" resumed=") + (info.tls ? (info.tls_resumed ? "1" : "0") : "-");
  line += " sni=" + loggable(who.sni, 128);
  line += " method=" + loggable(method_, 32) + " path=" + (target_.empty() ? "-" : target_);
  line += " status=" + (status_ ? std::to_string(status_) : std::string("-"));
  line += " bytes_in=" + std::to_string(bytes_in_) + " bytes_out=" + std::to_string(bytes_out_);
  if (attempts_) {
    line += " upstream=" + dest_.name + " reused=" + (reused_ ? "1" : "0");
    line +=
        " connect_ms=" + (connected_ ? std::to_string(ms_between(*connect_started_, *connected_))
                                     : std::string("-"));
    line += " upstream_ms=" + (sent_ && response_head_
                                   ? std::to_string(ms_between(*sent_, *response_head_))
                                   : std::string("-"));
    if (retries_) line += " retried=" + std::to_string(retries_);
    if (failover_) line += std::string(" failover=") + to_string(*failover_);
  } else {
    line += " upstream=-";
  }
  if (routed_) line += std::string(" affinity=") + affinity::to_string(affinity_);
  if (!info.peer_node.empty()) line += " relayed_from=" + info.peer_node;
  if (cookie_issued_) line += " cookie=issued";
  line += " total_ms=" + std::to_string(ms_between(started_, now));
  line += std::string(" end=") + to_string(end);
  if (!error_.empty()) line += " error=\"" + loggable(error_, 200) + "\"";
  if (cfg_.log.access_log)
    log::info(line);
  else
    log::warning(line);
}

}  // namespace edgepin::nodeproxy
