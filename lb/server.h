#pragma once
// The lb's view of one backend server (an edgepin node). Shared by all
// worker threads: the identity fields are immutable after construction; the
// state the workers and the health checker change is atomic.
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace edgepin::lb {

// Operator-set state (admin socket), independent of health.
enum class AdminState : uint8_t {
  Ready,  // takes new clients
  Drain,  // keeps stuck/tagged clients, gets no new ones from the balancer
  Maint,  // gets nothing; the balancer and the router skip it
};

struct ServerState {
  // --- identity (immutable; a node keeps its id across reloads) ---
  uint32_t id = 0;   // index in the server list of the running config
  std::string name;  // node name from cluster.json
  uint16_t tag = 0;  // node tag (0 = not an edgepin node)

  // --- set by a configuration reload (SIGHUP) ---
  std::atomic<uint32_t> weight{100};
  // No longer in cluster.json: takes nothing new, its established
  // connections finish. Kept (not freed) so they and the stick table's
  // server ids stay valid; re-adding the node name revives it.
  std::atomic<bool> removed{false};

  // --- shared mutable state ---
  std::atomic<bool> healthy{true};
  std::atomic<AdminState> admin{AdminState::Ready};
  std::atomic<uint32_t> active{0};  // connections currently relayed or connecting
  std::atomic<uint32_t> queued{0};  // clients waiting for a slot (maxconn)

  // --- totals for stats, added to by every worker ---
  std::atomic<uint64_t> total_connections{0};  // connections established to it
  std::atomic<uint64_t> bytes_in{0};           // client -> server, of ended connections
  std::atomic<uint64_t> bytes_out{0};          // server -> client, of ended connections

  // --- last health check, for stats and logs (written by the checker) ---
  std::atomic<uint8_t> check_outcome{0};  // a CheckOutcome (lb/health.h)
  std::atomic<uint16_t> check_detail{0};  // HTTP status or TLS alert code
  std::atomic<uint32_t> check_latency_us{0};

  ServerState() = default;
  ServerState(const ServerState&) = delete;
  ServerState& operator=(const ServerState&) = delete;

  // Takes a connection slot unless `maxconn` (0: no limit) are taken.
  // Compare-and-swap, so workers racing for the last slot cannot overshoot.
  bool try_acquire(uint32_t maxconn) {
    uint32_t cur = active.load(std::memory_order_relaxed);
    do {
      if (maxconn && cur >= maxconn) return false;
    } while (!active.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed));
    return true;
  }
  void release() { active.fetch_sub(1, std::memory_order_relaxed); }

  // May receive a client that is already bound to it (tag, stick table).
  bool usable_for_bound() const {
    return !removed.load(std::memory_order_relaxed) && healthy.load(std::memory_order_relaxed) &&
           admin.load(std::memory_order_relaxed) != AdminState::Maint;
  }
  // May receive a client the balancer picks.
  bool usable_for_new() const {
    return !removed.load(std::memory_order_relaxed) && healthy.load(std::memory_order_relaxed) &&
           admin.load(std::memory_order_relaxed) == AdminState::Ready &&
           weight.load(std::memory_order_relaxed) > 0;
  }
};

constexpr const char* to_string(AdminState s) {
  switch (s) {
    case AdminState::Ready:
      return "ready";
    case AdminState::Drain:
      return "drain";
    case AdminState::Maint:
      return "maint";
  }
  return "?";
}

}  // namespace edgepin::lb
