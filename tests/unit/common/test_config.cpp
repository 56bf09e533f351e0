// Configuration loading (common/config*.{h,cpp}), socket addresses and CIDRs
// (common/base/net_address.*) and the command line of both binaries
// (common/app/cli.*, lb/main.cpp, node-proxy/main.cpp).
//
// The base of every case is the repository's conf/ with a PKI made by
// deploy/make-pki.sh, so the examples are proven valid and every broken
// case is one mutation away from what operators copy.
#include <sys/stat.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli.h"
#include "config.h"
#include "edgepin/version.h"
#include "net_address.h"
#include "tests/helpers/process.h"
#include "tests/helpers/temp_dir.h"
#include "tests/helpers/test_pki.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using edgepin::Cidr;
using edgepin::IpAddress;
using edgepin::SocketAddress;
using Json = edgepin::config::Json;
namespace config = edgepin::config;
namespace cli = edgepin::cli;

namespace {

constexpr auto kProcessTimeout = 60s;

edgepin::test::ProcessResult run(std::vector<std::string> argv);

// --- files -----------------------------------------------------------------

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const fs::path& p, const std::string& text, fs::perms mode = fs::perms(0644)) {
  {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    REQUIRE(out);
    out << text;
  }
  fs::permissions(p, mode);
}

void chmod_file(const fs::path& p, unsigned mode) { REQUIRE(::chmod(p.c_str(), mode) == 0); }

// The repository's conf/ JSON files (never a PKI someone made in the
// source tree) plus a fresh PKI from deploy/make-pki.sh. Made once per
// test run: key generation takes seconds on a loaded machine.
const fs::path& good_dir() {
  static edgepin::test::TempDir root("edgepin-conf-");
  static const fs::path dir = [] {
    fs::path d = root / "conf";
    fs::create_directory(d);
    for (auto name : {"cluster.json", "lb.json", "node-proxy.json"}) {
      fs::copy_file(fs::path(EDGEPIN_SOURCE_DIR) / "conf" / name, d / name);
    }
    auto r = run({"bash", std::string(EDGEPIN_SOURCE_DIR) + "/deploy/make-pki.sh", d.string()});
    INFO(r.describe());
    REQUIRE(r.ok());
    return d;
  }();
  return dir;
}

// A private copy of the good directory for one case to break.
struct CaseDir {
  edgepin::test::TempDir temp{"edgepin-case-"};
  CaseDir() {
    // fs::copy keeps permission bits, which the key-mode checks look at.
    fs::copy(good_dir(), temp.path(), fs::copy_options::recursive);
  }
  const fs::path& path() const { return temp.path(); }
};

// --- mutations -------------------------------------------------------------

using Mutation = std::function<void(const fs::path& dir)>;

Json read_json(const fs::path& p) { return Json::parse(read_file(p)); }
void write_json(const fs::path& p, const Json& j) { write_file(p, j.dump(2) + "\n"); }

// Sets the value at `pointer` (creating objects on the way).
Mutation set(std::string file, std::string pointer, std::string json_value) {
  return [=](const fs::path& dir) {
    Json j = read_json(dir / file);
    j[Json::json_pointer(pointer)] = Json::parse(json_value);
    write_json(dir / file, j);
  };
}

Mutation remove(std::string file, std::string pointer) {
  return [=](const fs::path& dir) {
    Json j = read_json(dir / file);
    Json::json_pointer ptr(pointer);
    Json& parent = j[ptr.parent_pointer()];
    if (parent.is_array()) {
      parent.erase(static_cast<size_t>(std::stoul(ptr.back())));
    } else {
      REQUIRE(parent.erase(ptr.back()) == 1);
    }
    write_json(dir / file, j);
  };
}

Mutation raw(std::string file, std::string text) {
  return [=](const fs::path& dir) { write_file(dir / file, text); };
}

Mutation remove_file(std::string file) {
  return [=](const fs::path& dir) { REQUIRE(fs::remove(dir / file)); };
}

Mutation chmod_of(std::string file, unsigned mode) {
  return [=](const fs::path& dir) { chmod_file(dir / file, mode); };
}

Mutation all(std::vector<Mutation> steps) {
  return [=](const fs::path& dir) {
    for (const auto& s : steps) s(dir);
  };
}

// The certificate part of a make-pki bundle (certificate, then key).
std::string certificate_part(const std::string& bundle) {
  size_t key = bundle.find("-----BEGIN PRIVATE KEY-----");
  REQUIRE(key != std::string::npos);
  return bundle.substr(0, key);
}
std::string key_part(const std::string& bundle) {
  size_t key = bundle.find("-----BEGIN PRIVATE KEY-----");
  REQUIRE(key != std::string::npos);
  return bundle.substr(key);
}

// --- loading ---------------------------------------------------------------

struct Target {
  bool lb = true;
  std::string node;
};
const Target kLb{true, ""};
const Target kNode1{false, "node1"};

// The ConfigError's what(), or "(loaded)" if the directory is valid.
std::string load_error(const Target& target, const fs::path& dir) {
  try {
    if (target.lb) {
      (void)config::load_lb(dir);
    } else {
      (void)config::load_node_proxy(dir, target.node);
    }
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "(loaded)";
}

std::string with_dir(std::string text, const fs::path& dir) {
  const std::string token = "{dir}";
  for (size_t at = text.find(token); at != std::string::npos; at = text.find(token, at)) {
    text.replace(at, token.size(), dir.string());
    at += dir.string().size();
  }
  return text;
}

struct BadCase {
  Target target;
  Mutation mutate;
  std::string expected;  // "{dir}" stands for the case's directory
};

// --- processes -------------------------------------------------------------

edgepin::test::ProcessResult run(std::vector<std::string> argv) {
  edgepin::test::ProcessOptions options;
  options.argv = std::move(argv);
  return edgepin::test::run_process(std::move(options), kProcessTimeout);
}

edgepin::test::ProcessResult run_binary(const char* binary, std::vector<std::string> args) {
  args.insert(args.begin(), binary);
  return run(std::move(args));
}

edgepin::test::CertSpec cert_spec(const std::string& name, int valid_days) {
  edgepin::test::CertSpec spec;
  spec.common_name = name;
  spec.dns_names = {name};
  spec.valid_days = valid_days;
  return spec;
}

struct Argv {
  explicit Argv(std::vector<std::string> args) : strings(std::move(args)) {
    for (auto& s : strings) pointers.push_back(s.data());
    pointers.push_back(nullptr);
  }
  int argc() const { return static_cast<int>(strings.size()); }
  char* const* argv() { return pointers.data(); }
  std::vector<std::string> strings;
  std::vector<char*> pointers;
};

const cli::Program kLbProgram{"edgepin-lb", "test", false};
const cli::Program kNodeProgram{"edgepin-node-proxy", "test", true};

}  // namespace

// ===========================================================================

