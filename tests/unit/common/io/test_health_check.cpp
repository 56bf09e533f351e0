#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "health_check.h"
#include "health_probe.h"

using namespace std::chrono_literals;
using edgepin::HealthState;
using edgepin::SocketAddress;
using namespace edgepin::health;

namespace {

bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds limit = 5000ms) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return cond();
}

// A probe whose outcome the test sets (the engine's state machine under
// test; the real probes are tested against real sockets below). Finishes
// on the next loop turn, as a real connect would.
class ScriptedProbe final : public Probe {
 public:
  explicit ScriptedProbe(std::atomic<int>& outcome) : outcome_(outcome) {}
  ~ScriptedProbe() override = default;
  const char* kind() const override { return "scripted"; }
  void begin() override {
    if (outcome_.load() < 0) return;  // hangs: the engine's timeout must end it
    timer_.reset(evtimer_new(base_, fire_cb, this));
    const timeval now{0, 0};
    evtimer_add(timer_.get(), &now);
  }
  void cancel() override {
    ++cancels;
    timer_.reset();
  }
  std::atomic<int> cancels{0};

 private:
  static void fire_cb(evutil_socket_t, short, void* arg) {
    auto* p = static_cast<ScriptedProbe*>(arg);
    p->timer_.reset();
    p->done_(Result{static_cast<Outcome>(p->outcome_.load()), 0});
  }
  std::atomic<int>& outcome_;
  edgepin::EventPtr timer_;
};

constexpr int kOk = static_cast<int>(Outcome::Ok);
constexpr int kRefused = static_cast<int>(Outcome::ConnectFailed);

TargetSettings fast(HealthState& state, Start start, uint32_t rise = 2, uint32_t fall = 3) {
  TargetSettings s;
  s.label = "server t1";
  s.interval = 10ms;
  s.timeout = 200ms;
  s.rise = rise;
  s.fall = fall;
  s.start = start;
  s.state = &state;
  return s;
}

// A loopback listener on a free port.
struct Listener {
  int fd = -1;
  uint16_t port = 0;
  Listener() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~Listener() { close(); }
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  SocketAddress address() const { return SocketAddress(edgepin::IpAddress::loopback_v4(), port); }
};

// Answers every connection with `reply` (read the request head first) on a
// thread of its own, until destroyed.
struct HttpResponder {
  Listener listener;
  std::string reply;
  std::atomic<bool> stop{false};
  std::thread thread;
  explicit HttpResponder(std::string r) : reply(std::move(r)) {
    timeval tv{0, 100 * 1000};
    ::setsockopt(listener.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    thread = std::thread([this] {
      while (!stop.load()) {
        const int c = ::accept(listener.fd, nullptr, nullptr);
        if (c < 0) continue;
        timeval ctv{1, 0};
        ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &ctv, sizeof ctv);
        std::string head;
        char buf[1024];
        while (head.find("\r\n\r\n") == std::string::npos) {
          const ssize_t n = ::recv(c, buf, sizeof buf, 0);
          if (n <= 0) break;
          head.append(buf, static_cast<size_t>(n));
        }
        ::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
        ::close(c);
      }
    });
  }
  ~HttpResponder() {
    stop = true;
    thread.join();
  }
};

// Runs one probe once on a checker and returns the first result.
Result probe_once(std::unique_ptr<Probe> probe) {
  HealthState state(true);
  std::mutex mu;
  std::optional<Result> first;
  edgepin::health::HealthChecker checker("test-health");
  TargetSettings s = fast(state, Start::Up);
  s.timeout = 2000ms;
  s.on_result = [&](Result r, std::chrono::microseconds) {
    std::lock_guard lock(mu);
    if (!first) first = r;
  };
  checker.add(std::move(s), std::move(probe));
  checker.start();
  REQUIRE(eventually([&] {
    std::lock_guard lock(mu);
    return first.has_value();
  }));
  checker.stop();
  return *first;
}

}  // namespace

TEST_CASE("health engine: fall failures take an up target down, rise successes bring it back",
          "[health]") {
  HealthState state(true);
  std::atomic<int> outcome{kOk};
  HealthChecker checker("test-health");
  const size_t i = checker.add(fast(state, Start::Up), std::make_unique<ScriptedProbe>(outcome));
  checker.start();
  REQUIRE(eventually([&] { return checker.counters(i).checks.get() >= 3; }));
  CHECK(state.up());
  outcome = kRefused;
  REQUIRE(eventually([&] { return !state.up(); }));
  // Exactly `fall` failures counted when it went down: at least 3 failed.
  CHECK(checker.counters(i).failed_checks.get() >= 3);
  CHECK(checker.counters(i).went_down.get() == 1);
  outcome = kOk;
  REQUIRE(eventually([&] { return state.up(); }));
  CHECK(checker.counters(i).went_up.get() == 1);
}

