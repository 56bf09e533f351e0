#include <catch2/catch.hpp>

#include "time_util.h"

using namespace std::chrono_literals;
using edgepin::format_duration;
using edgepin::ms_between;
using edgepin::to_timeval;

TEST_CASE("to_timeval splits seconds and microseconds", "[time_util]") {
  const timeval a = to_timeval(2500ms);
  CHECK(a.tv_sec == 2);
  CHECK(a.tv_usec == 500000);
  const timeval b = to_timeval(999us);
  CHECK(b.tv_sec == 0);
  CHECK(b.tv_usec == 999);
  const timeval c = to_timeval(3600s);
  CHECK(c.tv_sec == 3600);
  CHECK(c.tv_usec == 0);
}

TEST_CASE("to_timeval turns a negative or zero duration into zero", "[time_util]") {
  const timeval z = to_timeval(-5ms);
  CHECK(z.tv_sec == 0);
  CHECK(z.tv_usec == 0);
  CHECK(to_timeval(0ms).tv_usec == 0);
}

TEST_CASE("ms_between counts whole milliseconds and never goes negative", "[time_util]") {
  const auto t0 = std::chrono::steady_clock::time_point{} + 10s;
  CHECK(ms_between(t0, t0 + 1500us) == 1);
  CHECK(ms_between(t0, t0 + 2s) == 2000);
  CHECK(ms_between(t0 + 2s, t0) == 0);
}

TEST_CASE("format_duration shows days, hours, minutes, seconds", "[time_util]") {
  CHECK(format_duration(0) == "0d 00h00m00s");
  CHECK(format_duration(59) == "0d 00h00m59s");
  CHECK(format_duration(3 * 86400 + 4 * 3600 + 5 * 60 + 6) == "3d 04h05m06s");
  CHECK(format_duration(400 * 86400 + 23 * 3600 + 59 * 60 + 59) == "400d 23h59m59s");
  CHECK(format_duration(-7) == "0d 00h00m00s");
}