TEST_CASE("the repository's conf/ examples validate for the lb and every node", "[config]") {
  const fs::path& dir = good_dir();

  const config::LbConfigSet lb = config::load_lb(dir);
  CHECK(config::summary(lb) == "cluster \"demo\", 3 nodes, 2 frontends");
  CHECK(lb.warnings.empty());
  REQUIRE(lb.cluster.nodes.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    const config::Node& n = lb.cluster.nodes[i];
    CHECK(n.name == "node" + std::to_string(i + 1));
    CHECK(n.tag == i + 1);
    CHECK(n.address.to_string() == "127.0.0." + std::to_string(11 + i));
    CHECK(n.endpoint(config::NodePort::Tls).to_string() == n.address.to_string() + ":8443");
    CHECK(n.endpoint(config::NodePort::Http).to_string() == n.address.to_string() + ":8081");
    CHECK(n.endpoint(config::NodePort::Peer).to_string() == n.address.to_string() + ":9443");
    CHECK(n.weight == 100);
    REQUIRE(n.upstream);
    CHECK(n.upstream->to_string() == n.address.to_string() + ":8080");
  }
  CHECK(lb.cluster.affinity.mode == config::AffinityMode::Cookie);
  CHECK(lb.cluster.affinity.cookie_name == "EDGEPIN_NODE");
  CHECK(lb.cluster.affinity.key_file == dir / "keys/cluster.key");
  CHECK(lb.cluster.peer_ca_file == dir / "pki/ca.crt");

  REQUIRE(lb.lb.frontends.size() == 2);
  const config::Frontend& https = lb.lb.frontends[0];
  CHECK(https.name == "https");
  CHECK(https.mode == config::FrontendMode::Tls);
  REQUIRE(https.bind.size() == 1);
  CHECK(https.bind[0].to_string() == "127.0.0.1:443");
  CHECK(https.server_port == config::NodePort::Tls);
  CHECK(https.proxy_protocol == config::ProxyProtocol::V2);
  CHECK(https.inspect.timeout == 5000ms);
  const config::Frontend& http = lb.lb.frontends[1];
  CHECK(http.mode == config::FrontendMode::Tcp);
  CHECK(http.bind[0].to_string() == "127.0.0.1:80");
  CHECK(http.server_port == config::NodePort::Http);
  CHECK(lb.lb.health_check.type == config::HealthCheckType::Http);
  CHECK(lb.lb.health_check.port.resolve(lb.cluster.nodes[1]) == 8081);
  CHECK(lb.lb.health_check.path == "/_edgepin/health");
  CHECK(lb.lb.health_check.proxy_protocol == config::ProxyProtocol::V2);
  REQUIRE(lb.lb.stats);
  CHECK(lb.lb.stats->bind.to_string() == "127.0.0.1:8888");
  CHECK_FALSE(lb.lb.admin_socket);

  for (int i = 1; i <= 3; ++i) {
    const std::string name = "node" + std::to_string(i);
    const std::string addr = "127.0.0." + std::to_string(10 + i);
    INFO(name);
    const config::NodeConfigSet node = config::load_node_proxy(dir, name);
    CHECK(config::summary(node) == "cluster \"demo\", node \"" + name + "\" (tag " +
                                       std::to_string(i) +
                                       "), 2 listeners, 1 certificate, 2 peers");
    CHECK(node.warnings.empty());
    CHECK(node.self.name == name);
    REQUIRE(node.peers.size() == 2);
    for (const auto& p : node.peers) CHECK(p.name != name);
    REQUIRE(node.proxy.listeners.size() == 2);
    const config::Listener& tls = node.proxy.listeners[0];
    CHECK(tls.tls);
    CHECK(tls.bind.to_string() == addr + ":8443");
    CHECK(tls.proxy_protocol == config::AcceptProxy::V2);
    CHECK(tls.public_port == 443);
    REQUIRE(tls.trusted_proxies.size() == 2);
    CHECK(tls.trusted_proxies[0].contains(*IpAddress::parse("127.0.0.1")));
    CHECK_FALSE(tls.trusted_proxies[0].contains(*IpAddress::parse("127.0.0.2")));
    CHECK(tls.trusted_proxies[1].contains(*IpAddress::parse("::1")));
    const config::Listener& plain = node.proxy.listeners[1];
    CHECK_FALSE(plain.tls);
    CHECK(plain.bind.to_string() == addr + ":8081");
    CHECK(plain.public_port == 80);
    REQUIRE(node.proxy.tls);
    REQUIRE(node.proxy.tls->certificates.size() == 1);
    const fs::path pem = dir / ("pki/nodes/" + name + ".pem");
    CHECK(node.proxy.tls->certificates[0].cert_file == pem);
    CHECK(node.proxy.tls->certificates[0].key_file == pem);
    CHECK(node.proxy.tls->alpn == std::vector<std::string>{"http/1.1"});
    // cluster.json's per-node upstream overrides node-proxy.json's default.
    CHECK(node.proxy.upstream.address.to_string() == addr + ":8080");
    CHECK(node.proxy.peer.enabled);
    CHECK(node.proxy.peer.cert_file == dir / ("pki/peer/" + name + ".crt"));
    CHECK(node.proxy.peer.key_file == dir / ("pki/peer/" + name + ".key"));
    CHECK(node.cluster_key.size() == 32);
    CHECK(node.proxy.health.path == "/_edgepin/health");
    CHECK(node.proxy.stats.path == "/_edgepin/stats");
  }
}

