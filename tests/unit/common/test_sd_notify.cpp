// sd::Notifier (the sd_notify datagram protocol) and sd::ServiceNotifier's
// watchdog, which pings only while every event loop turns.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "event_loop.h"
#include "sd_notify.h"
#include "service_notifier.h"
#include "tests/helpers/temp_dir.h"

using namespace edgepin;
using namespace std::chrono_literals;

namespace {

// systemd's end: a bound datagram socket (a path, or an abstract name when
// `abstract`), read without blocking.
class Receiver {
 public:
  Receiver(const std::string& name, bool abstract) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path + (abstract ? 1 : 0), name.data(), name.size());
    const socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + 1);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0);
    address_ = (abstract ? "@" : "") + name;
  }
  ~Receiver() { ::close(fd_); }
  const std::string& address() const { return address_; }

  // Every datagram received so far.
  std::vector<std::string> drain() {
    std::vector<std::string> out;
    char buf[4096];
    for (;;) {
      const ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (n < 0) break;
      out.emplace_back(buf, static_cast<size_t>(n));
    }
    return out;
  }

 private:
  int fd_ = -1;
  std::string address_;
};

size_t count(const std::vector<std::string>& messages, const std::string& what) {
  size_t n = 0;
  for (const auto& m : messages) n += m == what;
  return n;
}

}  // namespace

TEST_CASE("Notifier: one datagram per message, to a path or an abstract name", "[sd_notify]") {
  test::TempDir dir;
  for (bool abstract : {false, true}) {
    const std::string name =
        abstract ? "edgepin-test-" + std::to_string(getpid()) : (dir.path() / "notify").string();
    Receiver rx(name, abstract);
    sd::Notifier n(rx.address(), 0us);
    REQUIRE(n.enabled());
    CHECK(n.ready("3 connections, 3/3 nodes up"));
    CHECK(n.stopping(""));
    CHECK(n.watchdog());
    const auto got = rx.drain();
    REQUIRE(got.size() == 3);
    CHECK(got[0] == "READY=1\nSTATUS=3 connections, 3/3 nodes up");
    CHECK(got[1] == "STOPPING=1");
    CHECK(got[2] == "WATCHDOG=1");
  }
}

TEST_CASE("Notifier: RELOADING carries CLOCK_MONOTONIC in microseconds", "[sd_notify]") {
  test::TempDir dir;
  Receiver rx((dir.path() / "notify").string(), false);
  sd::Notifier n(rx.address(), 0us);
  timespec before{};
  clock_gettime(CLOCK_MONOTONIC, &before);
  REQUIRE(n.reloading("reloading"));
  const auto got = rx.drain();
  REQUIRE(got.size() == 1);
  REQUIRE(got[0].rfind("RELOADING=1\nMONOTONIC_USEC=", 0) == 0);
  const std::string usec =
      got[0].substr(std::strlen("RELOADING=1\nMONOTONIC_USEC="),
                    got[0].find("\nSTATUS=") - std::strlen("RELOADING=1\nMONOTONIC_USEC="));
  const long long sent = std::stoll(usec);
  const long long then = static_cast<long long>(before.tv_sec) * 1000000 + before.tv_nsec / 1000;
  CHECK(sent >= then);
  CHECK(sent - then < 5'000'000);
  CHECK(got[0].find("\nSTATUS=reloading") != std::string::npos);
}

TEST_CASE("Notifier: a status never starts a new assignment", "[sd_notify]") {
  CHECK(sd::Notifier::with_status("READY=1", "a\nWATCHDOG=1\tb") ==
        "READY=1\nSTATUS=a WATCHDOG=1 b");
  CHECK(sd::Notifier::with_status("", "x") == "STATUS=x");
  CHECK(sd::Notifier::with_status("STOPPING=1", "") == "STOPPING=1");
}

TEST_CASE("Notifier: without a usable NOTIFY_SOCKET nothing is sent and nothing fails",
          "[sd_notify]") {
  sd::Notifier none("", 5s);
  CHECK_FALSE(none.enabled());
  CHECK(none.watchdog_interval() == 0us);  // no supervisor: no watchdog
  CHECK_FALSE(none.ready("x"));
  sd::Notifier relative("run/notify", 0us);  // neither a path nor "@name"
  CHECK_FALSE(relative.enabled());
  test::TempDir dir;
  sd::Notifier gone((dir.path() / "nobody-listens").string(), 0us);
  CHECK(gone.enabled());
  CHECK_FALSE(gone.ready("x"));  // logged once, not thrown
  CHECK_FALSE(gone.ready("x"));
}

