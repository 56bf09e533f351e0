#include "tomcat_check.h"
#include "time_util.h"

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <vector>

#include "http1.h"
#include "log.h"
#include "peer_tls.h"
#include "worker_context.h"

namespace edgepin::nodeproxy {
namespace {

// Tomcat answers a check with a status below this when it is serving.
constexpr uint16_t kFirstServerErrorStatus = 500;

}  // namespace

// What one probe checks and where it writes its verdict.
struct ProbeTarget {
  std::string label;  // "Tomcat at 127.0.0.1:8080", "peer node2 at 127.0.0.12:9443"
  SocketAddress address;
  std::string path;
  std::chrono::milliseconds interval{2000};
  std::chrono::milliseconds timeout{1000};
  uint32_t rise = 2;
  uint32_t fall = 3;
  std::function<SslPtr()> new_ssl;  // empty: plain TCP
  bool (*healthy)(uint16_t status) = nullptr;
  std::atomic<bool>* verdict = nullptr;
  // A checker restarted by a reload: the verdict already in place stands
  // and only rise/fall checks in a row change it (no first-check rule).
  bool keep_verdict = false;
};

// One periodic check: connect (and TLS handshake), GET, read the status
// line; rise/fall decide the verdict.
class HealthProbe {
 public:
  HealthProbe(event_base* base, ProbeTarget target) : base_(base), target_(std::move(target)) {
    if (target_.keep_verdict) {
      // Counted as if the last rise (or fall) checks had agreed with it.
      first_ = false;
      const bool up = target_.verdict->load(std::memory_order_relaxed);
      successes_ = up ? target_.rise : 0;
      failures_ = up ? 0 : target_.fall;
    }
    tick_.reset(evtimer_new(base_, tick_cb, this));
    deadline_.reset(evtimer_new(base_, deadline_cb, this));
    request_ = "GET " + target_.path + " HTTP/1.1\r\nHost: " + target_.address.to_string() +
               "\r\nUser-Agent: edgepin-node-proxy-check\r\nConnection: close\r\n\r\n";
  }

  // Runs the first check as soon as the loop runs.
  void schedule_first() {
    const timeval now{0, 0};
    evtimer_add(tick_.get(), &now);
  }

 private:
  static void tick_cb(evutil_socket_t, short, void* arg) {
    static_cast<HealthProbe*>(arg)->begin();
  }
  static void deadline_cb(evutil_socket_t, short, void* arg) {
    static_cast<HealthProbe*>(arg)->done(CheckOutcome::Timeout, 0);
  }
  static void read_cb(bufferevent*, void* arg) { static_cast<HealthProbe*>(arg)->on_read(); }
  static void event_cb(bufferevent*, short what, void* arg) {
    auto* p = static_cast<HealthProbe*>(arg);
    if (what & BEV_EVENT_CONNECTED) {
      p->connected_ = true;
      bufferevent_write(p->conn_.get(), p->request_.data(), p->request_.size());
      bufferevent_enable(p->conn_.get(), EV_READ);
    } else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
      if (!p->connected_ && p->target_.new_ssl && p->tls_refused())
        return p->done(CheckOutcome::TlsFailed, 0);
      p->done(p->connected_ ? CheckOutcome::Closed : CheckOutcome::ConnectFailed, 0);
    }
  }

  // True when OpenSSL recorded a reason for the failure (as opposed to a
  // refused or reset TCP connect); drains libevent's error list.
  bool tls_refused() {
    bool any = false;
    while (unsigned long e = bufferevent_get_openssl_error(conn_.get()))
      any = any || ERR_GET_LIB(e) != 0;
    return any;
  }