TEST_CASE("deploy/make-pki.sh is idempotent and --force remakes", "[config][pki]") {
  CaseDir c;
  const fs::path ca = c.path() / "pki/ca.crt";
  const fs::path key = c.path() / "keys/cluster.key";
  const std::string ca_before = read_file(ca);
  const std::string key_before = read_file(key);
  const std::string script = std::string(EDGEPIN_SOURCE_DIR) + "/deploy/make-pki.sh";

  auto again = run({"bash", script, c.path().string()});
  REQUIRE(again.ok());
  CHECK(again.out.find("everything already present") != std::string::npos);
  CHECK(read_file(ca) == ca_before);
  CHECK(read_file(key) == key_before);

  // A node whose files are missing gets them; nothing else changes.
  fs::remove(c.path() / "pki/peer/node2.crt");
  auto fill = run({"bash", script, c.path().string()});
  REQUIRE(fill.ok());
  CHECK(fill.out ==
        "make-pki: created " + (c.path() / "pki/peer/node2.crt").string() + " and node2.key\n");
  CHECK(read_file(ca) == ca_before);
  CHECK(load_error(Target{false, "node2"}, c.path()) == "(loaded)");

  auto forced = run({"bash", script, "--force", c.path().string()});
  REQUIRE(forced.ok());
  CHECK(read_file(ca) != ca_before);
  CHECK(read_file(key) != key_before);
  struct stat st {};
  REQUIRE(::stat(key.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  for (auto n : {"node1", "node2", "node3"}) {
    CHECK(load_error(Target{false, n}, c.path()) == "(loaded)");
  }
}

TEST_CASE("broken configurations give one exact line naming file and JSON pointer", "[config]") {
  const std::vector<BadCase> cases = {
      // ---- cluster.json: the file and the reader ----
      {kLb, remove_file("cluster.json"), "{dir}/cluster.json: no such file"},
      {kLb, raw("cluster.json", "{\n  \"cluster\": {\"name\": \"demo\",}\n}\n"),
       "{dir}/cluster.json:2:30: invalid JSON: syntax error while parsing object key - "
       "unexpected '}'; expected string literal"},
      {kLb, raw("cluster.json", "[]"), "{dir}/cluster.json: expected object, got array"},
      {kLb, raw("cluster.json", R"({"cluster": {"name": "a", "name": "b"}, "nodes": []})"),
       "{dir}/cluster.json: /cluster: duplicate key \"name\""},
      {kLb, raw("cluster.json", R"({"nodes": [{"name": "n"}, {"tag": 1, "tag": 2}]})"),
       "{dir}/cluster.json: /nodes/1: duplicate key \"tag\""},
      {kLb, remove("cluster.json", "/cluster/name"),
       "{dir}/cluster.json: /cluster: missing required key \"name\""},
      {kLb,
       all({remove("cluster.json", "/cluster/name"),
            set("cluster.json", "/cluster/nmae", "\"demo\"")}),
       "{dir}/cluster.json: /cluster: unknown key \"nmae\" (did you mean \"name\"?)"},
      {kLb, set("cluster.json", "/cluster/colour", "\"blue\""),
       "{dir}/cluster.json: /cluster: unknown key \"colour\""},
      {kLb, set("cluster.json", "/cluster/affinity/http_olny", "true"),
       "{dir}/cluster.json: /cluster/affinity: unknown key \"http_olny\" (did you mean "
       "\"http_only\"?)"},
      {kLb, set("cluster.json", "/cluster/name", "42"),
       "{dir}/cluster.json: /cluster/name: expected string, got integer"},
      {kLb, set("cluster.json", "/cluster/name", "\"my demo\""),
       "{dir}/cluster.json: /cluster/name: invalid cluster name \"my demo\": use 1..64 "
       "characters of A-Z a-z 0-9 _ . -"},
      {kLb, set("cluster.json", "/cluster/tag_scheme", "\"edgepin-v2\""),
       "{dir}/cluster.json: /cluster/tag_scheme: expected one of \"edgepin-v1\", got "
       "\"edgepin-v2\""},
      // ---- cluster.json: affinity ----
      {kLb, set("cluster.json", "/cluster/affinity/mode", "\"source\""),
       "{dir}/cluster.json: /cluster/affinity/mode: expected one of \"cookie\", \"jvmroute\", "
       "\"none\", got \"source\""},
      {kLb, set("cluster.json", "/cluster/affinity/mode", "null"),
       "{dir}/cluster.json: /cluster/affinity/mode: expected one of \"cookie\", \"jvmroute\", "
       "\"none\", got null"},
      {kLb, set("cluster.json", "/cluster/affinity/cookie_name", "\"EDGEPIN NODE\""),
       "{dir}/cluster.json: /cluster/affinity/cookie_name: invalid cookie name \"EDGEPIN "
       "NODE\" (RFC 6265 token)"},
      {kLb, set("cluster.json", "/cluster/affinity/cookie_name", "\"JSESSIONID\""),
       "{dir}/cluster.json: /cluster/affinity/cookie_name: cookie_name must differ from "
       "session_cookie \"JSESSIONID\""},
      {kLb, set("cluster.json", "/cluster/affinity/same_site", "\"None\""),
       "{dir}/cluster.json: /cluster/affinity/same_site: \"None\" requires \"secure\": true "
       "(browsers drop SameSite=None cookies without Secure)"},
      {kLb, set("cluster.json", "/cluster/affinity/secure", "\"yes\""),
       "{dir}/cluster.json: /cluster/affinity/secure: expected true, false or \"auto\", got "
       "\"yes\""},
      {kLb, set("cluster.json", "/cluster/affinity/max_age_s", "0"),
       "{dir}/cluster.json: /cluster/affinity/max_age_s: value 0 out of range 1..34560000"},
      {kLb, set("cluster.json", "/cluster/affinity/path", "\"app\""),
       "{dir}/cluster.json: /cluster/affinity/path: cookie path \"app\" must start with '/' "
       "and hold no ';', space or control character"},
      // ---- cluster.json: nodes ----
      {kLb, set("cluster.json", "/nodes", "[]"), "{dir}/cluster.json: /nodes: must not be empty"},
      {kLb, set("cluster.json", "/nodes/2/tag", "1"),
       "{dir}/cluster.json: /nodes/2/tag: duplicate tag 1 (also /nodes/0)"},
      {kLb, set("cluster.json", "/nodes/1/name", "\"node1\""),
       "{dir}/cluster.json: /nodes/1/name: duplicate node name \"node1\" (also /nodes/0)"},
      {kLb, set("cluster.json", "/nodes/2/name", "\"NODE1\""),
       "{dir}/cluster.json: /nodes/2/name: duplicate node name \"NODE1\" (also /nodes/0; names "
       "are compared ignoring case)"},
      {kLb, set("cluster.json", "/nodes/0/name", "\"node/1\""),
       "{dir}/cluster.json: /nodes/0/name: invalid node name \"node/1\": use 1..32 characters "
       "of A-Z a-z 0-9 _ . -"},
      {kLb, set("cluster.json", "/nodes/0/name", "\"n123456789012345678901234567890123\""),
       "{dir}/cluster.json: /nodes/0/name: invalid node name "
       "\"n123456789012345678901234567890123\": use 1..32 characters of A-Z a-z 0-9 _ . -"},
      {kLb, set("cluster.json", "/nodes/0/tag", "0"),
       "{dir}/cluster.json: /nodes/0/tag: tag 0 out of range 1..65535"},
      {kLb, set("cluster.json", "/nodes/0/tag", "\"1\""),
       "{dir}/cluster.json: /nodes/0/tag: expected integer, got string"},
      {kLb, set("cluster.json", "/nodes/0/tag", "1.5"),
       "{dir}/cluster.json: /nodes/0/tag: expected integer, got non-integer number"},
      {kLb, set("cluster.json", "/nodes/1/tls_port", "70000"),
       "{dir}/cluster.json: /nodes/1/tls_port: port 70000 out of range 1..65535"},
      {kLb, set("cluster.json", "/nodes/1/http_port", "18446744073709551615"),
       "{dir}/cluster.json: /nodes/1/http_port: port 18446744073709551615 out of range "
       "1..65535"},
      {kLb, remove("cluster.json", "/nodes/1/peer_port"),
       "{dir}/cluster.json: /nodes/1: missing required key \"peer_port\""},
      {kLb, set("cluster.json", "/nodes/0/address", "\"127.0.0.256\""),
       "{dir}/cluster.json: /nodes/0/address: bad address \"127.0.0.256\": expected an IPv4 "
       "or IPv6 literal"},
      {kLb, set("cluster.json", "/nodes/0/address", "\"node1.example.com\""),
       "{dir}/cluster.json: /nodes/0/address: bad address \"node1.example.com\": expected an "
       "IPv4 or IPv6 literal"},
      {kLb, set("cluster.json", "/nodes/0/address", "\"0.0.0.0\""),
       "{dir}/cluster.json: /nodes/0/address: address 0.0.0.0 is not a unicast address"},
      {kLb, set("cluster.json", "/nodes/0/weight", "257"),
       "{dir}/cluster.json: /nodes/0/weight: weight 257 out of range 0..256"},
      {kLb, set("cluster.json", "/nodes/0/http_port", "8443"),
       "{dir}/cluster.json: /nodes/0/http_port: 127.0.0.11:8443 already used by "
       "/nodes/0/tls_port"},
      {kLb, set("cluster.json", "/nodes/1/address", "\"127.0.0.11\""),
       "{dir}/cluster.json: /nodes/1/tls_port: 127.0.0.11:8443 already used by "
       "/nodes/0/tls_port"},
      {kLb, set("cluster.json", "/nodes/0/upstream", "\"127.0.0.11\""),
       "{dir}/cluster.json: /nodes/0/upstream: bad address \"127.0.0.11\": expected IPv4:PORT "
       "or [IPv6]:PORT"},
      {kLb,
       all({set("cluster.json", "/nodes/0/weight", "0"),
            set("cluster.json", "/nodes/1/weight", "0"),
            set("cluster.json", "/nodes/2/weight", "0")}),
       "{dir}/cluster.json: /nodes: every node has weight 0; at least one must take new "
       "clients"},
      // ---- lb.json ----
      {kLb, remove_file("lb.json"), "{dir}/lb.json: no such file"},
      {kLb,
       [](const fs::path& dir) {
         fs::remove(dir / "lb.json");
         fs::create_directory(dir / "lb.json");
       },
       "{dir}/lb.json: not a regular file"},
      {kLb, remove("lb.json", "/frontends"), "{dir}/lb.json: missing required key \"frontends\""},
      {kLb, set("lb.json", "/threads", "-1"),
       "{dir}/lb.json: /threads: value -1 out of range 0..1024"},
      {kLb, set("lb.json", "/frontends/0/mode", "\"http\""),
       "{dir}/lb.json: /frontends/0/mode: expected one of \"tls\", \"tcp\", got \"http\""},
      {kLb, set("lb.json", "/frontends/1/name", "\"https\""),
       "{dir}/lb.json: /frontends/1/name: duplicate frontend name \"https\" (also /frontends/0)"},
      {kLb, set("lb.json", "/frontends/0/bind/0", "\"127.0.0.1\""),
       "{dir}/lb.json: /frontends/0/bind/0: bad address \"127.0.0.1\": expected IPv4:PORT, "
       "[IPv6]:PORT or *:PORT"},
      {kLb, set("lb.json", "/frontends/0/bind/0", "\"::1:443\""),
       "{dir}/lb.json: /frontends/0/bind/0: bad address \"::1:443\": expected IPv4:PORT, "
       "[IPv6]:PORT or *:PORT"},
      {kLb, set("lb.json", "/frontends/0/bind/0", "\"[::1]:99999\""),
       "{dir}/lb.json: /frontends/0/bind/0: port 99999 out of range 1..65535"},
      {kLb, set("lb.json", "/frontends/1/bind/0", "\"*:443\""),
       "{dir}/lb.json: /frontends/1/bind/0: bind 0.0.0.0:443 conflicts with /frontends/0/bind/0 "
       "(127.0.0.1:443)"},
      {kLb, set("lb.json", "/frontends/0/bind", "[]"),
       "{dir}/lb.json: /frontends/0/bind: must not be empty"},
      {kLb, set("lb.json", "/frontends/0/bind/0", "\"127.0.0.11:8443\""),
       "{dir}/lb.json: /frontends/0/bind/0: bind 127.0.0.11:8443 is the tls port of node "
       "\"node1\": the lb would connect to itself"},
      {kLb, set("lb.json", "/frontends/1/inspect", R"({"timeout_ms": 1000})"),
       "{dir}/lb.json: /frontends/1/inspect: applies only to \"mode\": \"tls\""},
      {kLb, set("lb.json", "/frontends/0/inspect/buffer_bytes", "100000"),
       "{dir}/lb.json: /frontends/0/inspect/buffer_bytes: value 100000 out of range 4096..65536"},
      {kLb, set("lb.json", "/frontends/0/inspect/on_failure", "\"drop\""),
       "{dir}/lb.json: /frontends/0/inspect/on_failure: expected one of \"balance\", \"reject\", "
       "got \"drop\""},
      // The lb holds no keys: there is no key for a certificate at all.
      {kLb, set("lb.json", "/frontends/0/certificate", "\"pki/nodes/node1.pem\""),
       "{dir}/lb.json: /frontends/0: unknown key \"certificate\""},
      {kLb, set("lb.json", "/frontends/0/server_port", "\"peer\""),
       "{dir}/lb.json: /frontends/0/server_port: expected one of \"tls\", \"http\", got \"peer\""},
      {kLb, set("lb.json", "/balance/algorithm", "\"random\""),
       "{dir}/lb.json: /balance/algorithm: expected one of \"roundrobin\", \"leastconn\", "
       "\"hash\", got \"random\""},
      {kLb, set("lb.json", "/timeouts/connect_ms", "0"),
       "{dir}/lb.json: /timeouts/connect_ms: value 0 out of range 1..86400000"},
      {kLb, set("lb.json", "/timeouts/client_ms", "0"),
       "{dir}/lb.json: /timeouts/client_ms: value 0 out of range 1..86400000"},
      {kLb, set("lb.json", "/timeouts/tunnel_ms", "-1"),
       "{dir}/lb.json: /timeouts/tunnel_ms: value -1 out of range 0..86400000"},
      {kLb, set("lb.json", "/timeouts/connect_ms", "\"5s\""),
       "{dir}/lb.json: /timeouts/connect_ms: expected integer, got string"},
      {kLb, set("lb.json", "/timeouts/conect_ms", "5000"),
       "{dir}/lb.json: /timeouts: unknown key \"conect_ms\" (did you mean \"connect_ms\"?)"},
      {kLb, set("lb.json", "/health_check/timeout_ms", "5000"),
       "{dir}/lb.json: /health_check/timeout_ms: timeout_ms 5000 must not exceed interval_ms "
       "2000"},
      {kLb, set("lb.json", "/health_check/type", "\"tcp\""),
       "{dir}/lb.json: /health_check/path: applies only to \"type\": \"http\""},
      {kLb, set("lb.json", "/health_check/path", "\"health\""),
       "{dir}/lb.json: /health_check/path: path \"health\" must start with '/' and hold no "
       "space, '?', '#' or control character"},
      {kLb, set("lb.json", "/health_check/port", "\"peer\""),
       "{dir}/lb.json: /health_check/port: expected \"tls\", \"http\" or a port number, got "
       "\"peer\""},
      {kLb, set("lb.json", "/health_check/port", "0"),
       "{dir}/lb.json: /health_check/port: port 0 out of range 1..65535"},
      {kLb, set("lb.json", "/stats/bind", "\"127.0.0.1:80\""),
       "{dir}/lb.json: /stats/bind: bind 127.0.0.1:80 conflicts with /frontends/1/bind/0 "
       "(127.0.0.1:80)"},
      {kLb, set("lb.json", "/admin_socket", R"({"path": "/run/edgepin/lb.sock", "mode": "0999"})"),
       "{dir}/lb.json: /admin_socket/mode: bad mode \"0999\": expected octal permissions like "
       "\"0660\""},
      {kLb, set("lb.json", "/admin_socket", R"({"mode": "0600"})"),
       "{dir}/lb.json: /admin_socket: missing required key \"path\""},
      {kLb, set("lb.json", "/log/level", "\"verbose\""),
       "{dir}/lb.json: /log/level: expected one of \"debug\", \"info\", \"warning\", \"error\", "
       "got \"verbose\""},
      {kLb, set("lb.json", "/log/facility", "\"local0\""),
       "{dir}/lb.json: /log/facility: applies only to \"target\": \"syslog\""},
      {kLb, set("lb.json", "/stick_table/expire_s", "-5"),
       "{dir}/lb.json: /stick_table/expire_s: value -5 out of range 1..604800"},
      // ---- node-proxy.json and the node's files ----
      {Target{false, "node9"}, [](const fs::path&) {},
       "{dir}/cluster.json: /nodes: no node named \"node9\" (nodes: node1, node2, node3)"},
      {kNode1, remove_file("node-proxy.json"), "{dir}/node-proxy.json: no such file"},
      // nlohmann reports the column of the last character it read: the end
      // of the unexpected token.
      {kNode1, raw("node-proxy.json", "{\"threads\": 0 \"listeners\": []}"),
       "{dir}/node-proxy.json:1:25: invalid JSON: syntax error while parsing object - "
       "unexpected string literal; expected '}'"},
      {kNode1, set("node-proxy.json", "/certs", "[]"),
       "{dir}/node-proxy.json: unknown key \"certs\""},
      {kNode1, set("node-proxy.json", "/listeners", "[]"),
       "{dir}/node-proxy.json: /listeners: must not be empty"},
      {kNode1, set("node-proxy.json", "/listeners/0/port", "\"peer\""),
       "{dir}/node-proxy.json: /listeners/0/port: expected \"tls\", \"http\" or a port number, "
       "got \"peer\""},
      {kNode1, set("node-proxy.json", "/listeners/0/proxy_protocol", "\"v3\""),
       "{dir}/node-proxy.json: /listeners/0/proxy_protocol: expected one of \"none\", \"v1\", "
       "\"v2\", \"any\", got \"v3\""},
      {kNode1, set("node-proxy.json", "/headers/underscore_fields", "\"allow\""),
       "{dir}/node-proxy.json: /headers/underscore_fields: expected one of \"drop\", \"pass\", "
       "got \"allow\""},
      {kNode1, set("node-proxy.json", "/headers/underscore_fields", "false"),
       "{dir}/node-proxy.json: /headers/underscore_fields: expected one of \"drop\", \"pass\", "
       "got boolean"},
      {kNode1, set("node-proxy.json", "/listeners/0/trusted_proxies/0", "\"127.0.0.1/33\""),
       "{dir}/node-proxy.json: /listeners/0/trusted_proxies/0: bad prefix length \"33\" in "
       "CIDR \"127.0.0.1/33\" (0..32)"},
      {kNode1, set("node-proxy.json", "/listeners/0/trusted_proxies/0", "\"127.0.0.1/8\""),
       "{dir}/node-proxy.json: /listeners/0/trusted_proxies/0: host bits set in CIDR "
       "\"127.0.0.1/8\" (did you mean \"127.0.0.0/8\"?)"},
      {kNode1, set("node-proxy.json", "/listeners/1/proxy_protocol", "\"none\""),
       "{dir}/node-proxy.json: /listeners/1/trusted_proxies: applies only when "
       "\"proxy_protocol\" is not \"none\""},
      {kNode1, set("node-proxy.json", "/listeners/1/port", "\"tls\""),
       "{dir}/node-proxy.json: /listeners/1: bind 127.0.0.11:8443 conflicts with /listeners/0 "
       "(127.0.0.11:8443)"},
      {kNode1, set("node-proxy.json", "/listeners/0/port", "9443"),
       "{dir}/node-proxy.json: /listeners/0: bind 127.0.0.11:9443 conflicts with "
       "{dir}/cluster.json /nodes/0/peer_port (127.0.0.11:9443)"},
      {kNode1, set("node-proxy.json", "/listeners/0/bind", "\"127.0.0.11:8443\""),
       "{dir}/node-proxy.json: /listeners/0/bind: bad address \"127.0.0.11:8443\": expected an "
       "IPv4 or IPv6 literal (no port: \"port\" sets it)"},
      {kNode1, remove("node-proxy.json", "/tls"),
       "{dir}/node-proxy.json: missing required key \"tls\" (listener /listeners/0 has "
       "\"tls\": true)"},
      {kNode1, remove_file("pki/nodes/node1.pem"),
       "{dir}/node-proxy.json: /tls/certificates/0: no such file: {dir}/pki/nodes/node1.pem"},
      {kNode1, chmod_of("pki/nodes/node1.pem", 0644),
       "{dir}/node-proxy.json: /tls/certificates/0: private key file {dir}/pki/nodes/node1.pem "
       "is readable by group or others (mode 0644; chmod 600 it)"},
      {kNode1, set("node-proxy.json", "/tls/certificates/0", "\"pki/nodes/{name}.pem\""),
       "{dir}/node-proxy.json: /tls/certificates/0: unknown placeholder \"{name}\" (only "
       "{node} is supported)"},
      {kNode1,
       [](const fs::path& dir) {
         const fs::path pem = dir / "pki/nodes/node1.pem";
         write_file(pem, certificate_part(read_file(pem)));
       },
       "{dir}/node-proxy.json: /tls/certificates/0: {dir}/pki/nodes/node1.pem: no private key "
       "in the file, nor in {dir}/pki/nodes/node1.pem.key or {dir}/pki/nodes/node1.key"},
      {kNode1,
       [](const fs::path& dir) {
         const fs::path pem = dir / "pki/nodes/node1.pem";
         write_file(pem,
                   certificate_part(read_file(pem)) + key_part(read_file(dir / "pki/nodes/node2.pem")),
                   fs::perms(0600));
       },
       "{dir}/node-proxy.json: /tls/certificates/0: private key {dir}/pki/nodes/node1.pem does "
       "not match certificate {dir}/pki/nodes/node1.pem"},
      {kNode1, raw("pki/nodes/node1.pem", "not a certificate\n"),
       "{dir}/node-proxy.json: /tls/certificates/0: {dir}/pki/nodes/node1.pem: no PEM "
       "certificate found"},
      {kNode1, set("node-proxy.json", "/tls/certificates/0", "\"pki/empty\""),
       "{dir}/node-proxy.json: /tls/certificates/0: no such file: {dir}/pki/empty"},
      {kNode1,
       all({[](const fs::path& dir) { fs::create_directory(dir / "pki/empty"); },
            set("node-proxy.json", "/tls/certificates/0", "\"pki/empty\"")}),
       "{dir}/node-proxy.json: /tls/certificates/0: {dir}/pki/empty: no certificate files in "
       "directory"},
      {kNode1, set("node-proxy.json", "/tls/default_certificate", "\"pki/nodes/node2.pem\""),
       "{dir}/node-proxy.json: /tls/default_certificate: {dir}/pki/nodes/node2.pem is not one "
       "of the certificates loaded by /tls/certificates"},
      {kNode1,
       set("node-proxy.json", "/tls/certificates",
           R"(["pki/nodes/node1.pem", "pki/nodes/{node}.pem"])"),
       "{dir}/node-proxy.json: /tls/certificates/1: certificate {dir}/pki/nodes/node1.pem is "
       "already loaded by /tls/certificates/0"},
      {kNode1, set("node-proxy.json", "/tls/min_version", "\"1.1\""),
       "{dir}/node-proxy.json: /tls/min_version: expected one of \"1.2\", \"1.3\", got \"1.1\""},
      {kNode1,
       all({set("node-proxy.json", "/tls/min_version", "\"1.3\""),
            set("node-proxy.json", "/tls/max_version", "\"1.2\"")}),
       "{dir}/node-proxy.json: /tls/min_version: min_version \"1.3\" is above max_version "
       "\"1.2\""},
      {kNode1,
       set("node-proxy.json", "/tls/ciphers",
           "\"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA257\""),
       "{dir}/node-proxy.json: /tls/ciphers: unknown or unavailable cipher "
       "\"ECDHE-RSA-AES128-GCM-SHA257\""},
      {kNode1, set("node-proxy.json", "/tls/ciphers", "\"TLS_AES_128_GCM_SHA256\""),
       "{dir}/node-proxy.json: /tls/ciphers: unknown or unavailable cipher "
       "\"TLS_AES_128_GCM_SHA256\" (TLS 1.3 suites go in \"ciphersuites\")"},
      {kNode1,
       set("node-proxy.json", "/tls/ciphersuites",
           "\"TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256\""),
       "{dir}/node-proxy.json: /tls/ciphersuites: unknown or unavailable TLS 1.3 suite "
       "\"ECDHE-RSA-AES128-GCM-SHA256\" (TLS 1.2 ciphers go in \"ciphers\")"},
      {kNode1, set("node-proxy.json", "/tls/groups", "\"X25519:P-999\""),
       "{dir}/node-proxy.json: /tls/groups: unknown group in \"X25519:P-999\" (e.g. "
       "\"X25519:P-256:P-384\")"},
      {kNode1, set("node-proxy.json", "/tls/alpn", R"(["h2", "http/1.1"])"),
       "{dir}/node-proxy.json: /tls/alpn/0: unsupported protocol \"h2\" (edgepin speaks "
       "\"http/1.1\" and \"http/1.0\")"},
      {kNode1, set("node-proxy.json", "/tls/tickets/rotate_s", "10"),
       "{dir}/node-proxy.json: /tls/tickets/rotate_s: value 10 out of range 60..604800"},
      {kNode1, set("node-proxy.json", "/upstream/address", "\"localhost:8080\""),
       "{dir}/node-proxy.json: /upstream/address: bad address \"localhost:8080\": expected "
       "IPv4:PORT or [IPv6]:PORT"},
      {kNode1, set("node-proxy.json", "/limits/max_header_bytes", "100"),
       "{dir}/node-proxy.json: /limits/max_header_bytes: value 100 out of range 1024..65536"},
      {kNode1, set("node-proxy.json", "/stats/path", "\"/_edgepin/health\""),
       "{dir}/node-proxy.json: /stats/path: path \"/_edgepin/health\" is both the health and "
       "the stats path"},
      {kNode1,
       all({remove("node-proxy.json", "/stats/path"),
            set("node-proxy.json", "/health/path", "\"/_edgepin/stats\"")}),
       "{dir}/node-proxy.json: /health/path: path \"/_edgepin/stats\" is both the health and "
       "the stats path"},
      {kNode1, set("node-proxy.json", "/stats/metrics_bind", "\"127.0.0.11:8081\""),
       "{dir}/node-proxy.json: /stats/metrics_bind: bind 127.0.0.11:8081 conflicts with "
       "/listeners/1 (127.0.0.11:8081)"},
      {kNode1, set("node-proxy.json", "/metrics", R"({"bind": "127.0.0.11"})"),
       "{dir}/node-proxy.json: /metrics: missing required key \"port\""},
      {kNode1, set("node-proxy.json", "/metrics", R"({"port": 70000})"),
       "{dir}/node-proxy.json: /metrics/port: port 70000 out of range 1..65535"},
      {kNode1, set("node-proxy.json", "/metrics", R"({"port": 9180, "bind": "localhost"})"),
       "{dir}/node-proxy.json: /metrics/bind: bad address \"localhost\": expected an IPv4 or IPv6 "
       "literal (no port: \"port\" sets it)"},
      {kNode1, set("node-proxy.json", "/metrics", R"({"port": 8443})"),
       "{dir}/node-proxy.json: /metrics: bind 127.0.0.11:8443 conflicts with /listeners/0 "
       "(127.0.0.11:8443)"},
      {kNode1, set("node-proxy.json", "/metrics", R"({"port": 9180, "colour": "red"})"),
       "{dir}/node-proxy.json: /metrics: unknown key \"colour\""},
      {kNode1,
       all({set("node-proxy.json", "/stats/metrics_bind", "\"127.0.0.1:9999\""),
            set("node-proxy.json", "/metrics", R"({"port": 9180})")}),
       "{dir}/node-proxy.json: /metrics: the metrics listener is already set by "
       "/stats/metrics_bind: use one of the two"},
      {kNode1, set("node-proxy.json", "/health/check_timeout_ms", "3000"),
       "{dir}/node-proxy.json: /health/check_timeout_ms: check_timeout_ms 3000 must not exceed "
       "check_interval_ms 2000"},
      // The peer link's pool, timeouts and health checks.
      {kNode1, set("node-proxy.json", "/peer/check_timeout_ms", "3000"),
       "{dir}/node-proxy.json: /peer/check_timeout_ms: check_timeout_ms 3000 must not exceed "
       "check_interval_ms 2000"},
      {kNode1, set("node-proxy.json", "/peer/check_interval_ms", "50"),
       "{dir}/node-proxy.json: /peer/check_interval_ms: value 50 out of range 100..86400000"},
      {kNode1, set("node-proxy.json", "/peer/connect_timeout_ms", "0"),
       "{dir}/node-proxy.json: /peer/connect_timeout_ms: value 0 out of range 1..86400000"},
      {kNode1, set("node-proxy.json", "/peer/response_timeout_ms", "\"60s\""),
       "{dir}/node-proxy.json: /peer/response_timeout_ms: expected integer, got string"},
      {kNode1, set("node-proxy.json", "/peer/pool_size", "10001"),
       "{dir}/node-proxy.json: /peer/pool_size: value 10001 out of range 0..10000"},
      {kNode1, set("node-proxy.json", "/peer/fall", "0"),
       "{dir}/node-proxy.json: /peer/fall: value 0 out of range 1..100"},
      {kNode1, set("node-proxy.json", "/peer/retries", "2"),
       "{dir}/node-proxy.json: /peer: unknown key \"retries\""},
      {kNode1, set("node-proxy.json", "/peer/cert_file", "\"pki/peer/node2.crt\""),
       "{dir}/node-proxy.json: /peer/key_file: private key {dir}/pki/peer/node1.key does not "
       "match certificate {dir}/pki/peer/node2.crt"},
      {kNode1,
       all({set("node-proxy.json", "/peer/cert_file", "\"pki/peer/node2.crt\""),
            set("node-proxy.json", "/peer/key_file", "\"pki/peer/node2.key\"")}),
       "{dir}/node-proxy.json: /peer/cert_file: {dir}/pki/peer/node2.crt: certificate does not "
       "name node \"node1\" (as CN or DNS subjectAltName)"},
      {kNode1,
       all({set("node-proxy.json", "/peer/cert_file", "\"pki/nodes/{node}.pem\""),
            set("node-proxy.json", "/peer/key_file", "\"pki/nodes/{node}.pem\"")}),
       "{dir}/node-proxy.json: /peer/cert_file: {dir}/pki/nodes/node1.pem: not valid for TLS "
       "client authentication (extendedKeyUsage clientAuth)"},
      {kNode1, chmod_of("pki/peer/node1.key", 0640),
       "{dir}/node-proxy.json: /peer/key_file: private key file {dir}/pki/peer/node1.key is "
       "readable by group or others (mode 0640; chmod 600 it)"},
      {kNode1, set("node-proxy.json", "/peer/key_file", "\"pki\""),
       "{dir}/node-proxy.json: /peer/key_file: not a regular file: {dir}/pki"},
      {kNode1, remove_file("pki/peer/node1.key"),
       "{dir}/node-proxy.json: /peer/key_file: no such file: {dir}/pki/peer/node1.key"},
      {kNode1, all({remove("node-proxy.json", "/peer"), remove_file("pki/peer/node1.crt")}),
       "{dir}/node-proxy.json: /peer/cert_file: no such file: {dir}/pki/peer/node1.crt"},
      {kNode1, remove_file("pki/ca.crt"),
       "{dir}/cluster.json: /cluster/peer/ca_file: no such file: {dir}/pki/ca.crt"},
      {kNode1,
       [](const fs::path& dir) {
         // A CA that did not sign this cluster's peer certificates.
         edgepin::test::TempDir other("edgepin-other-ca-");
         edgepin::test::TestPki pki(other.path());
         fs::copy_file(pki.ca_cert(), dir / "pki/ca.crt", fs::copy_options::overwrite_existing);
       },
       "{dir}/node-proxy.json: /peer/cert_file: {dir}/pki/peer/node1.crt: does not verify "
       "against the cluster CA {dir}/pki/ca.crt: unable to get local issuer certificate"},
      {kNode1, chmod_of("keys/cluster.key", 0644),
       "{dir}/cluster.json: /cluster/affinity/key_file: private key file {dir}/keys/cluster.key "
       "is readable by group or others (mode 0644; chmod 600 it)"},
      {kNode1,
       [](const fs::path& dir) { write_file(dir / "keys/cluster.key", "abcd\n", fs::perms(0600)); },
       "{dir}/cluster.json: /cluster/affinity/key_file: {dir}/keys/cluster.key: key of 2 bytes "
       "(expected 32..64 bytes written as hex, e.g. by `openssl rand -hex 32`)"},
      {kNode1,
       [](const fs::path& dir) {
         write_file(dir / "keys/cluster.key", std::string(64, 'z') + "\n", fs::perms(0600));
       },
       "{dir}/cluster.json: /cluster/affinity/key_file: {dir}/keys/cluster.key: not a hex "
       "string (expected 32..64 bytes written as hex, e.g. by `openssl rand -hex 32`)"},
      {kNode1, remove_file("keys/cluster.key"),
       "{dir}/cluster.json: /cluster/affinity/key_file: no such file: {dir}/keys/cluster.key"},
  };
  REQUIRE(cases.size() >= 40);

  for (size_t i = 0; i < cases.size(); ++i) {
    const BadCase& c = cases[i];
    CaseDir dir;
    c.mutate(dir.path());
    const std::string expected = with_dir(c.expected, dir.path());
    INFO("case " << i << ": " << expected);
    CHECK(load_error(c.target, dir.path()) == expected);
  }
}

TEST_CASE("the lb never opens keys or certificates", "[config]") {
  CaseDir c;
  fs::remove_all(c.path() / "pki");
  fs::remove_all(c.path() / "keys");
  const config::LbConfigSet lb = config::load_lb(c.path());
  CHECK(config::summary(lb) == "cluster \"demo\", 3 nodes, 2 frontends");
}

TEST_CASE("omitted keys take the documented defaults", "[config]") {
  CaseDir c;
  const fs::path& dir = c.path();
  write_file(dir / "cluster.json", R"({
    "cluster": {"name": "mini"},
    "nodes": [
      {"name": "a", "tag": 7, "address": "::1",
       "tls_port": 8443, "http_port": 8081, "peer_port": 9443}
    ]})");
  write_file(dir / "lb.json",
             R"({"frontends": [{"name": "f", "mode": "tls", "bind": ["[::]:8443"]}]})");
  write_file(dir / "node-proxy.json",
             R"({"listeners": [{"name": "l"}], "tls": {"certificates": ["pki/nodes/node1.pem"]}})");
  // Node "a" presents the default peer paths pki/peer/{node}.*, signed by the cluster CA.
  edgepin::test::TempDir issuer("edgepin-issuer-");
  {
    // Re-sign a peer identity for "a" with this directory's CA.
    auto ca = edgepin::test::TestPki::open(issuer.path(), dir / "pki/ca.crt", dir / "pki/ca.key");
    edgepin::test::CertSpec spec;
    spec.common_name = "a";
    spec.dns_names = {"a"};
    spec.client_auth = true;
    spec.serial = 7;
    const auto leaf = ca.issue("a", spec);
    std::filesystem::copy_file(leaf.cert, dir / "pki/peer/a.crt",
                               std::filesystem::copy_options::overwrite_existing);
    std::filesystem::copy_file(leaf.key, dir / "pki/peer/a.key",
                               std::filesystem::copy_options::overwrite_existing);
  }

  const config::LbConfigSet lb = config::load_lb(dir);
  const config::ClusterConfig& cl = lb.cluster;
  CHECK(cl.tag_scheme == config::TagScheme::EdgepinV1);
  CHECK(cl.affinity.mode == config::AffinityMode::Cookie);
  CHECK(cl.affinity.cookie_name == "EDGEPIN_NODE");
  CHECK(cl.affinity.session_cookie == "JSESSIONID");
  CHECK(cl.affinity.key_file == dir / "keys/cluster.key");
  CHECK(cl.affinity.secure == config::CookieSecure::Auto);
  CHECK(cl.affinity.http_only);
  CHECK(cl.affinity.same_site == config::SameSite::Lax);
  CHECK(cl.affinity.path == "/");
  CHECK(cl.affinity.domain.empty());
  CHECK_FALSE(cl.affinity.max_age);
  CHECK(cl.peer_ca_file == dir / "pki/ca.crt");
  REQUIRE(cl.nodes.size() == 1);
  CHECK(cl.nodes[0].weight == 100);
  CHECK_FALSE(cl.nodes[0].upstream);
  CHECK(cl.nodes[0].address == IpAddress::loopback_v6());

  const config::LbConfig& l = lb.lb;
  CHECK(l.threads == 0);
  REQUIRE(l.frontends.size() == 1);
  CHECK(l.frontends[0].bind[0] == SocketAddress(IpAddress::any_v6(), 8443));
  CHECK(l.frontends[0].server_port == config::NodePort::Tls);
  CHECK(l.frontends[0].proxy_protocol == config::ProxyProtocol::None);
  CHECK(l.frontends[0].inspect.buffer_bytes == 16384);
  CHECK(l.frontends[0].inspect.timeout == 5000ms);
  CHECK(l.frontends[0].inspect.on_failure == config::InspectFailure::Balance);
  CHECK(l.balance.algorithm == config::BalanceAlgorithm::RoundRobin);
  CHECK(l.balance.hash_function == config::HashFunction::Maglev);
  CHECK_FALSE(l.source_affinity.enabled);
  CHECK(l.source_affinity.ipv4_prefix == 32);
  CHECK(l.source_affinity.ipv6_prefix == 64);
  CHECK(l.stick_table.size == 100000);
  CHECK(l.stick_table.expire == 1800s);
  CHECK(l.retries == 3);
  CHECK(l.redispatch);
  CHECK(l.timeouts.connect == 5000ms);
  CHECK(l.timeouts.client == 50000ms);
  CHECK(l.timeouts.server == 50000ms);
  CHECK(l.timeouts.tunnel == 3600000ms);
  CHECK(l.timeouts.queue == 5000ms);
  CHECK(l.maxconn == 10000);
  CHECK(l.server_maxconn == 0);
  CHECK(l.queue_size == 1024);
  CHECK(l.health_check.enabled);
  CHECK(l.health_check.type == config::HealthCheckType::Http);
  CHECK(l.health_check.port == config::PortRef{config::NodePort::Http, 0});
  CHECK(l.health_check.path == "/_edgepin/health");
  CHECK(l.health_check.proxy_protocol == config::ProxyProtocol::None);
  CHECK(l.health_check.interval == 2000ms);
  CHECK(l.health_check.timeout == 1000ms);
  CHECK(l.health_check.rise == 2);
  CHECK(l.health_check.fall == 3);
  CHECK_FALSE(l.stats);
  CHECK_FALSE(l.admin_socket);
  CHECK(l.log.format == edgepin::log::Format::Text);
  CHECK(l.log.target == config::LogTarget::Stderr);
  CHECK(l.log.level == edgepin::log::Level::Info);
  CHECK(l.log.access_log);

  const config::NodeConfigSet node = config::load_node_proxy(dir, "a");
  const config::NodeProxyConfig& p = node.proxy;
  CHECK(node.peers.empty());
  CHECK(p.threads == 0);
  REQUIRE(p.listeners.size() == 1);
  CHECK(p.listeners[0].tls);
  CHECK(p.listeners[0].bind.to_string() == "[::1]:8443");
  CHECK(p.listeners[0].proxy_protocol == config::AcceptProxy::None);
  CHECK(p.listeners[0].trusted_proxies.empty());
  CHECK(p.listeners[0].public_port == 443);
  REQUIRE(p.tls);
  CHECK(p.tls->default_certificate == 0);
  CHECK(p.tls->min_version == config::TlsVersion::V1_2);
  CHECK(p.tls->max_version == config::TlsVersion::V1_3);
  CHECK(p.tls->ciphers == config::kDefaultCiphers);
  CHECK(p.tls->ciphersuites == config::kDefaultCiphersuites);
  CHECK(p.tls->groups == config::kDefaultGroups);
  CHECK(p.tls->alpn == std::vector<std::string>{"http/1.1"});
  CHECK(p.tls->session_cache.enabled);
  CHECK(p.tls->session_cache.size == 20000);
  CHECK(p.tls->session_cache.timeout == 3600s);
  CHECK(p.tls->tickets.enabled);
  CHECK(p.tls->tickets.rotate == 3600s);
  CHECK(p.tls->tickets.grace == 3600s);
  CHECK(p.upstream.address.to_string() == "127.0.0.1:8080");
  CHECK(p.upstream.pool_size == 64);
  CHECK(p.upstream.connect_timeout == 2000ms);
  CHECK(p.upstream.response_timeout == 60000ms);
  CHECK(p.upstream.idle_timeout == 15000ms);
  CHECK_FALSE(p.headers.forwarded_rfc7239);
  CHECK_FALSE(p.headers.x_forwarded_host);
  CHECK_FALSE(p.headers.x_real_ip);
  CHECK(p.headers.underscore_fields == config::UnderscoreFields::Drop);
  CHECK(p.limits.max_header_bytes == 16384);
  CHECK(p.limits.max_headers == 100);
  CHECK(p.limits.max_body_bytes == 0);
  CHECK(p.limits.max_connections == 10000);
  CHECK(p.timeouts.tls_handshake == 10000ms);
  CHECK(p.timeouts.client_header == 10000ms);
  CHECK(p.timeouts.client_idle == 60000ms);
  CHECK(p.timeouts.client == 60000ms);
  CHECK(p.timeouts.tunnel == 3600000ms);
  CHECK(p.health.path == "/_edgepin/health");
  CHECK(p.health.check_path == "/");
  CHECK(p.health.check_interval == 2000ms);
  CHECK(p.health.check_timeout == 1000ms);
  CHECK(p.stats.enabled);
  CHECK(p.stats.path == "/_edgepin/stats");
  REQUIRE(p.stats.allow.size() == 2);
  CHECK(p.stats.allow[0].to_string() == "127.0.0.0/8");
  CHECK(p.stats.allow[1].to_string() == "::1/128");
  CHECK_FALSE(p.stats.metrics_bind);
  CHECK(p.peer.enabled);
  CHECK(p.peer.cert_file == dir / "pki/peer/a.crt");
  CHECK(p.peer.key_file == dir / "pki/peer/a.key");
  CHECK(p.peer.pool_size == 16);
  CHECK_FALSE(p.admin_socket);
  CHECK(node.cluster_key.size() == 32);
}

TEST_CASE("valid variations load with the values they name", "[config]") {
  SECTION("an IPv6 node, per-listener bind and numeric port") {
    CaseDir c;
    set("cluster.json", "/nodes/1/address", "\"::1\"")(c.path());
    set("node-proxy.json", "/listeners/1/port", "18081")(c.path());
    set("node-proxy.json", "/listeners/1/bind", "\"0.0.0.0\"")(c.path());
    const config::LbConfigSet lb = config::load_lb(c.path());
    CHECK(lb.cluster.nodes[1].endpoint(config::NodePort::Tls).to_string() == "[::1]:8443");
    const config::NodeConfigSet n = config::load_node_proxy(c.path(), "node1");
    CHECK(n.proxy.listeners[1].bind.to_string() == "0.0.0.0:18081");
  }
  SECTION("affinity \"none\" needs neither the cluster key nor peer certificates") {
    CaseDir c;
    set("cluster.json", "/cluster/affinity/mode", "\"none\"")(c.path());
    fs::remove_all(c.path() / "keys");
    fs::remove_all(c.path() / "pki/peer");
    fs::remove(c.path() / "pki/ca.crt");
    const config::NodeConfigSet n = config::load_node_proxy(c.path(), "node2");
    CHECK_FALSE(n.proxy.peer.enabled);
    CHECK(n.cluster_key.empty());
  }
  SECTION("certificate directories, keys beside certificates, default certificate, warnings") {
    CaseDir c;
    const fs::path extra = c.path() / "pki/extra";
    fs::create_directory(extra);
    edgepin::test::TestPki pki(extra);
    // b.pem with its key as b.key (the "<stem>.key" rule)
    pki.issue("b", cert_spec("b.test", 30));
    // a.pem with its key as a.pem.key (the "<file>.key" rule), expired
    pki.issue("a", cert_spec("a.test", -1));
    fs::rename(extra / "a.key", extra / "a.pem.key");
    // The test PKI's other outputs are not certificates to serve.
    for (auto f : {"a-chain.pem", "b-chain.pem", "ca.pem", "ca.key"}) fs::remove(extra / f);
    set("node-proxy.json", "/tls/certificates",
        R"(["pki/nodes/{node}.pem", "pki/extra"])")(c.path());
    set("node-proxy.json", "/tls/default_certificate", "\"pki/extra/b.pem\"")(c.path());
    const config::NodeConfigSet n = config::load_node_proxy(c.path(), "node1");
    REQUIRE(n.proxy.tls);
    const auto& certs = n.proxy.tls->certificates;
    REQUIRE(certs.size() == 3);  // node1.pem, then the directory in name order
    CHECK(certs[1] == config::CertificateFile{extra / "a.pem", extra / "a.pem.key"});
    CHECK(certs[2] == config::CertificateFile{extra / "b.pem", extra / "b.key"});
    CHECK(n.proxy.tls->default_certificate == 2);
    REQUIRE(n.warnings.size() == 1);
    const std::string prefix = (c.path() / "node-proxy.json").string() +
                               ": /tls/certificates/1: certificate " + (extra / "a.pem").string() +
                               " expired on ";
    CHECK(n.warnings[0].rfind(prefix, 0) == 0);
  }
  SECTION("lb timeouts: separate client and server timeouts, tunnel 0 turns it off") {
    CaseDir c;
    set("lb.json", "/timeouts",
        R"({"client_ms": 1500, "server_ms": 2500, "tunnel_ms": 0})")(c.path());
    const config::LbConfigSet lb = config::load_lb(c.path());
    CHECK(lb.lb.timeouts.client == 1500ms);
    CHECK(lb.lb.timeouts.server == 2500ms);
    CHECK(lb.lb.timeouts.tunnel == 0ms);
    CHECK(lb.lb.timeouts.connect == 5000ms);
  }
  SECTION("metrics listener: a port on the node's address, or a given address") {
    CaseDir c;
    set("node-proxy.json", "/metrics", R"({"port": 9180})")(c.path());
    const config::NodeConfigSet n2 = config::load_node_proxy(c.path(), "node2");
    REQUIRE(n2.proxy.stats.metrics_bind);
    CHECK(n2.proxy.stats.metrics_bind->to_string() == "127.0.0.12:9180");
    set("node-proxy.json", "/metrics", R"({"port": 9181, "bind": "*"})")(c.path());
    const config::NodeConfigSet n3 = config::load_node_proxy(c.path(), "node3");
    REQUIRE(n3.proxy.stats.metrics_bind);
    CHECK(n3.proxy.stats.metrics_bind->to_string() == "0.0.0.0:9181");
  }
  SECTION("admin socket with {node}, mode and relative path") {
    CaseDir c;
    set("node-proxy.json", "/admin_socket",
        R"({"path": "run/{node}.sock", "mode": "0600"})")(c.path());
    const config::NodeConfigSet n = config::load_node_proxy(c.path(), "node3");
    REQUIRE(n.proxy.admin_socket);
    CHECK(n.proxy.admin_socket->path == c.path() / "run/node3.sock");
    CHECK(n.proxy.admin_socket->mode == 0600);
  }
}

TEST_CASE("socket addresses and CIDR ranges", "[config][net_address]") {
  std::string error;
  auto v4 = SocketAddress::parse("127.0.0.1:443", {}, &error);
  REQUIRE(v4);
  CHECK(v4->ip().is_v4());
  CHECK(v4->port() == 443);
  auto v6 = SocketAddress::parse("[2001:db8::1]:8443", {}, &error);
  REQUIRE(v6);
  CHECK(v6->to_string() == "[2001:db8::1]:8443");
  CHECK_FALSE(SocketAddress::parse("*:443", {}, &error));
  auto any = SocketAddress::parse("*:443", {.allow_wildcard = true}, &error);
  REQUIRE(any);
  CHECK(any->ip().is_unspecified());
  CHECK_FALSE(SocketAddress::parse("127.0.0.1:0", {}, &error));
  CHECK(error == "port 0 out of range 1..65535");
  CHECK(SocketAddress::parse("127.0.0.1:0", {.allow_port_zero = true}, &error));
  for (auto bad : {"", ":80", "127.0.0.1:", "127.0.0.1:+80", "127.0.0.1:8o", "[::1:80",
                   "[127.0.0.1]:80", "fe80::1%lo:80", "[fe80::1%lo]:80", "1.2.3.4:80:90"}) {
    INFO(bad);
    CHECK_FALSE(SocketAddress::parse(bad, {.allow_wildcard = true}));
  }

  // sockaddr round trip for both families.
  for (const auto& a : {*v4, *v6}) {
    sockaddr_storage ss{};
    socklen_t len = a.to_sockaddr(ss);
    auto back = SocketAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
    REQUIRE(back);
    CHECK(*back == a);
    CHECK_FALSE(SocketAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len - 1));
  }

  // Overlap: same port and same address, or a wildcard of the same family.
  auto addr = [](const char* s) { return *SocketAddress::parse(s, {.allow_wildcard = true}); };
  CHECK(addr("127.0.0.1:80").overlaps(addr("127.0.0.1:80")));
  CHECK(addr("0.0.0.0:80").overlaps(addr("127.0.0.1:80")));
  CHECK(addr("127.0.0.1:80").overlaps(addr("*:80")));
  CHECK_FALSE(addr("127.0.0.1:80").overlaps(addr("127.0.0.2:80")));
  CHECK_FALSE(addr("127.0.0.1:80").overlaps(addr("127.0.0.1:81")));
  CHECK_FALSE(addr("[::]:80").overlaps(addr("127.0.0.1:80")));  // v6 wildcard is V6ONLY

  auto cidr = [](const char* s) {
    auto c = Cidr::parse(s);
    REQUIRE(c);
    return *c;
  };
  CHECK(cidr("127.0.0.0/8").contains(*IpAddress::parse("127.255.1.2")));
  CHECK_FALSE(cidr("127.0.0.0/8").contains(*IpAddress::parse("128.0.0.1")));
  CHECK(cidr("198.51.100.128/25").contains(*IpAddress::parse("198.51.100.200")));
  CHECK_FALSE(cidr("198.51.100.128/25").contains(*IpAddress::parse("198.51.100.127")));
  // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
  CHECK(cidr("127.0.0.0/8").contains(*IpAddress::parse("::ffff:127.0.0.5")));
  CHECK_FALSE(cidr("127.0.0.0/8").contains(*IpAddress::parse("::1")));
  CHECK(cidr("0.0.0.0/0").contains(*IpAddress::parse("203.0.113.9")));
  CHECK(cidr("2001:db8::/32").contains(*IpAddress::parse("2001:db8:ffff::1")));
  CHECK(cidr("::1").to_string() == "::1/128");
  CHECK(cidr("203.0.113.7").to_string() == "203.0.113.7/32");
  CHECK_FALSE(Cidr::parse("127.0.0.0/-1"));
  CHECK_FALSE(Cidr::parse("::/129"));
  CHECK_FALSE(Cidr::parse("10.0.0.1/31", &error));
  CHECK(error == "host bits set in CIDR \"10.0.0.1/31\" (did you mean \"10.0.0.0/31\"?)");
}

