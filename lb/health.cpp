#include "health.h"

#include <openssl/err.h>

#include <chrono>
#include <random>

#include "http1.h"
#include "log.h"
#include "proxy_protocol.h"
#include "tls_hello.h"

namespace edgepin::lb {

const char* to_string(CheckType t) {
  switch (t) {
    case CheckType::Tcp:
      return "tcp";
    case CheckType::TlsHello:
      return "tls-hello";
    case CheckType::Http:
      return "http";
  }
  return "?";
}

const char* to_string(CheckOutcome o) {
  switch (o) {
#define X(name, str)       \
  case CheckOutcome::name: \
    return str;
    EDGEPIN_CHECK_OUTCOMES(X)
#undef X
  }
  return "?";
}

namespace {
// An http check reads at most this much before it must have a whole head.
constexpr size_t kMaxCheckResponse = 16 * 1024;
}  // namespace

class HealthChecker::Probe {
 public:
  Probe(HealthChecker& hc, CheckTarget target) : hc_(hc), target_(std::move(target)) {
    tick_.reset(evtimer_new(hc_.loop_.base(), tick_cb, this));
    deadline_.reset(evtimer_new(hc_.loop_.base(), deadline_cb, this));
    // Consecutive results start as if the server had just come up.
    successes_ = hc_.settings_.rise;
  }

  // Spread the first probes over one interval so checks of many servers
  // do not fire together.
  void schedule_first(std::mt19937& rng) {
    const timeval& iv = hc_.settings_.interval;
    int64_t us = iv.tv_sec * 1000000 + iv.tv_usec;
    int64_t first = us > 0 ? static_cast<int64_t>(rng() % static_cast<uint64_t>(us)) : 0;
    timeval tv{static_cast<time_t>(first / 1000000), static_cast<suseconds_t>(first % 1000000)};
    evtimer_add(tick_.get(), &tv);
  }

 private:
  static void tick_cb(evutil_socket_t, short, void* arg) { static_cast<Probe*>(arg)->begin(); }
  static void deadline_cb(evutil_socket_t, short, void* arg) {
    static_cast<Probe*>(arg)->done(CheckOutcome::Timeout, 0);
  }
  static void event_cb(bufferevent*, short what, void* arg) {
    auto* p = static_cast<Probe*>(arg);
    if (what & BEV_EVENT_CONNECTED) {
      p->on_connected();
    } else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
      p->done(p->connected_ ? CheckOutcome::Closed : CheckOutcome::ConnectFailed, 0);
    }
  }
  static void read_cb(bufferevent*, void* arg) { static_cast<Probe*>(arg)->on_read(); }

  void begin() {
    started_ = std::chrono::steady_clock::now();
    connected_ = false;
    conn_.reset(bufferevent_socket_new(hc_.loop_.base(), -1, BEV_OPT_CLOSE_ON_FREE));
    bufferevent_setcb(conn_.get(), read_cb, nullptr, event_cb, this);
    evtimer_add(deadline_.get(), &hc_.settings_.timeout);
    sockaddr_storage ss{};
    socklen_t len = target_.address.to_sockaddr(ss);
    if (bufferevent_socket_connect(conn_.get(), reinterpret_cast<sockaddr*>(&ss),
                                   static_cast<int>(len)) < 0)
      done(CheckOutcome::ConnectFailed, 0);
  }

  void on_connected() {
    connected_ = true;
    if (hc_.settings_.proxy_protocol == ProxyProtocolMode::V2) {
      auto h = proxy::encode_v2_local();
      bufferevent_write(conn_.get(), h.bytes.data(), h.bytes.size());
    } else if (hc_.settings_.proxy_protocol == ProxyProtocolMode::V1) {
      auto h = proxy::encode_v1_unknown();
      bufferevent_write(conn_.get(), h.data(), h.size());
    }
    switch (hc_.settings_.type) {
      case CheckType::Tcp:
        done(CheckOutcome::Ok, 0);
        return;
      case CheckType::Http: {
        response_.clear();
        parser_ = std::make_unique<http1::ResponseParser>();
        std::string req = "GET " + hc_.settings_.path +
                          " HTTP/1.1\r\nHost: " + target_.address.to_string() +
                          "\r\nUser-Agent: edgepin-lb-check\r\nConnection: close\r\n\r\n";
        bufferevent_write(conn_.get(), req.data(), req.size());
        break;
      }
      case CheckType::TlsHello: {
        flight_ = std::make_unique<tls::ServerFlightParser>();
        // OpenSSL writes its own, current ClientHello into a memory BIO; we
        // send those bytes and judge the answer ourselves.
        ssl_.reset(SSL_new(hc_.tls_ctx_.get()));
        BIO* rbio = BIO_new(BIO_s_mem());
        BIO* wbio = BIO_new(BIO_s_mem());
        SSL_set_bio(ssl_.get(), rbio, wbio);
        SSL_set_connect_state(ssl_.get());
        SSL_do_handshake(ssl_.get());
        ERR_clear_error();
        char* data = nullptr;
        long n = BIO_get_mem_data(wbio, &data);
        if (n <= 0) {
          done(CheckOutcome::BadResponse, 0);
          return;
        }
        bufferevent_write(conn_.get(), data, static_cast<size_t>(n));
        break;
      }
    }
    bufferevent_enable(conn_.get(), EV_READ);
  }

