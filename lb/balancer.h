#pragma once
// Balance algorithms: how the lb picks a server for a client that is bound
// to none (no node tag, no stick-table entry, no source affinity).
//
// All pickers are safe to call from every worker thread at once: their
// tables are immutable after construction and their cursors are atomics.
// A balancer is rebuilt when the server list changes (reload); health and
// admin state changes need no rebuild because pick() skips servers that are
// not usable, which is also what keeps the consistent hashes minimally
// disruptive: keys of servers that stay up never move.
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "server.h"

namespace edgepin::lb {

enum class Algorithm : uint8_t { RoundRobin, LeastConn, Maglev, Ring };

const char* to_string(Algorithm a);

class Balancer {
 public:
  virtual ~Balancer() = default;
  // Returns a server usable for new clients, never `exclude` (the server
  // whose connect just failed; may be null), or nullptr when none is usable.
  // `key` is the hash input for the consistent-hash algorithms (ignored by
  // the others).
  virtual ServerState* pick(uint64_t key, const ServerState* exclude) = 0;
  virtual Algorithm algorithm() const = 0;
};

// `servers` must outlive the balancer.
std::unique_ptr<Balancer> make_balancer(Algorithm algorithm, std::span<ServerState* const> servers);

// 64-bit hashes used for table construction and lookups. Stable across
// runs and hosts: two lb instances with the same config agree.
uint64_t hash_bytes(std::span<const uint8_t> data, uint64_t seed = 0);
uint64_t hash_string(std::string_view s, uint64_t seed = 0);

// Consistent hashing, exposed for the source-address affinity and tests.
class MaglevTable {
 public:
  // Table size: prime, and large against the server count so weights are
  // honoured closely (Maglev paper: M >> N).
  static constexpr uint32_t kSize = 65537;
  explicit MaglevTable(std::span<ServerState* const> servers);
  // The preferred server for `key`, or nullptr when the table is empty.
  ServerState* lookup(uint64_t key) const;
  size_t size() const { return entries_.size(); }

 private:
  std::vector<ServerState*> entries_;
};

class HashRing {
 public:
  // Points on the ring per unit of weight: 100-weight servers get 1600
  // points, enough for a spread within a few percent.
  static constexpr uint32_t kPointsPerWeight = 16;
  explicit HashRing(std::span<ServerState* const> servers);
  // The first server clockwise from `key` for which `usable` holds, or null.
  template <typename Pred>
  ServerState* lookup(uint64_t key, Pred usable) const {
    if (points_.empty()) return nullptr;
    size_t i = first_at_or_after(key);
    for (size_t n = 0; n < points_.size(); ++n) {
      ServerState* s = points_[(i + n) % points_.size()].server;
      if (usable(s)) return s;
    }
    return nullptr;
  }

 private:
  struct Point {
    uint64_t hash;
    ServerState* server;
  };
  size_t first_at_or_after(uint64_t key) const;
  std::vector<Point> points_;
};

}  // namespace edgepin::lb