TEST_CASE("command-line parsing", "[cli]") {
  std::ostringstream out, err;
  auto parse = [&](const cli::Program& p, std::vector<std::string> args) {
    out.str("");
    err.str("");
    args.insert(args.begin(), std::string(p.name));
    Argv argv(std::move(args));
    return cli::parse_command_line(p, argv.argc(), argv.argv(), out, err);
  };

  auto r = parse(kLbProgram, {});
  CHECK_FALSE(r.exit);
  CHECK(r.options.config_dir == "/etc/edgepin");
  CHECK_FALSE(r.options.check);

  r = parse(kLbProgram, {"--config-dir", "conf", "--check"});
  CHECK_FALSE(r.exit);
  CHECK(r.options.config_dir == "conf");
  CHECK(r.options.check);

  r = parse(kLbProgram, {"-C", "x", "-c"});
  CHECK(r.options.config_dir == "x");
  CHECK(r.options.check);

  r = parse(kNodeProgram, {"--config-dir=conf", "--node=node2"});
  CHECK_FALSE(r.exit);
  CHECK(r.options.node == "node2");

  r = parse(kNodeProgram, {"-n", "node3", "-c"});
  CHECK(r.options.node == "node3");

  r = parse(kNodeProgram, {"--check"});
  CHECK(r.exit);
  CHECK(r.exit_code == cli::kExitUsage);
  CHECK(err.str() ==
        "edgepin-node-proxy: --node NAME is required; try 'edgepin-node-proxy --help'\n");

  r = parse(kLbProgram, {"--node", "node1"});
  CHECK(r.exit_code == cli::kExitUsage);
  CHECK(err.str() == "edgepin-lb: unknown option --node; try 'edgepin-lb --help'\n");

  r = parse(kLbProgram, {"-x"});
  CHECK(err.str() == "edgepin-lb: unknown option -x; try 'edgepin-lb --help'\n");

  r = parse(kLbProgram, {"--config-dir"});
  CHECK(r.exit_code == cli::kExitUsage);
  CHECK(err.str() ==
        "edgepin-lb: option --config-dir needs an argument; try 'edgepin-lb --help'\n");

  r = parse(kLbProgram, {"-c", "-C"});
  CHECK(r.exit_code == cli::kExitUsage);
  CHECK(err.str() == "edgepin-lb: option -C needs an argument; try 'edgepin-lb --help'\n");

  r = parse(kLbProgram, {"--check", "conf"});
  CHECK(r.exit_code == cli::kExitUsage);
  CHECK(err.str() == "edgepin-lb: unexpected argument 'conf'; try 'edgepin-lb --help'\n");

  r = parse(kLbProgram, {"--config-dir="});
  CHECK(r.exit_code == cli::kExitUsage);

  r = parse(kNodeProgram, {"--help"});
  CHECK(r.exit);
  CHECK(r.exit_code == 0);
  CHECK(out.str() == cli::usage(kNodeProgram));
  CHECK(err.str().empty());

  r = parse(kLbProgram, {"--version", "--bogus-but-after"});
  CHECK(r.exit_code == cli::kExitUsage);  // a bad option wins over --version

  r = parse(kLbProgram, {"-v"});
  CHECK(r.exit_code == 0);
  CHECK(out.str() == cli::version_line(kLbProgram) + "\n");
}

