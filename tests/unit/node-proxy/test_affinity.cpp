#include <catch2/catch.hpp>

#include <vector>

#include "affinity.h"

using namespace edgepin;
using namespace edgepin::nodeproxy::affinity;

namespace {

std::vector<uint8_t> key(uint8_t fill) { return std::vector<uint8_t>(32, fill); }

config::ClusterConfig cluster(config::AffinityMode mode) {
  config::ClusterConfig c;
  c.name = "demo";
  c.affinity.mode = mode;
  for (uint16_t i = 1; i <= 3; ++i) {
    config::Node n;
    n.name = "node" + std::to_string(i);
    n.tag = i;
    c.nodes.push_back(n);
  }
  return c;
}

// Field storage for a FieldList: the views point into `storage`.
struct Fields {
  std::vector<std::string> storage;
  std::vector<http1::Field> fields;
  Fields(std::initializer_list<std::pair<std::string, std::string>> kv) {
    storage.reserve(kv.size() * 2);
    for (auto& [k, v] : kv) {
      storage.push_back(k);
      storage.push_back(v);
    }
    for (size_t i = 0; i < storage.size(); i += 2) fields.push_back({storage[i], storage[i + 1]});
  }
  http1::FieldList list() const { return http1::FieldList(fields); }
};

constexpr uint32_t kNow = 1'800'000'000;

}  // namespace

TEST_CASE("affinity cookie: round trip, tamper, forge, wrong cluster, age") {
  CookieCodec codec(key(7), "demo");
  std::string v = codec.encode(2, kNow);
  CHECK(v.size() == 31);
  auto d = codec.decode(v, kNow, std::nullopt);
  REQUIRE(d);
  CHECK(d->tag == 2);
  CHECK(d->issued_at == kNow);
  // Every single-character change is refused.
  for (size_t i = 0; i < v.size(); ++i) {
    std::string t = v;
    t[i] = t[i] == 'A' ? 'B' : 'A';
    CHECK_FALSE(codec.decode(t, kNow, std::nullopt));
  }
  CHECK_FALSE(codec.decode(v + "A", kNow, std::nullopt));
  CHECK_FALSE(codec.decode(v.substr(1), kNow, std::nullopt));
  CHECK_FALSE(codec.decode("", kNow, std::nullopt));
  CHECK_FALSE(codec.decode(std::string(31, '='), kNow, std::nullopt));
  // Another key or another cluster name: not ours.
  CHECK_FALSE(CookieCodec(key(8), "demo").decode(v, kNow, std::nullopt));
  CHECK_FALSE(CookieCodec(key(7), "other").decode(v, kNow, std::nullopt));
  // Age limits, with a little clock skew allowed.
  auto day = std::chrono::seconds(86400);
  CHECK(codec.decode(v, kNow + 86400, day));
  CHECK_FALSE(codec.decode(v, kNow + 86401, day));
  CHECK(codec.decode(v, kNow - 60, day));
  CHECK_FALSE(codec.decode(v, kNow - 3600, day));
}

TEST_CASE("find_cookie parses cookie-strings over several Cookie fields") {
  Fields f{{"Host", "x"},
           {"Cookie", "a=1; JSESSIONID=ABC.node2 ;b=\"q\""},
           {"cookie", "EDGEPIN_NODE=zz"}};
  CHECK(find_cookie(f.list(), "JSESSIONID") == "ABC.node2");
  CHECK(find_cookie(f.list(), "b") == "q");
  CHECK(find_cookie(f.list(), "EDGEPIN_NODE") == "zz");
  CHECK_FALSE(find_cookie(f.list(), "jsessionid"));  // names are case-sensitive
  CHECK_FALSE(find_cookie(f.list(), "missing"));
  Fields bad{{"Cookie", "novalue; =x; ;"}};
  CHECK_FALSE(find_cookie(bad.list(), "novalue"));
}

TEST_CASE("jvm_route and response_sets_cookie") {
  CHECK(jvm_route("ABCDEF.node1") == "node1");
  CHECK(jvm_route("A.B.node3") == "node3");
  CHECK_FALSE(jvm_route("ABCDEF"));
  CHECK_FALSE(jvm_route("ABCDEF."));
  CHECK_FALSE(jvm_route(".node1"));
  Fields r{{"Set-Cookie", "JSESSIONID=ABC; Path=/; HttpOnly"}};
  CHECK(response_sets_cookie(r.list(), "JSESSIONID"));
  Fields other{{"Set-Cookie", "JSESSIONIDX=ABC"}, {"Set-Cookie", "JSESSIONID=; Max-Age=0"}};
  CHECK_FALSE(response_sets_cookie(other.list(), "JSESSIONID"));
}

