#include "stick_table.h"

#include <openssl/sha.h>

#include <algorithm>

#include "balancer.h"

namespace edgepin::lb {

std::optional<StickKey> StickKey::session_id(std::span<const uint8_t> id) {
  if (id.empty() || id.size() > kMaxBytes) return std::nullopt;
  StickKey k;
  k.kind_ = StickKeyKind::SessionId;
  k.len_ = static_cast<uint8_t>(id.size());
  std::copy(id.begin(), id.end(), k.bytes_.begin());
  return k;
}

std::optional<StickKey> StickKey::ticket(std::span<const uint8_t> ticket) {
  if (ticket.empty()) return std::nullopt;
  static_assert(SHA256_DIGEST_LENGTH == kMaxBytes);
  StickKey k;
  k.kind_ = StickKeyKind::Ticket;
  k.len_ = kMaxBytes;
  SHA256(ticket.data(), ticket.size(), k.bytes_.data());
  return k;
}

std::string StickKey::hex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(len_ * 2);
  for (size_t i = 0; i < len_; ++i) {
    out += kDigits[bytes_[i] >> 4];
    out += kDigits[bytes_[i] & 0xf];
  }
  return out;
}

size_t StickKey::hash() const {
  return static_cast<size_t>(hash_bytes(bytes(), static_cast<uint64_t>(kind_)));
}

StickTable::StickTable(Options options) : options_(options) {
  size_t n = std::max<size_t>(1, std::min(options_.shards, std::max<size_t>(1, options_.capacity)));
  for (size_t i = 0; i < n; ++i) {
    auto shard = std::make_unique<Shard>();
    // Spread the capacity so the shards add up to exactly `capacity`.
    shard->capacity = options_.capacity / n + (i < options_.capacity % n ? 1 : 0);
    shards_.push_back(std::move(shard));
  }
}

void StickTable::learn(const StickKey& key, uint32_t server_id, Clock::time_point now) {
  Shard& s = shard_for(key);
  if (s.capacity == 0) return;
  std::lock_guard lock(s.mutex);
  Clock::time_point expires = now + options_.expire;
  if (auto it = s.index.find(key); it != s.index.end()) {
    it->second->server_id = server_id;
    it->second->expires = expires;
    s.lru.splice(s.lru.begin(), s.lru, it->second);
    ++s.stats.updated;
    return;
  }
  if (s.lru.size() >= s.capacity) {
    // Prefer dropping an expired tail entry over evicting a live one.
    const Entry& victim = s.lru.back();
    if (victim.expires <= now)
      ++s.stats.expired;
    else
      ++s.stats.evicted;
    s.index.erase(victim.key);
    s.lru.pop_back();
  }
  s.lru.push_front(Entry{key, server_id, expires});
  s.index.emplace(key, s.lru.begin());
  ++s.stats.learned;
}

std::optional<uint32_t> StickTable::lookup(const StickKey& key, Clock::time_point now) {
  Shard& s = shard_for(key);
  std::lock_guard lock(s.mutex);
  auto it = s.index.find(key);
  if (it == s.index.end()) {
    ++s.stats.misses;
    return std::nullopt;
  }
  if (it->second->expires <= now) {
    s.lru.erase(it->second);
    s.index.erase(it);
    ++s.stats.expired;
    ++s.stats.misses;
    return std::nullopt;
  }
  it->second->expires = now + options_.expire;
  s.lru.splice(s.lru.begin(), s.lru, it->second);
  ++s.stats.hits;
  return it->second->server_id;
}

size_t StickTable::clear() {
  size_t n = 0;
  for (auto& s : shards_) {
    std::lock_guard lock(s->mutex);
    n += s->lru.size();
    s->lru.clear();
    s->index.clear();
  }
  return n;
}

size_t StickTable::purge_expired(Clock::time_point now) {
  size_t n = 0;
  for (auto& s : shards_) {
    std::lock_guard lock(s->mutex);
    while (!s->lru.empty() && s->lru.back().expires <= now) {
      s->index.erase(s->lru.back().key);
      s->lru.pop_back();
      ++s->stats.expired;
      ++n;
    }
  }
  return n;
}

std::vector<StickTable::Entry> StickTable::snapshot(size_t limit) const {
  std::vector<Entry> out;
  for (const auto& s : shards_) {
    std::lock_guard lock(s->mutex);
    for (const Entry& e : s->lru) {
      if (out.size() >= limit) return out;
      out.push_back(e);
    }
  }
  return out;
}

StickTable::Stats StickTable::stats() const {
  Stats total;
  for (const auto& s : shards_) {
    std::lock_guard lock(s->mutex);
    total.learned += s->stats.learned;
    total.updated += s->stats.updated;
    total.hits += s->stats.hits;
    total.misses += s->stats.misses;
    total.expired += s->stats.expired;
    total.evicted += s->stats.evicted;
    total.entries += s->lru.size();
  }
  return total;
}

}  // namespace edgepin::lb