TEST_CASE("Notifier::from_environment: the watchdog is for the main process only", "[sd_notify]") {
  ::setenv("NOTIFY_SOCKET", "@edgepin-env-test", 1);
  ::setenv("WATCHDOG_USEC", "4000000", 1);
  ::unsetenv("WATCHDOG_PID");
  CHECK(sd::Notifier::from_environment().watchdog_interval() == 4s);
  ::setenv("WATCHDOG_PID", std::to_string(getpid()).c_str(), 1);
  CHECK(sd::Notifier::from_environment().watchdog_interval() == 4s);
  ::setenv("WATCHDOG_PID", std::to_string(getpid() + 1).c_str(), 1);  // inherited from a parent
  CHECK(sd::Notifier::from_environment().watchdog_interval() == 0us);
  ::unsetenv("WATCHDOG_PID");
  ::setenv("WATCHDOG_USEC", "soon", 1);
  CHECK(sd::Notifier::from_environment().watchdog_interval() == 0us);
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  CHECK_FALSE(sd::Notifier::from_environment().enabled());
}

TEST_CASE(
    "ServiceNotifier: pings every half interval while every loop turns, none while one is stuck",
    "[sd_notify]") {
  test::TempDir dir;
  Receiver rx((dir.path() / "notify").string(), false);
  // 1.6 s: a ping is due every 800 ms, a loop 800 ms behind is stalled.
  sd::ServiceNotifier service(sd::Notifier(rx.address(), 1600ms));
  EventLoopThread worker("test-worker");
  worker.start();
  const auto t0 = std::chrono::steady_clock::now();
  service.ready("ok");
  auto got = rx.drain();
  CHECK(count(got, "READY=1\nSTATUS=ok") == 1);
  CHECK(count(got, "WATCHDOG=1") == 1);

  // Not due yet: only a changed status goes out.
  service.tick("ok", t0 + 100ms);
  CHECK(rx.drain().empty());
  service.tick("busy", t0 + 200ms);
  CHECK(rx.drain() == std::vector<std::string>{"STATUS=busy"});

  // Due, and the loop turns: a ping.
  std::this_thread::sleep_for(900ms);
  service.tick("busy");
  CHECK(count(rx.drain(), "WATCHDOG=1") == 1);
  CHECK_FALSE(service.stalled());

  // The worker blocks in a callback for 1.5 s: once its heartbeat is
  // 800 ms old, the due ping is withheld and the status says why.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  worker.post([released] { released.wait(); });
  std::this_thread::sleep_for(1200ms);
  service.tick("busy");
  got = rx.drain();
  CHECK(count(got, "WATCHDOG=1") == 0);
  CHECK(service.stalled());
  REQUIRE(got.size() == 1);
  CHECK(got[0].rfind("STATUS=event loop test-worker stalled", 0) == 0);
  auto lag = most_lagging_loop(std::chrono::steady_clock::now());
  REQUIRE(lag);
  CHECK(lag->name == "test-worker");
  CHECK(lag->behind >= 800ms);

  // Released: the next tick after a heartbeat pings again.
  release.set_value();
  std::this_thread::sleep_for(400ms);
  service.tick("busy");
  got = rx.drain();
  CHECK(count(got, "WATCHDOG=1") == 1);
  CHECK_FALSE(service.stalled());

  // A stopped loop no longer counts.
  worker.stop();
  CHECK_FALSE(most_lagging_loop(std::chrono::steady_clock::now()));
}

TEST_CASE("ServiceNotifier: no watchdog configured, no pings", "[sd_notify]") {
  test::TempDir dir;
  Receiver rx((dir.path() / "notify").string(), false);
  sd::ServiceNotifier service(sd::Notifier(rx.address(), 0us));
  service.ready("ok");
  service.tick("ok", std::chrono::steady_clock::now() + 1h);
  CHECK(rx.drain() == std::vector<std::string>{"READY=1\nSTATUS=ok"});
}
