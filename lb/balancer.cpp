#include "balancer.h"

#include <algorithm>
#include <numeric>

namespace edgepin::lb {

const char* to_string(Algorithm a) {
  switch (a) {
    case Algorithm::RoundRobin:
      return "roundrobin";
    case Algorithm::LeastConn:
      return "leastconn";
    case Algorithm::Maglev:
      return "maglev";
    case Algorithm::Ring:
      return "ring";
  }
  return "?";
}

namespace {

// MurmurHash3's 64-bit finalizer: spreads FNV's weak low bits.
constexpr uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

bool usable_new(const ServerState* s, const ServerState* exclude) {
  return s != exclude && s->usable_for_new();
}

// Weighted round robin over a precomputed smooth schedule (the sequence
// nginx's smooth WRR produces), walked by one shared atomic cursor so the
// spread is exact across threads. Weights are divided by their gcd, so
// equal weights give a schedule as long as the server list.
class RoundRobin final : public Balancer {
 public:
  explicit RoundRobin(std::span<ServerState* const> servers) {
    uint32_t g = 0;
    for (ServerState* s : servers) g = std::gcd(g, s->weight.load(std::memory_order_relaxed));
    if (g == 0) return;  // every weight is 0: nothing to schedule
    std::vector<int64_t> current(servers.size(), 0);
    int64_t total = 0;
    for (ServerState* s : servers) total += s->weight.load(std::memory_order_relaxed) / g;
    for (int64_t step = 0; step < total; ++step) {
      size_t best = 0;
      for (size_t i = 0; i < servers.size(); ++i) {
        current[i] += servers[i]->weight.load(std::memory_order_relaxed) / g;
        if (current[i] > current[best]) best = i;
      }
      current[best] -= total;
      schedule_.push_back(servers[best]);
    }
  }
  ServerState* pick(uint64_t, const ServerState* exclude) override {
    if (schedule_.empty()) return nullptr;
    // A turn that falls on an unusable server is used up, and the next
    // pick takes a fresh turn from the shared cursor: the picks are the
    // schedule with the unusable servers left out, so the others keep
    // their weights. (Giving the turn to the next entry instead handed a
    // down server's share to its neighbour: 2:1 with one of three down.)
    for (size_t n = 0; n < schedule_.size(); ++n) {
      ServerState* s =
          schedule_[cursor_.fetch_add(1, std::memory_order_relaxed) % schedule_.size()];
      if (usable_new(s, exclude)) return s;
    }
    // Other threads took the turns in between (or nothing is usable): one
    // scan in order settles it.
    for (ServerState* s : schedule_)
      if (usable_new(s, exclude)) return s;
    return nullptr;
  }
  Algorithm algorithm() const override { return Algorithm::RoundRobin; }

 private:
  std::vector<ServerState*> schedule_;
  std::atomic<uint64_t> cursor_{0};
};

// Fewest active connections relative to weight; ties rotate so equal
// servers share new clients instead of the first one taking them all.
class LeastConn final : public Balancer {
 public:
  explicit LeastConn(std::span<ServerState* const> servers)
      : servers_(servers.begin(), servers.end()) {}
  ServerState* pick(uint64_t, const ServerState* exclude) override {
    if (servers_.empty()) return nullptr;
    uint64_t start = cursor_.fetch_add(1, std::memory_order_relaxed);
    ServerState* best = nullptr;
    uint64_t best_active = 0;
    for (size_t n = 0; n < servers_.size(); ++n) {
      ServerState* s = servers_[(start + n) % servers_.size()];
      if (!usable_new(s, exclude)) continue;
      uint64_t active = s->active.load(std::memory_order_relaxed);
      // active/weight < best_active/best_weight, without division.
      // Weights may change on reload: read each once per comparison.
      const uint64_t best_weight = best ? best->weight.load(std::memory_order_relaxed) : 0;
      if (!best || active * best_weight < best_active * s->weight.load(std::memory_order_relaxed)) {
        best = s;
        best_active = active;
      }
    }
    return best;
  }
  Algorithm algorithm() const override { return Algorithm::LeastConn; }

 private:
  std::vector<ServerState*> servers_;
  std::atomic<uint64_t> cursor_{0};
};

// When the preferred server is unusable, later probes rehash the key so the
// down server's keys spread over the others instead of piling onto one.
constexpr int kRehashProbes = 8;

class MaglevBalancer final : public Balancer {
 public:
  explicit MaglevBalancer(std::span<ServerState* const> servers)
      : table_(servers), servers_(servers.begin(), servers.end()) {}
  ServerState* pick(uint64_t key, const ServerState* exclude) override {
    for (int probe = 0; probe < kRehashProbes; ++probe) {
      ServerState* s = table_.lookup(probe == 0 ? key : fmix64(key + static_cast<uint64_t>(probe)));
      if (s && usable_new(s, exclude)) return s;
    }
    for (ServerState* s : servers_)  // all probes missed: any usable one
      if (usable_new(s, exclude)) return s;
    return nullptr;
  }
  Algorithm algorithm() const override { return Algorithm::Maglev; }

