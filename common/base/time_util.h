#pragma once
// Time conversions both binaries need, in one place: the configuration
// holds std::chrono durations, libevent's timers take a timeval, and the
// stats pages and admin sockets show an uptime.
#include <sys/time.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace edgepin {

// `d` as a timeval for evtimer_add / bufferevent_set_timeouts. A negative
// duration becomes zero (fire at once) rather than an invalid timeval.
constexpr timeval to_timeval(std::chrono::microseconds d) {
  if (d.count() <= 0) return timeval{0, 0};
  return timeval{static_cast<time_t>(d.count() / 1'000'000),
                 static_cast<suseconds_t>(d.count() % 1'000'000)};
}

// Whole milliseconds from `from` to `to`; 0 if `to` is earlier.
inline int64_t ms_between(std::chrono::steady_clock::time_point from,
                          std::chrono::steady_clock::time_point to) {
  if (to <= from) return 0;
  return std::chrono::duration_cast<std::chrono::milliseconds>(to - from).count();
}

// An uptime for people: "3d 04h05m06s" (days, then zero-padded hours,
// minutes and seconds). Negative input is shown as 0.
std::string format_duration(int64_t seconds);

}  // namespace edgepin