  void begin() {
    started_ = std::chrono::steady_clock::now();
    connected_ = false;
    response_.clear();
    parser_ = std::make_unique<http1::ResponseParser>();
    const timeval timeout = to_timeval(target_.timeout);
    evtimer_add(deadline_.get(), &timeout);
    if (target_.new_ssl) {
      SslPtr ssl = target_.new_ssl();
      if (!ssl) return done(CheckOutcome::ConnectFailed, 0);
      // The bufferevent owns the SSL from here on (BEV_OPT_CLOSE_ON_FREE).
      // No BEV_OPT_DEFER_CALLBACKS: a deferred callback still queued when
      // the checker's loop stops holds a reference that is never dropped,
      // so the bufferevent, its SSL and the peer SSL_CTX would never be
      // freed (LeakSanitizer saw it at exit). libevent keeps a reference
      // while it runs our callbacks, so done() may free conn_ from them.
      conn_.reset(bufferevent_openssl_socket_new(
          base_, -1, ssl.release(), BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE));
      if (conn_) bufferevent_openssl_set_allow_dirty_shutdown(conn_.get(), 1);
    } else {
      conn_.reset(bufferevent_socket_new(base_, -1, BEV_OPT_CLOSE_ON_FREE));
    }
    if (!conn_) return done(CheckOutcome::ConnectFailed, 0);
    bufferevent_setcb(conn_.get(), read_cb, nullptr, event_cb, this);
    sockaddr_storage ss{};
    const socklen_t len = target_.address.to_sockaddr(ss);
    if (bufferevent_socket_connect(conn_.get(), reinterpret_cast<sockaddr*>(&ss),
                                   static_cast<int>(len)) < 0)
      done(CheckOutcome::ConnectFailed, 0);
  }

  void on_read() {
    evbuffer* in = bufferevent_get_input(conn_.get());
    const size_t room = kMaxCheckResponseHead - response_.size();
    const size_t n = std::min(room, evbuffer_get_length(in));
    const size_t old = response_.size();
    response_.resize(old + n);
    evbuffer_remove(in, response_.data() + old, n);
    const http1::HeadResult r = parser_->parse(response_);
    if (r.status == ParseStatus::Done) {
      const uint16_t status = parser_->head().status;
      // 1xx cannot answer a GET without Expect; treat it as a bad response.
      if (status < 200) return done(CheckOutcome::BadResponse, status);
      return done(target_.healthy(status) ? CheckOutcome::Ok : CheckOutcome::BadStatus, status);
    }
    if (r.status == ParseStatus::Error || response_.size() >= kMaxCheckResponseHead)
      done(CheckOutcome::BadResponse, 0);
  }

  void done(CheckOutcome outcome, uint16_t status) {
    evtimer_del(deadline_.get());
    conn_.reset();
    parser_.reset();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started_);
    std::string detail(to_string(outcome));
    if (status) {
      detail += ' ';  // not `" " + std::to_string(...)`: GCC 12 -O3 -Wrestrict false positive
      detail += std::to_string(status);
    }
    detail += ", " + std::to_string(ms.count()) + " ms";

    std::atomic<bool>& verdict = *target_.verdict;
    const bool was_up = verdict.load(std::memory_order_relaxed);
    if (first_) {
      first_ = false;
      verdict.store(outcome == CheckOutcome::Ok, std::memory_order_relaxed);
      successes_ = outcome == CheckOutcome::Ok ? target_.rise : 0;
      failures_ = outcome == CheckOutcome::Ok ? 0 : target_.fall;
      (outcome == CheckOutcome::Ok ? log::info : log::warning)(
          target_.label + " is " + (outcome == CheckOutcome::Ok ? "UP" : "DOWN") +
          " (first check: " + detail + ")");
    } else if (outcome == CheckOutcome::Ok) {
      failures_ = 0;
      // Down although this checker's successes say up: the data path marked
      // it down since (Exchange, passive health). `rise` counts from there.
      if (!was_up && successes_ >= target_.rise) successes_ = 0;
      if (++successes_ >= target_.rise && !was_up) {
        verdict.store(true, std::memory_order_relaxed);
        log::warning(target_.label + " is UP (" + std::to_string(successes_) +
                     " checks passed, last: " + detail + ")");
      }
    } else {
      successes_ = 0;
      if (++failures_ >= target_.fall && was_up) {
        verdict.store(false, std::memory_order_relaxed);
        log::warning(target_.label + " is DOWN (" + std::to_string(failures_) +
                     " checks failed, last: " + detail + ")");
      }
    }
    const timeval interval = to_timeval(target_.interval);
    evtimer_add(tick_.get(), &interval);
  }

  event_base* base_;
  const ProbeTarget target_;
  std::string request_;
  EventPtr tick_;
  EventPtr deadline_;
  BufferEventPtr conn_;
  std::unique_ptr<http1::ResponseParser> parser_;
  std::vector<uint8_t> response_;
  std::chrono::steady_clock::time_point started_;
  bool connected_ = false;
  bool first_ = true;
  uint32_t successes_ = 0;
  uint32_t failures_ = 0;
};

