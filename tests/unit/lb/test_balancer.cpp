#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <set>

#include "balancer.h"

using namespace edgepin::lb;

namespace {

// Owns a set of servers and the pointer list balancers take.
struct Pool {
  std::vector<std::unique_ptr<ServerState>> owned;
  std::vector<ServerState*> ptrs;

  explicit Pool(std::vector<uint32_t> weights) {
    for (size_t i = 0; i < weights.size(); ++i) add("node" + std::to_string(i + 1), weights[i]);
  }
  ServerState* add(const std::string& name, uint32_t weight) {
    auto s = std::make_unique<ServerState>();
    s->id = static_cast<uint32_t>(owned.size());
    s->name = name;
    s->weight = weight;
    ptrs.push_back(s.get());
    owned.push_back(std::move(s));
    return ptrs.back();
  }
  ServerState& operator[](size_t i) { return *ptrs[i]; }
};

std::map<std::string, int> spread(Balancer& b, int picks, bool hashed) {
  std::map<std::string, int> counts;
  for (int i = 0; i < picks; ++i) {
    ServerState* s = b.pick(hashed ? hash_string(std::to_string(i)) : 0, nullptr);
    REQUIRE(s);
    ++counts[s->name];
  }
  return counts;
}

// For each of `keys` keys, the server a hash balancer picks.
std::vector<std::string> assignment(Balancer& b, int keys) {
  std::vector<std::string> out;
  for (int i = 0; i < keys; ++i) {
    ServerState* s = b.pick(hash_string("client-" + std::to_string(i)), nullptr);
    out.push_back(s ? s->name : "");
  }
  return out;
}

}  // namespace

TEST_CASE("roundrobin: equal weights take strict turns") {
  Pool pool({100, 100, 100});
  auto b = make_balancer(Algorithm::RoundRobin, pool.ptrs);
  std::vector<std::string> seq;
  for (int i = 0; i < 9; ++i) seq.push_back(b->pick(0, nullptr)->name);
  for (int i = 0; i < 9; i += 3) {
    std::set<std::string> window(seq.begin() + i, seq.begin() + i + 3);
    CHECK(window.size() == 3);
  }
  auto c = spread(*b, 300, false);
  CHECK(c["node1"] == 100);
  CHECK(c["node2"] == 100);
  CHECK(c["node3"] == 100);
}

TEST_CASE("roundrobin: weights give exact proportions, smoothly interleaved") {
  Pool pool({1, 2, 3});
  auto b = make_balancer(Algorithm::RoundRobin, pool.ptrs);
  auto c = spread(*b, 600, false);
  CHECK(c["node1"] == 100);
  CHECK(c["node2"] == 200);
  CHECK(c["node3"] == 300);
  // Smooth: the heaviest server never gets more than two in a row.
  std::string prev;
  int run = 0, longest = 0;
  for (int i = 0; i < 60; ++i) {
    std::string n = b->pick(0, nullptr)->name;
    run = n == prev ? run + 1 : 1;
    longest = std::max(longest, run);
    prev = n;
  }
  CHECK(longest <= 2);
}

TEST_CASE("roundrobin: skips down, drained, excluded and zero-weight servers") {
  Pool pool({100, 100, 100, 0});
  auto b = make_balancer(Algorithm::RoundRobin, pool.ptrs);
  pool[1].healthy = false;
  pool[2].admin = AdminState::Drain;
  for (int i = 0; i < 20; ++i) CHECK(b->pick(0, nullptr)->name == "node1");
  CHECK(b->pick(0, pool.ptrs[0]) == nullptr);  // the only usable one is excluded
  pool[0].admin = AdminState::Maint;
  CHECK(b->pick(0, nullptr) == nullptr);
  pool[2].admin = AdminState::Ready;
  CHECK(b->pick(0, nullptr)->name == "node3");
}

// Issue 12: with one node down the others shared new clients 2:1.
TEST_CASE("roundrobin: with a server down the others share new clients by weight") {
  SECTION("equal weights, the last of three down") {
    Pool p({100, 100, 100});
    auto b = make_balancer(Algorithm::RoundRobin, p.ptrs);
    p[2].healthy = false;
    auto counts = spread(*b, 3000, false);
    CHECK(counts.count("node3") == 0);
    CHECK(counts["node1"] == Approx(1500).epsilon(0.10));
    CHECK(counts["node2"] == Approx(1500).epsilon(0.10));
  }
  SECTION("the middle one of three down, then back") {
    Pool p({100, 100, 100});
    auto b = make_balancer(Algorithm::RoundRobin, p.ptrs);
    p[1].healthy = false;
    auto counts = spread(*b, 3000, false);
    CHECK(counts["node1"] == Approx(1500).epsilon(0.10));
    CHECK(counts["node3"] == Approx(1500).epsilon(0.10));
    p[1].healthy = true;
    counts = spread(*b, 3000, false);
    for (const char* n : {"node1", "node2", "node3"})
      CHECK(counts[n] == Approx(1000).epsilon(0.10));
  }
  SECTION("weights 3:2:1:1 with the weight-2 server down stay 3:1:1") {
    Pool p({300, 200, 100, 100});
    auto b = make_balancer(Algorithm::RoundRobin, p.ptrs);
    p[1].admin = AdminState::Maint;
    auto counts = spread(*b, 5000, false);
    CHECK(counts["node1"] == Approx(3000).epsilon(0.10));
    CHECK(counts["node3"] == Approx(1000).epsilon(0.10));
    CHECK(counts["node4"] == Approx(1000).epsilon(0.10));
  }
}

