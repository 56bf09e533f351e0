#pragma once
// At most one log line per period for an event that can repeat thousands of
// times a second (a refused client, a paused listener): the line that is
// written carries how many events it stands for, the others are only
// counted. Safe to share between threads, so a flood spread over every
// worker still writes one line a second for the whole process.
#include <atomic>
#include <chrono>
#include <cstdint>

namespace edgepin {

class LogThrottle {
 public:
  using Clock = std::chrono::steady_clock;
  explicit LogThrottle(Clock::duration period = std::chrono::seconds(1)) : period_(period) {}

  // Counts one event at `now`. Returns 0 when no line is due (the event is
  // kept for the next one), otherwise the number of events the line due now
  // must report: this one and those held back since the last line.
  uint64_t event(Clock::time_point now = Clock::now()) {
    pending_.fetch_add(1, std::memory_order_relaxed);
    const int64_t t = now.time_since_epoch().count();
    int64_t last = last_.load(std::memory_order_relaxed);
    if (last != kNever && t - last < period_.count()) return 0;
    // One thread wins the line; the others' events go into it or the next.
    if (!last_.compare_exchange_strong(last, t, std::memory_order_relaxed)) return 0;
    return pending_.exchange(0, std::memory_order_relaxed);
  }

 private:
  static constexpr int64_t kNever = INT64_MIN;
  const Clock::duration period_;
  std::atomic<int64_t> last_{kNever};
  std::atomic<uint64_t> pending_{0};
};

}  // namespace edgepin