TomcatHealthChecker::TomcatHealthChecker(const config::NodeHealthConfig& settings,
                                         const SocketAddress& upstream, NodeState& node,
                                         bool keep_state)
    : loop_("np-health") {
  // Down until the first check says otherwise.
  if (!keep_state) node.tomcat_up.store(false, std::memory_order_relaxed);
  ProbeTarget t;
  t.label = "Tomcat at " + upstream.to_string();
  t.address = upstream;
  t.path = settings.check_path;
  t.interval = settings.check_interval;
  t.timeout = settings.check_timeout;
  t.rise = settings.rise;
  t.fall = settings.fall;
  // A 404 or a login redirect still proves Tomcat answers.
  t.healthy = [](uint16_t status) { return status < kFirstServerErrorStatus; };
  t.verdict = &node.tomcat_up;
  t.keep_verdict = keep_state;
  probe_ = std::make_unique<HealthProbe>(loop_.base(), std::move(t));
}

TomcatHealthChecker::~TomcatHealthChecker() {
  stop();
  probe_.reset();
}

void TomcatHealthChecker::start() {
  probe_->schedule_first();
  loop_.start();
}

void TomcatHealthChecker::stop() { loop_.stop(); }

}  // namespace edgepin::nodeproxy

namespace edgepin::nodeproxy {

PeerHealthChecker::PeerHealthChecker(const config::PeerConfig& peer,
                                     const config::NodeHealthConfig& health, const PeerTls& tls,
                                     NodeState& node, const std::vector<bool>& keep_state)
    : loop_("np-peer-health") {
  for (size_t i = 0; i < node.peers.size(); ++i) {
    const auto& p = node.peers[i];
    const bool keep = i < keep_state.size() && keep_state[i];
    if (!keep) p->up.store(false, std::memory_order_relaxed);  // down until checked
    ProbeTarget t;
    const SocketAddress address = p->node->endpoint(config::NodePort::Peer);
    t.label = "peer " + p->node->name + " at " + address.to_string();
    t.address = address;
    t.path = health.path;
    t.interval = peer.check_interval;
    t.timeout = peer.check_timeout;
    t.rise = peer.rise;
    t.fall = peer.fall;
    const std::string name = p->node->name;
    const PeerTls* link = &tls;
    t.new_ssl = [link, name] { return link->new_client_ssl(name); };
    // The peer says UP only while its Tomcat serves and it is not
    // draining; anything else sends its sessions to a live node.
    t.healthy = [](uint16_t status) { return status == 200; };
    t.verdict = &p->up;
    t.keep_verdict = keep;
    probes_.push_back(std::make_unique<HealthProbe>(loop_.base(), std::move(t)));
  }
}

PeerHealthChecker::~PeerHealthChecker() {
  stop();
  probes_.clear();
}

void PeerHealthChecker::start() {
  for (auto& p : probes_) p->schedule_first();
  loop_.start();
}

void PeerHealthChecker::stop() { loop_.stop(); }

}  // namespace edgepin::nodeproxy
