// EventLoopThread: start, post and stop from another thread, including a
// stop() that comes before the loop thread has entered event_base_loop()
// (libevent clears a loopbreak made before that on entry).
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include "event_loop.h"

using namespace edgepin;
using namespace std::chrono_literals;

namespace {

// Calls loop.stop() on a helper thread and waits up to `limit` for it. If
// it hangs (the break was lost), a break posted into the loop releases it so
// the test fails instead of hanging. Returns whether stop() returned in time.
bool stops_within(EventLoopThread& loop, std::chrono::milliseconds limit) {
  std::promise<void> done;
  auto finished = done.get_future();
  std::thread stopper([&] {
    loop.stop();
    done.set_value();
  });
  const bool in_time = finished.wait_for(limit) == std::future_status::ready;
  if (!in_time) {
    event_base* base = loop.base();
    loop.post([base] { event_base_loopbreak(base); });
  }
  stopper.join();
  return in_time;
}

}  // namespace

TEST_CASE("event loop: stop() right after start() returns promptly, every time", "[event_loop]") {
  // The thread usually has not reached its loop yet when stop() runs; many
  // rounds make sure both orders happen.
  for (int i = 0; i < 200; ++i) {
    EventLoopThread loop("test-loop");
    loop.start();
    INFO("round " << i);
    REQUIRE(stops_within(loop, 2000ms));
  }
}

TEST_CASE("event loop: stop() of a running loop, and stop() without start()", "[event_loop]") {
  EventLoopThread never_started("test-idle");
  const auto t0 = std::chrono::steady_clock::now();
  never_started.stop();  // nothing to join
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);

  EventLoopThread loop("test-loop");
  loop.start();
  std::promise<void> ran;
  auto ran_future = ran.get_future();
  loop.post([&ran] { ran.set_value(); });
  REQUIRE(ran_future.wait_for(5s) == std::future_status::ready);
  CHECK(stops_within(loop, 2000ms));
}

TEST_CASE("event loop: tasks posted before start() run once it starts, in order", "[event_loop]") {
  EventLoopThread loop("test-loop");
  std::vector<int> order;
  std::promise<void> last;
  auto last_future = last.get_future();
  for (int i = 0; i < 5; ++i) loop.post([&order, i] { order.push_back(i); });
  loop.post([&last] { last.set_value(); });
  loop.start();
  REQUIRE(last_future.wait_for(5s) == std::future_status::ready);
  CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
  CHECK(stops_within(loop, 2000ms));
}

TEST_CASE("event loop: a stopped loop can be started and stopped again", "[event_loop]") {
  EventLoopThread loop("test-loop");
  for (int round = 0; round < 3; ++round) {
    loop.start();
    std::promise<void> ran;
    auto ran_future = ran.get_future();
    loop.post([&ran] { ran.set_value(); });
    INFO("round " << round);
    REQUIRE(ran_future.wait_for(5s) == std::future_status::ready);
    REQUIRE(stops_within(loop, 2000ms));
  }
}