TEST_CASE("set_cookie_value writes the configured attributes") {
  config::AffinityConfig cfg;
  cfg.cookie_name = "EDGEPIN_NODE";
  cfg.path = "/app";
  cfg.max_age = std::chrono::seconds(3600);
  CHECK(set_cookie_value(cfg, "V", true) ==
        "EDGEPIN_NODE=V; Path=/app; Max-Age=3600; Secure; HttpOnly; SameSite=Lax");
  // Secure "auto": not over plain HTTP, where browsers would drop it.
  CHECK(set_cookie_value(cfg, "V", false) ==
        "EDGEPIN_NODE=V; Path=/app; Max-Age=3600; HttpOnly; SameSite=Lax");
  cfg.secure = config::CookieSecure::Always;
  cfg.http_only = false;
  cfg.same_site = config::SameSite::Strict;
  cfg.domain = "example.com";
  cfg.max_age.reset();
  CHECK(set_cookie_value(cfg, "V", false) ==
        "EDGEPIN_NODE=V; Path=/app; Domain=example.com; Secure; SameSite=Strict");
}

TEST_CASE("decide: cookie mode") {
  auto c = cluster(config::AffinityMode::Cookie);
  CookieCodec codec(key(1), "demo");
  const config::Node& self = c.nodes[0];
  bool up = true;
  auto peer_up = [&](const config::Node&) { return up; };
  auto run = [&](const Fields& f, bool relayed = false) {
    Request r;
    auto list = f.list();
    r.fields = &list;
    r.relayed_in = relayed;
    r.now = kNow;
    return decide(c, self, &codec, r, peer_up);
  };
  Fields none{{"Host", "x"}};
  auto d = run(none);
  CHECK(d.outcome == Outcome::NoCookie);
  CHECK(d.issue_cookie);

  Fields mine{{"Cookie", "EDGEPIN_NODE=" + codec.encode(1, kNow)}};
  d = run(mine);
  CHECK(d.outcome == Outcome::Local);
  CHECK_FALSE(d.issue_cookie);

  Fields theirs{{"Cookie", "EDGEPIN_NODE=" + codec.encode(3, kNow)}};
  d = run(theirs);
  CHECK(d.outcome == Outcome::Relay);
  REQUIRE(d.owner);
  CHECK(d.owner->name == "node3");
  // Arrived over the peer link: never relayed again.
  CHECK(run(theirs, true).outcome == Outcome::Relayed);
  // Owner down: served here, and the next session's cookie names us.
  up = false;
  d = run(theirs);
  CHECK(d.outcome == Outcome::OwnerDown);
  CHECK(d.issue_cookie);
  up = true;

  Fields forged{{"Cookie", "EDGEPIN_NODE=" + CookieCodec(key(2), "demo").encode(3, kNow)}};
  CHECK(run(forged).outcome == Outcome::BadMac);
  Fields unknown{{"Cookie", "EDGEPIN_NODE=" + codec.encode(9, kNow)}};
  CHECK(run(unknown).outcome == Outcome::UnknownOwner);
}

TEST_CASE("decide: jvmroute and none modes") {
  auto c = cluster(config::AffinityMode::JvmRoute);
  const config::Node& self = c.nodes[1];
  auto up = [](const config::Node&) { return true; };
  auto run = [&](const Fields& f) {
    Request r;
    auto list = f.list();
    r.fields = &list;
    r.now = kNow;
    return decide(c, self, nullptr, r, up);
  };
  Fields to3{{"Cookie", "JSESSIONID=0123ABCD.node3"}};
  auto d = run(to3);
  CHECK(d.outcome == Outcome::Relay);
  CHECK(d.owner->name == "node3");
  CHECK_FALSE(d.issue_cookie);
  Fields local{{"Cookie", "JSESSIONID=0123ABCD.node2"}};
  CHECK(run(local).outcome == Outcome::Local);
  Fields no_route{{"Cookie", "JSESSIONID=0123ABCD"}};
  CHECK(run(no_route).outcome == Outcome::NoCookie);
  Fields bad{{"Cookie", "JSESSIONID=0123ABCD.nodeX"}};
  CHECK(run(bad).outcome == Outcome::UnknownOwner);

  auto off = cluster(config::AffinityMode::None);
  Request r;
  auto list = to3.list();
  r.fields = &list;
  CHECK(decide(off, off.nodes[0], nullptr, r, up).outcome == Outcome::Disabled);
}
