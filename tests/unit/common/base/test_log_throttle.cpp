#include <catch2/catch.hpp>

#include <thread>
#include <vector>

#include "log_throttle.h"

using namespace std::chrono_literals;
using edgepin::LogThrottle;

TEST_CASE("log throttle: first event logs, the rest of the second is counted", "[log_throttle]") {
  LogThrottle t;
  const auto t0 = LogThrottle::Clock::time_point{} + 100s;
  CHECK(t.event(t0) == 1);
  for (int i = 1; i < 605; ++i) CHECK(t.event(t0 + std::chrono::milliseconds(i)) == 0);
  // The next line a second later reports the 604 held back and itself.
  CHECK(t.event(t0 + 1001ms) == 605);
  CHECK(t.event(t0 + 1500ms) == 0);
  CHECK(t.event(t0 + 2002ms) == 2);
}

TEST_CASE("log throttle: threads sharing it write one line per period", "[log_throttle]") {
  LogThrottle t;
  const auto t0 = LogThrottle::Clock::time_point{} + 100s;
  std::atomic<uint64_t> lines{0}, reported{0};
  std::vector<std::thread> threads;
  for (int n = 0; n < 4; ++n)
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i)
        if (uint64_t c = t.event(t0 + std::chrono::microseconds(i))) {
          lines.fetch_add(1);
          reported.fetch_add(c);
        }
    });
  for (auto& th : threads) th.join();
  CHECK(lines.load() == 1);
  // Every later event is reported by the next line.
  const uint64_t next = t.event(t0 + 2s);
  CHECK(reported.load() + next == 4001);
}
