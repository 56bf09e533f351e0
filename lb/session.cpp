#include "session.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <vector>

#include "access_log.h"
#include "log.h"
#include "proxy_protocol.h"
#include "time_util.h"
#include "worker.h"

namespace edgepin::lb {

const char* to_string(End e) {
  switch (e) {
#define X(name, str) \
  case End::name:    \
    return str;
    EDGEPIN_LB_SESSION_ENDS(X)
#undef X
  }
  return "?";
}

const char* to_string(Session::State s) {
  switch (s) {
    case Session::State::Inspecting:
      return "inspecting";
    case Session::State::Queued:
      return "queued";
    case Session::State::Connecting:
      return "connecting";
    case Session::State::Relaying:
      return "relaying";
    case Session::State::Closed:
      return "closed";
  }
  return "?";
}

namespace {

const char* version_name(uint16_t v) {
  switch (v) {
    case tls::version::kSsl30:
      return "ssl3";
    case tls::version::kTls10:
      return "1.0";
    case tls::version::kTls11:
      return "1.1";
    case tls::version::kTls12:
      return "1.2";
    case tls::version::kTls13:
      return "1.3";
    default:
      return "-";
  }
}

// Longest SNI written to the access log (a DNS name has at most 253).
constexpr size_t kLogSniMax = 256;

// A failed connect's cause as one log token: "timeout" (our connect
// deadline or the kernel's), "refused", else the errno name ("ehostunreach").
std::string connect_error_token(int error) {
  if (error == ETIMEDOUT) return "timeout";
  if (error == ECONNREFUSED || error == 0)
    return "refused";  // an EOF while connecting is a refusal
  const char* name = strerrorname_np(error);
  if (!name) return "errno" + std::to_string(error);
  std::string out(name);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

Session::Session(Worker& worker, const Frontend& frontend, evutil_socket_t fd,
                 const SocketAddress& client, const SocketAddress& local)
    : worker_(worker),
      frontend_(frontend),
      client_addr_(client),
      local_addr_(local),
      started_(std::chrono::steady_clock::now()) {
  client_.reset(bufferevent_socket_new(worker.base(), fd, BEV_OPT_CLOSE_ON_FREE));
  timer_.reset(evtimer_new(worker.base(), timer_cb, this));
}

Session::~Session() {
  if (state_ == State::Queued) worker_.server_queue().cancel(*this);
  // Hands the slot to the oldest session of this worker waiting for it.
  if (holds_slot_) worker_.server_queue().release(*server_state_);
}

SessionInfo Session::info() const {
  SessionInfo i;
  i.frontend = &frontend_;
  i.client = client_addr_;
  i.server = server_state_;
  i.state = static_cast<uint8_t>(state_);
  i.route = route_.reason;
  i.age = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                started_);
  if (relay_) {
    i.bytes_in = relay_->bytes_a_to_b();
    i.bytes_out = relay_->bytes_b_to_a();
  }
  return i;
}

void Session::arm_timer(const timeval& tv) { evtimer_add(timer_.get(), &tv); }

void Session::start() {
  if (!frontend_.inspect_tls) {
    route_and_connect(nullptr);
    return;
  }
  state_ = State::Inspecting;
  bufferevent_setcb(client_.get(), client_read_cb, nullptr, client_event_cb, this);
  // libevent stops reading once the input holds this much: a client cannot
  // make us buffer more than the inspect limit before we decide.
  bufferevent_setwatermark(client_.get(), EV_READ, 0, frontend_.inspect_buffer);
  bufferevent_enable(client_.get(), EV_READ);
  arm_timer(frontend_.inspect_timeout);
}

void Session::client_read_cb(bufferevent*, void* arg) {
  static_cast<Session*>(arg)->on_client_bytes();
}

void Session::on_client_bytes() {
  evbuffer* in = bufferevent_get_input(client_.get());
  size_t len = evbuffer_get_length(in);
  if (len > inspected_) {
    evbuffer_ptr pos;
    evbuffer_ptr_set(in, &pos, inspected_, EVBUFFER_PTR_SET);
    int n = evbuffer_peek(in, static_cast<ev_ssize_t>(len - inspected_), &pos, nullptr, 0);
    std::vector<evbuffer_iovec> vec(static_cast<size_t>(n));
    evbuffer_peek(in, static_cast<ev_ssize_t>(len - inspected_), &pos, vec.data(), n);
    for (const auto& v : vec) {
      if (hello_parser_.feed({static_cast<const uint8_t*>(v.iov_base), v.iov_len}) !=
          ParseStatus::NeedMore)
        break;
    }
    inspected_ = len;
  }
  switch (hello_parser_.status()) {
    case ParseStatus::Done:
      evtimer_del(timer_.get());
      hello_ok_ = true;
      tls_version_ = hello_parser_.hello().max_version();
      route_and_connect(&hello_parser_.hello());
      return;
    case ParseStatus::Error: {
      auto e = hello_parser_.error();
      worker_.counters().inspect_errors[static_cast<size_t>(e)].add();
      on_inspect_failed(End::InspectError, std::string(tls::to_string(e)) + "@" +
                                               std::to_string(hello_parser_.error_offset()));
      return;
    }
    case ParseStatus::NeedMore:
      if (len >= frontend_.inspect_buffer) {
        // A configured buffer below the parser's own cap ran full.
        worker_.counters().inspect_errors[static_cast<size_t>(tls::HelloError::TooLarge)].add();
        on_inspect_failed(End::InspectError, "too_large@" + std::to_string(len));
      }
      return;
  }
}

void Session::on_inspect_failed(End why, const std::string& detail) {
  evtimer_del(timer_.get());
  inspect_error_ = detail;
  if (frontend_.on_inspect_failure == InspectFailurePolicy::Reject) {
    finish(why);
    return;
  }
  // Policy "balance": the bytes are passed on untouched to a balanced server.
  route_and_connect(nullptr);
}

void Session::client_event_cb(bufferevent*, short what, void* arg) {
  auto* self = static_cast<Session*>(arg);
  if (what & BEV_EVENT_EOF) {
    self->finish(End::ClientAbort);
  } else if (what & BEV_EVENT_ERROR) {
    self->finish(End::ClientError, EVUTIL_SOCKET_ERROR());
  }
}

void Session::timer_cb(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Session*>(arg);
  if (self->state_ == State::Inspecting) {
    self->on_inspect_failed(End::InspectTimeout, "timeout@" + std::to_string(self->inspected_));
  } else if (self->state_ == State::Connecting) {
    self->on_connect_failed(ETIMEDOUT);
  } else if (self->state_ == State::Queued) {
    self->finish(End::QueueTimeout);
  }
}

void Session::route_and_connect(const tls::ClientHello* hello) {
  // Until the server is there, leave further client bytes in the kernel.
  bufferevent_disable(client_.get(), EV_READ);
  bufferevent_setcb(client_.get(), nullptr, nullptr, client_event_cb, this);
  sockaddr_storage ss{};
  client_addr_.to_sockaddr(ss);
  route_ = frontend_.router->route(hello, reinterpret_cast<sockaddr*>(&ss),
                                   std::chrono::steady_clock::now());
  if (!route_.server) {
    finish(End::NoServer);
    return;
  }
  connect_to(route_.server);
}

void Session::connect_to(ServerState* server) {
  if (holds_slot_ && server != server_state_) {
    holds_slot_ = false;
    worker_.server_queue().release(*server_state_);
  }
  server_state_ = server;
  if (!holds_slot_) {
    // HAProxy's server queue: wait for a slot, bounded in size and time.
    switch (worker_.server_queue().acquire(*server, frontend_.server_maxconn, frontend_.queue_size,
                                           *this)) {
      case ServerQueue::Admit::Slot:
        holds_slot_ = true;
        break;
      case ServerQueue::Admit::Queued:
        state_ = State::Queued;
        arm_timer(frontend_.queue_timeout);
        return;
      case ServerQueue::Admit::Full:
        finish(End::QueueFull);
        return;
    }
  }
  open_connection();
}

void Session::on_slot() {
  evtimer_del(timer_.get());
  holds_slot_ = true;
  open_connection();
}

void Session::open_connection() {
  state_ = State::Connecting;
  ++attempts_;
  server_.reset(bufferevent_socket_new(worker_.base(), -1, BEV_OPT_CLOSE_ON_FREE));
  bufferevent_setcb(server_.get(), nullptr, nullptr, server_event_cb, this);
  sockaddr_storage ss{};
  socklen_t len = frontend_.server_addresses[server_state_->id].to_sockaddr(ss);
  arm_timer(frontend_.connect_timeout);
  if (bufferevent_socket_connect(server_.get(), reinterpret_cast<sockaddr*>(&ss),
                                 static_cast<int>(len)) < 0) {
    on_connect_failed(EVUTIL_SOCKET_ERROR());
  }
}

void Session::server_event_cb(bufferevent*, short what, void* arg) {
  auto* self = static_cast<Session*>(arg);
  if (what & BEV_EVENT_CONNECTED) {
    self->on_connected();
  } else if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
    self->on_connect_failed(EVUTIL_SOCKET_ERROR());
  }
}

void Session::on_connect_failed(int error) {
  evtimer_del(timer_.get());
  server_.reset();
  error_ = error;
  ServerState* failed = server_state_;
  log::debug("frontend " + frontend_.name + ": connect to " + failed->name +
             " failed: " + std::strerror(error ? error : ECONNREFUSED));
  // HAProxy's `retries` and `option redispatch`: retry the same server, but
  // make the last retry (or any retry once the server is known to be down)
  // go to another server.
  if (attempts_ > frontend_.retries) {
    finish(End::ConnectFailed, error);
    return;
  }
  worker_.counters().connect_retries.add();
  ServerState* next = failed;
  bool last = attempts_ == frontend_.retries;
  if (frontend_.redispatch && (last || !failed->usable_for_bound())) {
    sockaddr_storage ss{};
    client_addr_.to_sockaddr(ss);
    if (ServerState* other =
            frontend_.router->redispatch(failed, reinterpret_cast<sockaddr*>(&ss))) {
      next = other;
      route_.reason = RouteReason::Redispatch;
      worker_.counters().redispatches.add();
    }
  }
  connect_to(next);
}

void Session::on_connected() {
  evtimer_del(timer_.get());
  state_ = State::Relaying;
  // Counted once established (HAProxy's stot), so total >= current.
  server_state_->total_connections.fetch_add(1, std::memory_order_relaxed);
  int one = 1;
  setsockopt(bufferevent_getfd(server_.get()), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (hello_ok_)
    frontend_.router->learn_client(hello_parser_.hello(), *server_state_,
                                   std::chrono::steady_clock::now());

  if (frontend_.proxy_protocol != ProxyProtocolMode::None) {
    sockaddr_storage src_ss{}, dst_ss{};
    socklen_t src_len = client_addr_.to_sockaddr(src_ss);
    socklen_t dst_len = local_addr_.to_sockaddr(dst_ss);
    auto src = proxy::Address::from_sockaddr(reinterpret_cast<sockaddr*>(&src_ss), src_len);
    auto dst = proxy::Address::from_sockaddr(reinterpret_cast<sockaddr*>(&dst_ss), dst_len);
    proxy::EncodeResult header;
    if (frontend_.proxy_protocol == ProxyProtocolMode::V2) {
      proxy::Tlvs tlvs;
      if (hello_ok_ && hello_parser_.hello().server_name)
        tlvs.authority = *hello_parser_.hello().server_name;
      header = proxy::encode_v2_proxy(*src, *dst, tlvs);
    } else {
      header = proxy::encode_v1(*src, *dst);
    }
    if (!header.ok()) {
      // Only possible for mixed families (an IPv4 client on an IPv6 socket
      // is reported v4-mapped, so both sides share a family): say so.
      log::error("frontend " + frontend_.name +
                 ": cannot encode PROXY header: " + std::string(proxy::to_string(header.error)));
      finish(End::ServerError);
      return;
    }
    bufferevent_write(server_.get(), header.bytes.data(), header.bytes.size());
  }

  bufferevent_setwatermark(client_.get(), EV_READ, 0, 0);
  Relay::Options opts;
  opts.high_watermark = frontend_.relay_buffer;
  opts.a_timeout = frontend_.client_timeout;
  opts.b_timeout = frontend_.server_timeout;
  opts.idle_timeout = frontend_.tunnel_timeout;
  // Both sides are plain sockets: splice, no user-space copies.
  opts.direct = true;
  opts.pipes = &worker_.pipes();
  relay_ = std::make_unique<Relay>(
      std::move(client_), std::move(server_), opts, [this](const Relay::Result& r) {
        switch (r.end) {
          case RelayEnd::BothClosed:
            finish(End::Closed);
            return;
          case RelayEnd::AReset:
            finish(End::ClientError, r.error);
            return;
          case RelayEnd::BReset:
            finish(End::ServerError, r.error);
            return;
          case RelayEnd::IdleTimeout:
            finish(r.timeout == RelayTimeout::A   ? End::ClientTimeout
                   : r.timeout == RelayTimeout::B ? End::ServerTimeout
                                                  : End::TunnelTimeout);
            return;
          case RelayEnd::Stopped:
            finish(End::Shutdown);
            return;
        }
      });
  if (hello_ok_) {
    flight_ = std::make_unique<tls::ServerFlightParser>();
    relay_->observe_b_to_a([this](std::span<const uint8_t> bytes) { observe_server(bytes); });
  }
  relay_->start();
}

void Session::observe_server(std::span<const uint8_t> bytes) {
  ParseStatus st = flight_->feed(bytes);
  auto now = std::chrono::steady_clock::now();
  if (!learned_server_hello_ && flight_->has_server_hello()) {
    learned_server_hello_ = true;
    tls_version_ = flight_->server_hello().selected_version;
    frontend_.router->learn_server_hello(flight_->server_hello(), *server_state_, now);
  }
  if (st == ParseStatus::NeedMore) return;
  if (st == ParseStatus::Done && flight_->new_session_ticket())
    frontend_.router->learn_ticket(flight_->new_session_ticket()->ticket, *server_state_, now);
  // Done or not TLS we understand: the rest is encrypted or opaque; stop
  // looking (clearing the observer from inside it is allowed).
  relay_->observe_b_to_a(nullptr);
}

void Session::abort(End why) {
  if (relay_) {
    relay_->stop();  // calls finish(Shutdown) through the done callback
    return;
  }
  finish(why);
}

void Session::finish(End why, int error) {
  if (state_ == State::Closed) return;
  if (state_ == State::Queued) worker_.server_queue().cancel(*this);
  state_ = State::Closed;
  FrontendCounters& c = worker_.counters().of(frontend_);
  c.ends[static_cast<size_t>(why)].add();
  c.routes[static_cast<size_t>(route_.reason)].add();
  uint64_t in = relay_ ? relay_->bytes_a_to_b() : 0;
  uint64_t out = relay_ ? relay_->bytes_b_to_a() : 0;
  c.bytes_in.add(in);
  c.bytes_out.add(out);
  if (relay_) {
    server_state_->bytes_in.fetch_add(in, std::memory_order_relaxed);
    server_state_->bytes_out.fetch_add(out, std::memory_order_relaxed);
  }
  // Without the access log (HAProxy's dontlog-normal), only sessions that
  // ended abnormally or needed a retry get their line, as a warning.
  const bool abnormal = why != End::Closed || attempts_ > 1;
  if (!frontend_.access_log && !abnormal) {
    worker_.release(this);  // destroys this session: nothing may follow
    return;
  }
  // The access-log line (common/base/access_log.h: one escaping rule for
  // both binaries, so a hostile SNI cannot forge a field or a line).
  access_log::Line line("conn");
  line.add("client", client_addr_.to_string())
      .add("frontend", frontend_.name)
      .add("server", server_state_ ? std::string_view(server_state_->name) : std::string_view())
      .add("route", to_string(route_.reason));
  if (route_.tag != nodetag::kInvalidTag)
    line.add("tag", route_.tag).add("tag_from", to_string(route_.tag_source));
  if (route_.bound_unusable) line.add("bound_down", 1);
  line.add("tls", version_name(tls_version_));
  line.add("sni",
           hello_ok_ && hello_parser_.hello().server_name
               ? std::string_view(*hello_parser_.hello().server_name)
               : std::string_view(),
           kLogSniMax);
  line.add("bytes_in", in)
      .add("bytes_out", out)
      .add("duration_ms", ms_between(started_, std::chrono::steady_clock::now()))
      .add("attempts", attempts_)
      .add("end", to_string(why));
  // Why the last failed connect attempt failed, even when a retry or a
  // redispatch then succeeded.
  if (attempts_ > 1 || why == End::ConnectFailed)
    line.add("connect_error", connect_error_token(error_));
  if (!inspect_error_.empty()) line.add("inspect", inspect_error_);
  if (error) line.add_quoted("error", std::strerror(error));
  if (frontend_.access_log) {
    log::info(line.text());
  } else {
    log::warning(line.text());
  }
  worker_.release(this);  // destroys this session: nothing may follow
}

}  // namespace edgepin::lb
