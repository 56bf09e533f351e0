#pragma once
// The stick table: what HAProxy's SSL-ID recipe gives
//   stick on payload_lv(43,1) if clienthello
//   stick store-response payload_lv(43,1) if serverhello
// plus TLS 1.2 tickets from a cleartext NewSessionTicket. Keys are TLS 1.2
// session IDs and (digests of) session tickets; values are server ids.
//
// Bounded: at most `capacity` entries, least recently used evicted first.
// Entries expire `expire` after they were last learned or matched, as
// HAProxy's `expire` does. Sharded by key hash, one mutex per shard, so
// worker threads rarely contend. The caller passes `now` so tests control
// time and a lookup costs no clock read.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace edgepin::lb {

enum class StickKeyKind : uint8_t { SessionId = 1, Ticket = 2 };

constexpr const char* to_string(StickKeyKind k) {
  return k == StickKeyKind::SessionId ? "session_id" : "ticket";
}

// A session ID (1..32 bytes, stored as is) or the SHA-256 of a ticket
// (tickets are up to 64 KiB; their digest identifies them as well).
class StickKey {
 public:
  static constexpr size_t kMaxBytes = 32;
  // nullopt for an empty or over-long session ID (nothing to stick on).
  static std::optional<StickKey> session_id(std::span<const uint8_t> id);
  // nullopt for an empty ticket (a client asking for one, not presenting one).
  static std::optional<StickKey> ticket(std::span<const uint8_t> ticket);

  StickKeyKind kind() const { return kind_; }
  std::span<const uint8_t> bytes() const { return {bytes_.data(), len_}; }
  std::string hex() const;
  bool operator==(const StickKey& o) const {
    return kind_ == o.kind_ && len_ == o.len_ &&
           std::equal(bytes_.begin(), bytes_.begin() + len_, o.bytes_.begin());
  }
  size_t hash() const;

 private:
  StickKeyKind kind_ = StickKeyKind::SessionId;
  uint8_t len_ = 0;
  std::array<uint8_t, kMaxBytes> bytes_{};
};

class StickTable {
 public:
  using Clock = std::chrono::steady_clock;

  struct Options {
    size_t capacity = 100000;
    std::chrono::milliseconds expire{std::chrono::minutes(30)};
    size_t shards = 16;
  };

  struct Entry {
    StickKey key;
    uint32_t server_id;
    Clock::time_point expires;
  };

  // Counters, one per outcome (read with stats()).
  struct Stats {
    uint64_t learned = 0;  // new entries
    uint64_t updated = 0;  // existing key re-learned (maybe another server)
    uint64_t hits = 0;
    uint64_t misses = 0;
    uint64_t expired = 0;  // removed because their time ran out
    uint64_t evicted = 0;  // removed to make room (LRU)
    size_t entries = 0;
  };

  explicit StickTable(Options options);

  // Binds `key` to `server_id` (overwrites: a redispatched client's entry
  // moves to its new server). Evicts the least recently used entry of the
  // shard when it is full.
  void learn(const StickKey& key, uint32_t server_id, Clock::time_point now);
  // The server bound to `key`, refreshing its expiry; nullopt when absent or
  // expired (an expired entry is removed on the way).
  std::optional<uint32_t> lookup(const StickKey& key, Clock::time_point now);
  // Removes every entry; returns how many there were.
  size_t clear();
  // Removes expired entries; returns how many. Cheap: each shard's LRU list
  // is ordered by last use, so expired entries sit at its tail.
  size_t purge_expired(Clock::time_point now);
  // A copy of up to `limit` entries (for `show table`).
  std::vector<Entry> snapshot(size_t limit) const;
  Stats stats() const;
  size_t capacity() const { return options_.capacity; }

 private:
  struct KeyHash {
    size_t operator()(const StickKey& k) const { return k.hash(); }
  };
  struct Shard {
    mutable std::mutex mutex;
    std::list<Entry> lru;  // front = most recently used
    std::unordered_map<StickKey, std::list<Entry>::iterator, KeyHash> index;
    size_t capacity = 0;
    Stats stats;
  };
  Shard& shard_for(const StickKey& key) { return *shards_[key.hash() % shards_.size()]; }

  Options options_;
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace edgepin::lb