TEST_CASE("roundrobin: all weights zero schedule nothing") {
  Pool pool({0, 0});
  auto b = make_balancer(Algorithm::RoundRobin, pool.ptrs);
  CHECK(b->pick(0, nullptr) == nullptr);
}

TEST_CASE("leastconn: fewest active connections per weight wins, ties rotate") {
  Pool pool({100, 100, 200});
  auto b = make_balancer(Algorithm::LeastConn, pool.ptrs);
  pool[0].active = 5;
  pool[1].active = 3;
  pool[2].active = 8;  // 8/200 = 4/100: more than node2's 3/100
  CHECK(b->pick(0, nullptr)->name == "node2");
  pool[1].active = 5;  // node1 5/100, node2 5/100, node3 4/100
  CHECK(b->pick(0, nullptr)->name == "node3");
  CHECK(b->pick(0, pool.ptrs[2])->name != "node3");
  pool[0].active = pool[1].active = 0;
  pool[2].active = 0;
  std::map<std::string, int> counts;
  for (int i = 0; i < 30; ++i) ++counts[b->pick(0, nullptr)->name];
  CHECK(counts.size() == 3);  // idle servers all get some
  pool[1].healthy = false;
  for (int i = 0; i < 10; ++i) CHECK(b->pick(0, nullptr)->name != "node2");
}

TEST_CASE("leastconn: simulated connections stay balanced by weight") {
  Pool pool({100, 300});
  auto b = make_balancer(Algorithm::LeastConn, pool.ptrs);
  for (int i = 0; i < 400; ++i) ++b->pick(0, nullptr)->active;
  CHECK(pool[0].active == 100);
  CHECK(pool[1].active == 300);
}

TEST_CASE("consistent hashes spread keys by weight") {
  for (Algorithm a : {Algorithm::Maglev, Algorithm::Ring}) {
    INFO(to_string(a));
    Pool pool({100, 100, 100});
    auto b = make_balancer(a, pool.ptrs);
    auto c = spread(*b, 30000, true);
    for (auto& [name, n] : c) {
      INFO(name << " " << n);
      CHECK(n > 10000 * 0.85);
      CHECK(n < 10000 * 1.15);
    }
    Pool weighted({100, 200});
    auto w = make_balancer(a, weighted.ptrs);
    auto cw = spread(*w, 30000, true);
    double ratio = static_cast<double>(cw["node2"]) / cw["node1"];
    INFO("ratio " << ratio);
    CHECK(ratio > 1.7);
    CHECK(ratio < 2.3);
  }
}

TEST_CASE("consistent hashes: a down server moves only its own keys") {
  for (Algorithm a : {Algorithm::Maglev, Algorithm::Ring}) {
    INFO(to_string(a));
    Pool pool({100, 100, 100, 100});
    auto b = make_balancer(a, pool.ptrs);
    auto before = assignment(*b, 5000);
    pool[2].healthy = false;
    auto after = assignment(*b, 5000);
    std::map<std::string, int> moved_to;
    for (size_t i = 0; i < before.size(); ++i) {
      if (before[i] != "node3") {
        CHECK(after[i] == before[i]);
      } else {
        CHECK(after[i] != "node3");
        ++moved_to[after[i]];
      }
    }
    // The down server's keys spread over all the others.
    CHECK(moved_to.size() == 3);
    pool[2].healthy = true;
    CHECK(assignment(*b, 5000) == before);
  }
}

TEST_CASE("consistent hashes: removing a server from the config disrupts little") {
  for (Algorithm a : {Algorithm::Maglev, Algorithm::Ring}) {
    INFO(to_string(a));
    Pool four({100, 100, 100, 100});
    Pool three({100, 100, 100});  // same names node1..node3, node4 gone
    auto b4 = make_balancer(a, four.ptrs);
    auto b3 = make_balancer(a, three.ptrs);
    auto before = assignment(*b4, 10000);
    auto after = assignment(*b3, 10000);
    int kept_moved = 0, kept = 0;
    for (size_t i = 0; i < before.size(); ++i) {
      if (before[i] == "node4") continue;
      ++kept;
      if (after[i] != before[i]) ++kept_moved;
    }
    INFO("moved " << kept_moved << " of " << kept);
    // Ring: exactly none; Maglev: a few percent (the paper's bound).
    CHECK(kept_moved <= kept * 0.05);
    if (a == Algorithm::Ring) CHECK(kept_moved == 0);
  }
}

TEST_CASE("consistent hashes are deterministic across instances") {
  for (Algorithm a : {Algorithm::Maglev, Algorithm::Ring}) {
    Pool p1({100, 50, 100}), p2({100, 50, 100});
    auto b1 = make_balancer(a, p1.ptrs);
    auto b2 = make_balancer(a, p2.ptrs);
    CHECK(assignment(*b1, 2000) == assignment(*b2, 2000));
  }
}

TEST_CASE("maglev table is fully populated") {
  Pool pool({100, 1});
  MaglevTable t(pool.ptrs);
  REQUIRE(t.size() == MaglevTable::kSize);
  int light = 0;
  for (uint64_t k = 0; k < MaglevTable::kSize; ++k) {
    ServerState* s = t.lookup(k);
    REQUIRE(s);
    light += s->name == "node2";
  }
  // weight 1 of 101: about 1 % of the slots.
  CHECK(light > 400);
  CHECK(light < 900);
}