TEST_CASE("health engine: FirstCheck starts down and takes the first result as is", "[health]") {
  HealthState state(true);
  std::atomic<int> outcome{kOk};
  HealthChecker checker("test-health");
  checker.add(fast(state, Start::FirstCheck, 5, 5), std::make_unique<ScriptedProbe>(outcome));
  CHECK_FALSE(state.up());  // down until checked
  checker.start();
  // One success is enough the first time, although rise is 5.
  REQUIRE(eventually([&] { return state.up(); }, 1000ms));
}

TEST_CASE("health engine: Keep leaves the verdict until fall/rise checks disagree", "[health]") {
  HealthState state(false);
  std::atomic<int> outcome{kOk};
  HealthChecker checker("test-health");
  const size_t i =
      checker.add(fast(state, Start::Keep, 3, 3), std::make_unique<ScriptedProbe>(outcome));
  checker.start();
  REQUIRE(eventually([&] { return state.up(); }));
  // Three successes were needed, not one.
  CHECK(checker.counters(i).checks.get() >= 3);
}

TEST_CASE("health engine: a check that never answers ends at the timeout", "[health]") {
  HealthState state(true);
  std::atomic<int> outcome{-1};
  HealthChecker checker("test-health");
  auto probe = std::make_unique<ScriptedProbe>(outcome);
  ScriptedProbe* raw = probe.get();
  TargetSettings s = fast(state, Start::Up, 1, 1);
  s.timeout = 50ms;
  std::atomic<int> timeouts{0};
  s.on_result = [&](Result r, std::chrono::microseconds took) {
    if (r.outcome == Outcome::Timeout && took >= 45ms) ++timeouts;
  };
  checker.add(std::move(s), std::move(probe));
  checker.start();
  REQUIRE(eventually([&] { return !state.up(); }));
  CHECK(timeouts.load() >= 1);
  CHECK(raw->cancels.load() >= 1);
}

TEST_CASE("health engine: a passive report marks down at once; rise checks from then bring it back",
          "[health]") {
  HealthState state(true);
  std::atomic<int> outcome{kOk};
  HealthChecker checker("test-health");
  TargetSettings s = fast(state, Start::Up, 3, 3);
  s.interval = 100ms;
  const size_t i = checker.add(std::move(s), std::make_unique<ScriptedProbe>(outcome));
  checker.start();
  REQUIRE(eventually([&] { return checker.counters(i).checks.get() >= 1; }));
  const uint64_t before = checker.counters(i).checks.get();
  CHECK(state.report_failure("server t1", "connect refused"));
  CHECK_FALSE(state.up());  // at once, from the caller's thread
  CHECK_FALSE(state.report_failure("server t1", "connect refused"));  // already down: not again
  CHECK(state.passive_downs() == 1);
  // Back only after `rise` (3) successful checks counted from the report.
  REQUIRE(eventually([&] { return state.up(); }));
  CHECK(checker.counters(i).checks.get() - before >= 3);
}

TEST_CASE("health state: without an active checker a report is counted and ignored", "[health]") {
  HealthState state(true);
  CHECK_FALSE(state.report_failure("server t1", "connect refused"));
  CHECK(state.up());
  CHECK(state.ignored_reports() == 1);
  {
    std::atomic<int> outcome{kOk};
    HealthChecker checker("test-health");
    checker.add(fast(state, Start::Up), std::make_unique<ScriptedProbe>(outcome));
    CHECK(state.report_failure("server t1", "refused"));
  }
  // The checker is gone again.
  state.store(true);
  CHECK_FALSE(state.report_failure("server t1", "refused"));
  CHECK(state.up());
}

TEST_CASE("tcp probe: connect succeeds or is refused", "[health]") {
  Listener open;
  CHECK(probe_once(std::make_unique<TcpProbe>(open.address())).outcome == Outcome::Ok);
  Listener closed;
  const SocketAddress gone = closed.address();
  closed.close();
  CHECK(probe_once(std::make_unique<TcpProbe>(gone)).outcome == Outcome::ConnectFailed);
}

TEST_CASE("http probe: status judged by the caller's rule", "[health]") {
  auto healthy = [](uint16_t status) { return status < 500; };
  auto probe = [&](const HttpResponder& r) {
    return std::make_unique<HttpProbe>(
        r.listener.address(), http_check_request("/health", r.listener.address(), "test"), healthy);
  };
  {
    HttpResponder r("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    const Result res = probe_once(probe(r));
    CHECK(res.outcome == Outcome::Ok);
    CHECK(res.detail == 404);
  }
  {
    HttpResponder r("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
    const Result res = probe_once(probe(r));
    CHECK(res.outcome == Outcome::BadStatus);
    CHECK(res.detail == 503);
  }
  {
    HttpResponder r("SSH-2.0-OpenSSH_9.2\r\n\r\n");
    CHECK(probe_once(probe(r)).outcome == Outcome::BadResponse);
  }
  {
    HttpResponder r("HTTP/1.1 100 Continue\r\n\r\n");
    CHECK(probe_once(probe(r)).outcome == Outcome::BadResponse);
  }
  {
    HttpResponder r("");  // closes without a byte
    CHECK(probe_once(probe(r)).outcome == Outcome::Closed);
  }
}