TEST_CASE("the binaries' --check, --version and --help", "[cli][binaries]") {
  const std::string good = good_dir().string();
  const std::string version = std::string(" ") + edgepin::kVersion + " (";

  SECTION("--check on the example directory") {
    auto r = run_binary(EDGEPIN_LB_BIN, {"--config-dir", good, "--check"});
    INFO(r.describe());
    CHECK(r.exited);
    CHECK(r.exit_code == 0);
    CHECK(r.out == "edgepin-lb: configuration valid: cluster \"demo\", 3 nodes, 2 frontends\n");
    CHECK(r.err.empty());
    for (auto n : {"node1", "node2", "node3"}) {
      auto p = run_binary(EDGEPIN_NODE_PROXY_BIN, {"-C", good, "--node", n, "-c"});
      INFO(p.describe());
      CHECK(p.exit_code == 0);
      CHECK(p.out == "edgepin-node-proxy: configuration valid: cluster \"demo\", node \"" +
                         std::string(n) + "\" (tag " + std::string(1, n[4]) +
                         "), 2 listeners, 1 certificate, 2 peers\n");
      CHECK(p.err.empty());
    }
  }

  SECTION("--check on broken directories: exit 1 and one line on stderr") {
    CaseDir c;
    set("cluster.json", "/nodes/2/tag", "3")(c.path());
    set("cluster.json", "/nodes/0/tag", "3")(c.path());
    const std::string d = c.path().string();
    auto r = run_binary(EDGEPIN_LB_BIN, {"--config-dir", d, "--check"});
    INFO(r.describe());
    CHECK(r.exit_code == 1);
    CHECK(r.out.empty());
    CHECK(r.err ==
          "edgepin-lb: " + d + "/cluster.json: /nodes/2/tag: duplicate tag 3 (also /nodes/0)\n");

    auto p = run_binary(EDGEPIN_NODE_PROXY_BIN, {"--config-dir", d, "--node", "node1", "--check"});
    CHECK(p.exit_code == 1);
    CHECK(p.err == "edgepin-node-proxy: " + d +
                       "/cluster.json: /nodes/2/tag: duplicate tag 3 (also /nodes/0)\n");

    auto missing = run_binary(EDGEPIN_LB_BIN, {"--config-dir", d + "/nope", "--check"});
    CHECK(missing.exit_code == 1);
    CHECK(missing.err == "edgepin-lb: " + d + "/nope: no such directory\n");

    auto unknown = run_binary(EDGEPIN_NODE_PROXY_BIN, {"-C", good, "-n", "node4", "-c"});
    CHECK(unknown.exit_code == 1);
    CHECK(unknown.err == "edgepin-node-proxy: " + good +
                             "/cluster.json: /nodes: no node named \"node4\" (nodes: node1, "
                             "node2, node3)\n");
  }

  SECTION("without a PKI the lb is valid and the node-proxy names the missing file") {
    CaseDir c;
    fs::remove_all(c.path() / "pki");
    fs::remove_all(c.path() / "keys");
    const std::string d = c.path().string();
    auto r = run_binary(EDGEPIN_LB_BIN, {"--config-dir", d, "--check"});
    CHECK(r.exit_code == 0);
    auto p = run_binary(EDGEPIN_NODE_PROXY_BIN, {"--config-dir", d, "--node", "node2", "--check"});
    CHECK(p.exit_code == 1);
    CHECK(p.err == "edgepin-node-proxy: " + d +
                       "/node-proxy.json: /tls/certificates/0: no such file: " + d +
                       "/pki/nodes/node2.pem\n");
  }

  SECTION("--check prints certificate warnings and still succeeds") {
    CaseDir c;
    fs::create_directory(c.path() / "pki/old");
    edgepin::test::TestPki pki(c.path() / "pki/old");
    pki.issue("old", cert_spec("old.test", -1));
    set("node-proxy.json", "/tls/certificates/1", "\"pki/old/old.pem\"")(c.path());
    auto p = run_binary(EDGEPIN_NODE_PROXY_BIN,
                        {"--config-dir", c.path().string(), "--node", "node1", "--check"});
    INFO(p.describe());
    CHECK(p.exit_code == 0);
    CHECK(p.out.find("configuration valid") != std::string::npos);
    const std::string prefix =
        "edgepin-node-proxy: warning: " + (c.path() / "node-proxy.json").string() +
        ": /tls/certificates/1: certificate " + (c.path() / "pki/old/old.pem").string() +
        " expired on ";
    CHECK(p.err.rfind(prefix, 0) == 0);
    CHECK(std::count(p.err.begin(), p.err.end(), '\n') == 1);
  }

  SECTION("--version and --help") {
    for (auto [bin, name] : {std::pair{EDGEPIN_LB_BIN, "edgepin-lb"},
                             std::pair{EDGEPIN_NODE_PROXY_BIN, "edgepin-node-proxy"}}) {
      auto v = run_binary(bin, {"--version"});
      CHECK(v.exit_code == 0);
      CHECK(v.out.rfind(std::string(name) + version, 0) == 0);
      CHECK(std::count(v.out.begin(), v.out.end(), '\n') == 1);
      auto h = run_binary(bin, {"--help"});
      CHECK(h.exit_code == 0);
      CHECK(h.out.rfind("Usage: " + std::string(name), 0) == 0);
      CHECK(h.out.find("--config-dir DIR") != std::string::npos);
      CHECK(h.out.find("--check") != std::string::npos);
      CHECK((h.out.find("--node NAME") != std::string::npos) ==
            (std::string(name) == "edgepin-node-proxy"));
      auto bad = run_binary(bin, {"--frobnicate"});
      CHECK(bad.exit_code == 64);
      CHECK(bad.err ==
            std::string(name) + ": unknown option --frobnicate; try '" + name + " --help'\n");
    }
  }
}
