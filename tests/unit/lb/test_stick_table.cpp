#include <catch2/catch.hpp>

#include <random>
#include <thread>

#include "stick_table.h"

using edgepin::lb::StickKey;
using edgepin::lb::StickKeyKind;
using edgepin::lb::StickTable;
using namespace std::chrono_literals;

namespace {

StickKey sid(uint32_t n) {
  std::array<uint8_t, 32> b{};
  for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(n >> (8 * i));
  b[31] = 0xa5;
  return *StickKey::session_id(b);
}

StickTable::Options opts(size_t capacity, std::chrono::milliseconds expire, size_t shards = 1) {
  StickTable::Options o;
  o.capacity = capacity;
  o.expire = expire;
  o.shards = shards;
  return o;
}

const StickTable::Clock::time_point t0{};

}  // namespace

TEST_CASE("stick keys: session IDs kept as is, tickets by digest, empty rejected") {
  std::vector<uint8_t> id(32, 7);
  auto k = StickKey::session_id(id);
  REQUIRE(k);
  CHECK(k->kind() == StickKeyKind::SessionId);
  CHECK(std::vector<uint8_t>(k->bytes().begin(), k->bytes().end()) == id);
  CHECK_FALSE(StickKey::session_id({}));
  CHECK_FALSE(StickKey::session_id(std::vector<uint8_t>(33, 1)));
  CHECK(StickKey::session_id(std::vector<uint8_t>(1, 1)));

  std::vector<uint8_t> ticket(200, 9);
  auto t1 = StickKey::ticket(ticket);
  REQUIRE(t1);
  CHECK(t1->kind() == StickKeyKind::Ticket);
  CHECK(t1->bytes().size() == 32);
  CHECK(*t1 == *StickKey::ticket(ticket));
  ticket[199] = 8;
  CHECK_FALSE(*t1 == *StickKey::ticket(ticket));
  CHECK_FALSE(StickKey::ticket({}));
  // The same 32 bytes as a session ID and as a ticket are different keys.
  std::vector<uint8_t> digest(t1->bytes().begin(), t1->bytes().end());
  CHECK_FALSE(*t1 == *StickKey::session_id(digest));
  CHECK(sid(1).hex().size() == 64);
}

TEST_CASE("stick table: learn, match, overwrite") {
  StickTable table(opts(10, 30s));
  CHECK_FALSE(table.lookup(sid(1), t0));
  table.learn(sid(1), 2, t0);
  REQUIRE(table.lookup(sid(1), t0 + 1s) == 2u);
  table.learn(sid(1), 0, t0 + 2s);  // redispatched: the entry follows
  CHECK(table.lookup(sid(1), t0 + 3s) == 0u);
  auto st = table.stats();
  CHECK(st.learned == 1);
  CHECK(st.updated == 1);
  CHECK(st.hits == 2);
  CHECK(st.misses == 1);
  CHECK(st.entries == 1);
}

TEST_CASE("stick table: entries expire after their last use") {
  StickTable table(opts(10, 10s));
  table.learn(sid(1), 1, t0);
  table.learn(sid(2), 2, t0);
  CHECK(table.lookup(sid(1), t0 + 9s) == 1u);   // refreshed: now expires at 19 s
  CHECK_FALSE(table.lookup(sid(2), t0 + 10s));  // expired exactly at 10 s
  CHECK(table.lookup(sid(1), t0 + 18s) == 1u);
  CHECK(table.purge_expired(t0 + 100s) == 1);
  CHECK(table.stats().entries == 0);
  CHECK(table.stats().expired == 2);
}

TEST_CASE("stick table: full table evicts the least recently used entry") {
  StickTable table(opts(3, 1h));
  table.learn(sid(1), 1, t0);
  table.learn(sid(2), 2, t0 + 1s);
  table.learn(sid(3), 3, t0 + 2s);
  REQUIRE(table.lookup(sid(1), t0 + 3s) == 1u);  // 1 is now the most recent
  table.learn(sid(4), 4, t0 + 4s);               // evicts 2
  CHECK_FALSE(table.lookup(sid(2), t0 + 5s));
  CHECK(table.lookup(sid(1), t0 + 5s) == 1u);
  CHECK(table.lookup(sid(3), t0 + 5s) == 3u);
  CHECK(table.lookup(sid(4), t0 + 5s) == 4u);
  CHECK(table.stats().evicted == 1);
  CHECK(table.stats().entries == 3);
}

TEST_CASE("stick table: an expired tail entry is dropped before a live one") {
  StickTable table(opts(2, 10s));
  table.learn(sid(1), 1, t0);
  table.learn(sid(2), 2, t0 + 5s);
  table.learn(sid(3), 3, t0 + 11s);  // 1 expired at 10 s: reclaimed, not evicted
  auto st = table.stats();
  CHECK(st.expired == 1);
  CHECK(st.evicted == 0);
  CHECK(table.lookup(sid(2), t0 + 12s) == 2u);
}

TEST_CASE("stick table: sharded capacity adds up and stays bounded") {
  StickTable table(opts(1000, 1h, 16));
  for (uint32_t i = 0; i < 5000; ++i) table.learn(sid(i), i % 3, t0);
  auto st = table.stats();
  CHECK(st.entries <= 1000);
  CHECK(st.entries >= 900);  // shards fill unevenly, but not by much
  CHECK(st.learned == 5000);
  CHECK(st.evicted == 5000 - st.entries);
  CHECK(table.snapshot(10).size() == 10);
  CHECK(table.clear() == st.entries);
  CHECK(table.stats().entries == 0);
}

TEST_CASE("stick table: zero capacity stores nothing") {
  StickTable table(opts(0, 1h));
  table.learn(sid(1), 1, t0);
  CHECK_FALSE(table.lookup(sid(1), t0));
}

TEST_CASE("stick table: concurrent learners and readers agree and stay bounded") {
  StickTable table(opts(4096, 1h, 16));
  constexpr int kThreads = 4;
  constexpr uint32_t kOps = 20000;
  std::atomic<uint64_t> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<uint32_t>(t));
      for (uint32_t i = 0; i < kOps; ++i) {
        uint32_t k = rng() % 8192;
        // Every thread binds key k to the same server, so any hit must
        // return k % 5: a torn or mixed-up entry would show here.
        if (rng() % 2)
          table.learn(sid(k), k % 5, t0);
        else if (auto v = table.lookup(sid(k), t0); v && *v != k % 5)
          ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  auto st = table.stats();
  CHECK(wrong == 0);
  CHECK(st.entries <= 4096);
  CHECK(st.hits + st.misses + st.learned + st.updated == kThreads * kOps);
  for (const auto& e : table.snapshot(5000)) {
    uint32_t k =
        e.key.bytes()[0] | e.key.bytes()[1] << 8 | e.key.bytes()[2] << 16 | e.key.bytes()[3] << 24;
    CHECK(e.server_id == k % 5);
  }
}
