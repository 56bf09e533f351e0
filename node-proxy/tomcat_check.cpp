#include "node-proxy/tomcat_check.h"

#include <chrono>
#include <vector>

#include "common/http1.h"
#include "common/log.h"
#include "node-proxy/worker_context.h"

namespace edgepin::nodeproxy {
namespace {

// Tomcat answers a check with a status below this when it is serving.
constexpr uint16_t kFirstServerErrorStatus = 500;

timeval to_timeval(std::chrono::milliseconds ms) {
  return timeval{static_cast<time_t>(ms.count() / 1000), static_cast<suseconds_t>((ms.count() % 1000) * 1000)};
}

}  // namespace

class TomcatHealthChecker::Probe {
 public:
  Probe(event_base* base, const config::NodeHealthConfig& settings, const SocketAddress& upstream, NodeState& node)
      : base_(base), settings_(settings), upstream_(upstream), node_(node) {
    tick_.reset(evtimer_new(base_, tick_cb, this));
    deadline_.reset(evtimer_new(base_, deadline_cb, this));
    request_ = "GET " + settings_.check_path + " HTTP/1.1\r\nHost: " + upstream_.toString() +
               "\r\nUser-Agent: edgepin-node-proxy-check\r\nConnection: close\r\n\r\n";
  }

  // Runs the first check as soon as the loop runs.
  void schedule_first() {
    const timeval now{0, 0};
    evtimer_add(tick_.get(), &now);
  }

 private:
  static void tick_cb(evutil_socket_t, short, void* arg) { static_cast<Probe*>(arg)->begin(); }
  static void deadline_cb(evutil_socket_t, short, void* arg) {
    static_cast<Probe*>(arg)->done(CheckOutcome::Timeout, 0);
  }
  static void read_cb(bufferevent*, void* arg) { static_cast<Probe*>(arg)->on_read(); }
  static void event_cb(bufferevent*, short what, void* arg) {
    auto* p = static_cast<Probe*>(arg);
    if (what & BEV_EVENT_CONNECTED) {
      p->connected_ = true;
      bufferevent_write(p->conn_.get(), p->request_.data(), p->request_.size());
      bufferevent_enable(p->conn_.get(), EV_READ);
    } else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
      p->done(p->connected_ ? CheckOutcome::Closed : CheckOutcome::ConnectFailed, 0);
    }
  }

  void begin() {
    started_ = std::chrono::steady_clock::now();
    connected_ = false;
    response_.clear();
    parser_ = std::make_unique<http1::ResponseParser>();
    const timeval timeout = to_timeval(settings_.check_timeout);
    evtimer_add(deadline_.get(), &timeout);
    conn_.reset(bufferevent_socket_new(base_, -1, BEV_OPT_CLOSE_ON_FREE));
    if (!conn_) return done(CheckOutcome::ConnectFailed, 0);
    bufferevent_setcb(conn_.get(), read_cb, nullptr, event_cb, this);
    sockaddr_storage ss{};
    const socklen_t len = upstream_.toSockaddr(ss);
    if (bufferevent_socket_connect(conn_.get(), reinterpret_cast<sockaddr*>(&ss), static_cast<int>(len)) < 0)
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
      return done(status < kFirstServerErrorStatus ? CheckOutcome::Ok : CheckOutcome::BadStatus, status);
    }
    if (r.status == ParseStatus::Error || response_.size() >= kMaxCheckResponseHead)
      done(CheckOutcome::BadResponse, 0);
  }

  void done(CheckOutcome outcome, uint16_t status) {
    evtimer_del(deadline_.get());
    conn_.reset();
    parser_.reset();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_);
    std::string detail(to_string(outcome));
    if (status) detail += " " + std::to_string(status);
    detail += ", " + std::to_string(ms.count()) + " ms";

    const bool was_up = node_.tomcat_up.load(std::memory_order_relaxed);
    if (first_) {
      first_ = false;
      node_.tomcat_up.store(outcome == CheckOutcome::Ok, std::memory_order_relaxed);
      successes_ = outcome == CheckOutcome::Ok ? settings_.rise : 0;
      failures_ = outcome == CheckOutcome::Ok ? 0 : settings_.fall;
      (outcome == CheckOutcome::Ok ? log::info : log::warning)(
          "Tomcat at " + upstream_.toString() + " is " + (outcome == CheckOutcome::Ok ? "UP" : "DOWN") +
          " (first check: " + detail + ")");
    } else if (outcome == CheckOutcome::Ok) {
      failures_ = 0;
      if (++successes_ >= settings_.rise && !was_up) {
        node_.tomcat_up.store(true, std::memory_order_relaxed);
        log::warning("Tomcat at " + upstream_.toString() + " is UP (" + std::to_string(successes_) +
                     " checks passed, last: " + detail + ")");
      }
    } else {
      successes_ = 0;
      if (++failures_ >= settings_.fall && was_up) {
        node_.tomcat_up.store(false, std::memory_order_relaxed);
        log::warning("Tomcat at " + upstream_.toString() + " is DOWN (" + std::to_string(failures_) +
                     " checks failed, last: " + detail + ")");
      }
    }
    const timeval interval = to_timeval(settings_.check_interval);
    evtimer_add(tick_.get(), &interval);
  }

  event_base* base_;
  const config::NodeHealthConfig settings_;
  const SocketAddress upstream_;
  NodeState& node_;
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

TomcatHealthChecker::TomcatHealthChecker(const config::NodeHealthConfig& settings, const SocketAddress& upstream,
                                         NodeState& node)
    : loop_("np-health") {
  // Down until the first check says otherwise.
  node.tomcat_up.store(false, std::memory_order_relaxed);
  probe_ = std::make_unique<Probe>(loop_.base(), settings, upstream, node);
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
