#include <catch2/catch.hpp>

#include <pthread.h>
#include <signal.h>

#include <string>
#include <vector>

#include "service.h"

using edgepin::app::Service;
using edgepin::app::ServiceStatus;

namespace {
// Thread-directed, so only this (blocking) thread can take it.
void send_self(int sig) { REQUIRE(pthread_kill(pthread_self(), sig) == 0); }
}  // namespace

TEST_CASE("service: SIGHUP reloads, a refused one keeps running, SIGTERM drains then stops",
          "[service]") {
  Service service;
  std::vector<std::string> events;
  auto& h = service.hooks();
  h.on_ready = [&] { events.push_back("ready"); };
  h.on_reload_begin = [&] { events.push_back("reload_begin"); };
  h.on_reload_end = [&](bool applied) {
    events.push_back(applied ? "reload_applied" : "reload_refused");
  };
  h.on_stopping = [&] { events.push_back("stopping"); };

  int reloads = 0;
  size_t open = 2;
  Service::Parts parts;
  parts.reload = [&]() -> Service::Parts::ReloadResult {
    ++reloads;
    if (reloads == 1) {
      send_self(SIGHUP);  // the next one applies
      return {false, "node-proxy.json: bad json"};
    }
    send_self(SIGTERM);
    return {true, "1 setting changed"};
  };
  parts.active = [&] { return open ? open-- : 0; };
  parts.stop_accepting = [&] { events.push_back("stop_accepting"); };
  parts.close_all = [&] { events.push_back("close_all"); };
  parts.grace = [] { return std::chrono::milliseconds(5000); };

  service.ready();
  send_self(SIGHUP);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(service.run(parts) == 0);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3));
  CHECK(reloads == 2);
  CHECK(events == std::vector<std::string>{"ready", "reload_begin", "reload_refused",
                                           "reload_begin", "reload_applied", "stopping",
                                           "stop_accepting", "close_all"});
}

TEST_CASE("service: a second SIGTERM ends the grace period at once", "[service]") {
  Service service;
  bool closed = false;
  Service::Parts parts;
  parts.reload = [] { return Service::Parts::ReloadResult{true, ""}; };
  parts.active = [] { return size_t{1}; };  // never drains by itself
  parts.stop_accepting = [] { send_self(SIGTERM); };
  parts.close_all = [&] { closed = true; };
  parts.grace = [] { return std::chrono::milliseconds(30000); };
  send_self(SIGINT);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(service.run(parts) == 0);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3));
  CHECK(closed);
}

TEST_CASE("service: the grace period ends the drain, and ticks report the status", "[service]") {
  Service service;
  std::vector<ServiceStatus> ticks;
  service.hooks().on_tick = [&](const ServiceStatus& s) { ticks.push_back(s); };
  Service::Parts parts;
  parts.reload = [] { return Service::Parts::ReloadResult{true, ""}; };
  parts.active = [] { return size_t{3}; };
  parts.stop_accepting = [] {};
  bool closed = false;
  parts.close_all = [&] { closed = true; };
  parts.grace = [] { return std::chrono::milliseconds(1200); };
  parts.status = [] { return std::string("3 connections"); };
  parts.loops_turning = [] { return true; };
  send_self(SIGTERM);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(service.run(parts) == 0);
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took >= std::chrono::milliseconds(1150));
  CHECK(took < std::chrono::seconds(4));
  CHECK(closed);
  REQUIRE(!ticks.empty());
  CHECK(ticks.back().draining);
  CHECK(ticks.back().text == "3 connections");
}