 private:
  MaglevTable table_;
  std::vector<ServerState*> servers_;
};

class RingBalancer final : public Balancer {
 public:
  explicit RingBalancer(std::span<ServerState* const> servers) : ring_(servers) {}
  ServerState* pick(uint64_t key, const ServerState* exclude) override {
    return ring_.lookup(key, [exclude](const ServerState* s) { return usable_new(s, exclude); });
  }
  Algorithm algorithm() const override { return Algorithm::Ring; }

 private:
  HashRing ring_;
};

}  // namespace

uint64_t hash_bytes(std::span<const uint8_t> data, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ULL ^ fmix64(seed);  // FNV-1a offset basis
  for (uint8_t b : data) {
    h ^= b;
    h *= 0x100000001b3ULL;  // FNV-1a prime
  }
  return fmix64(h);
}

uint64_t hash_string(std::string_view s, uint64_t seed) {
  return hash_bytes({reinterpret_cast<const uint8_t*>(s.data()), s.size()}, seed);
}

MaglevTable::MaglevTable(std::span<ServerState* const> servers) {
  std::vector<ServerState*> members;
  uint32_t max_weight = 0;
  for (ServerState* s : servers) {
    if (s->weight.load(std::memory_order_relaxed) == 0) continue;
    members.push_back(s);
    max_weight = std::max(max_weight, s->weight.load(std::memory_order_relaxed));
  }
  if (members.empty()) return;
  const uint64_t m = kSize;
  std::vector<uint64_t> offset(members.size()), skip(members.size()), next(members.size(), 0);
  for (size_t i = 0; i < members.size(); ++i) {
    // Permutations depend only on the server's name, so two lbs (or one lb
    // after a restart) with the same servers build the same table.
    offset[i] = hash_string(members[i]->name, 1) % m;
    skip[i] = hash_string(members[i]->name, 2) % (m - 1) + 1;
  }
  entries_.assign(kSize, nullptr);
  std::vector<double> credit(members.size(), 0.0);
  size_t filled = 0;
  // Weighted fill: each round a server earns weight/max_weight of a slot and
  // claims a slot whenever its credit reaches one.
  while (filled < kSize) {
    for (size_t i = 0; i < members.size() && filled < kSize; ++i) {
      credit[i] +=
          static_cast<double>(members[i]->weight.load(std::memory_order_relaxed)) / max_weight;
      while (credit[i] >= 1.0 && filled < kSize) {
        credit[i] -= 1.0;
        uint64_t c;
        do {
          c = (offset[i] + next[i] * skip[i]) % m;
          ++next[i];
        } while (entries_[c] != nullptr);
        entries_[c] = members[i];
        ++filled;
      }
    }
  }
}

ServerState* MaglevTable::lookup(uint64_t key) const {
  if (entries_.empty()) return nullptr;
  return entries_[key % entries_.size()];
}

HashRing::HashRing(std::span<ServerState* const> servers) {
  for (ServerState* s : servers) {
    uint64_t n =
        static_cast<uint64_t>(s->weight.load(std::memory_order_relaxed)) * kPointsPerWeight;
    for (uint64_t i = 0; i < n; ++i) points_.push_back({hash_string(s->name, i + 1), s});
  }
  std::sort(points_.begin(), points_.end(), [](const Point& a, const Point& b) {
    return a.hash != b.hash ? a.hash < b.hash : a.server->name < b.server->name;
  });
}

size_t HashRing::first_at_or_after(uint64_t key) const {
  auto it = std::lower_bound(points_.begin(), points_.end(), key,
                             [](const Point& p, uint64_t k) { return p.hash < k; });
  return it == points_.end() ? 0 : static_cast<size_t>(it - points_.begin());
}

std::unique_ptr<Balancer> make_balancer(Algorithm algorithm,
                                        std::span<ServerState* const> servers) {
  switch (algorithm) {
    case Algorithm::RoundRobin:
      return std::make_unique<RoundRobin>(servers);
    case Algorithm::LeastConn:
      return std::make_unique<LeastConn>(servers);
    case Algorithm::Maglev:
      return std::make_unique<MaglevBalancer>(servers);
    case Algorithm::Ring:
      return std::make_unique<RingBalancer>(servers);
  }
  return nullptr;
}

}  // namespace edgepin::lb