  void on_read() {
    evbuffer* in = bufferevent_get_input(conn_.get());
    if (hc_.settings_.type == CheckType::Http) {
      size_t room = kMaxCheckResponse - response_.size();
      size_t n = std::min(room, evbuffer_get_length(in));
      size_t old = response_.size();
      response_.resize(old + n);
      evbuffer_remove(in, response_.data() + old, n);
      auto r = parser_->parse(response_);
      if (r.status == ParseStatus::Done) {
        uint16_t status = parser_->head().status;
        done(status >= 200 && status < 400 ? CheckOutcome::Ok : CheckOutcome::BadStatus, status);
      } else if (r.status == ParseStatus::Error || response_.size() >= kMaxCheckResponse) {
        done(CheckOutcome::BadResponse, 0);
      }
      return;
    }
    if (hc_.settings_.type == CheckType::TlsHello) {
      uint8_t buf[4096];
      while (evbuffer_get_length(in)) {
        int n = evbuffer_remove(in, buf, sizeof buf);
        if (n <= 0) break;
        ParseStatus st = flight_->feed({buf, static_cast<size_t>(n)});
        if (flight_->has_server_hello()) {
          done(CheckOutcome::Ok, flight_->server_hello().selected_version);
          return;
        }
        if (flight_->alert()) {
          done(CheckOutcome::TlsAlert, flight_->alert()->description);
          return;
        }
        if (st == ParseStatus::Error) {
          done(CheckOutcome::BadResponse, 0);
          return;
        }
      }
      return;
    }
    evbuffer_drain(in, evbuffer_get_length(in));
  }

  void done(CheckOutcome outcome, uint16_t detail) {
    evtimer_del(deadline_.get());
    conn_.reset();
    ssl_.reset();
    flight_.reset();
    parser_.reset();
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now() - started_)
                  .count();
    ServerState& s = *target_.server;
    s.check_outcome.store(static_cast<uint8_t>(outcome), std::memory_order_relaxed);
    s.check_detail.store(detail, std::memory_order_relaxed);
    s.check_latency_us.store(static_cast<uint32_t>(us), std::memory_order_relaxed);
    const auto& st = hc_.settings_;
    bool was_up = s.healthy.load(std::memory_order_relaxed);
    if (outcome == CheckOutcome::Ok) {
      failures_ = 0;
      if (++successes_ >= st.rise && !was_up) {
        s.healthy.store(true, std::memory_order_relaxed);
        log::warning("server " + s.name + " is UP (" + to_string(st.type) + " check passed " +
                     std::to_string(successes_) + " times, " + std::to_string(us / 1000) + " ms)");
      }
    } else {
      successes_ = 0;
      if (++failures_ >= st.fall && was_up) {
        s.healthy.store(false, std::memory_order_relaxed);
        std::string why = to_string(outcome);
        if (detail) {
          why += ' ';  // not `" " + std::to_string(...)`: GCC 12 -O3 -Wrestrict false positive
          why += std::to_string(detail);
        }
        log::warning("server " + s.name + " is DOWN (" + to_string(st.type) + " check: " + why +
                     ", " + std::to_string(failures_) + " failures in a row)");
      }
    }
    evtimer_add(tick_.get(), &st.interval);
  }

  HealthChecker& hc_;
  CheckTarget target_;
  EventPtr tick_, deadline_;
  BufferEventPtr conn_;
  SslPtr ssl_;
  std::unique_ptr<tls::ServerFlightParser> flight_;
  std::unique_ptr<http1::ResponseParser> parser_;
  std::vector<uint8_t> response_;
  std::chrono::steady_clock::time_point started_;
  bool connected_ = false;
  int successes_ = 0;
  int failures_ = 0;
};

HealthChecker::HealthChecker(HealthCheckSettings settings, std::vector<CheckTarget> targets)
    : settings_(std::move(settings)), loop_("lb-health") {
  if (settings_.type == CheckType::TlsHello) {
    tls_ctx_.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_set_min_proto_version(tls_ctx_.get(), TLS1_2_VERSION);
    SSL_CTX_set_verify(tls_ctx_.get(), SSL_VERIFY_NONE, nullptr);  // we only want a ServerHello
  }
  for (auto& t : targets) probes_.push_back(std::make_unique<Probe>(*this, std::move(t)));
}

HealthChecker::~HealthChecker() {
  stop();
  probes_.clear();
}

void HealthChecker::start() {
  std::mt19937 rng(std::random_device{}());
  for (auto& p : probes_) p->schedule_first(rng);
  loop_.start();
}

void HealthChecker::stop() { loop_.stop(); }

}  // namespace edgepin::lb
