// The Prometheus text writer: names, escaping, families written once with
// HELP and TYPE before their samples, counters suffixed _total, and misuse
// refused without spoiling the rest of the page.
#include "prometheus.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using namespace edgepin::prometheus;

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace

TEST_CASE("metric and label names follow the data model") {
  CHECK(valid_metric_name("edgepin_lb_connections"));
  CHECK(valid_metric_name("_x"));
  CHECK(valid_metric_name("ns:rule:rate5m"));
  CHECK(valid_metric_name("a1"));
  CHECK_FALSE(valid_metric_name(""));
  CHECK_FALSE(valid_metric_name("1abc"));
  CHECK_FALSE(valid_metric_name("a-b"));
  CHECK_FALSE(valid_metric_name("a b"));
  CHECK_FALSE(valid_metric_name("a.b"));

  CHECK(valid_label_name("server"));
  CHECK(valid_label_name("_x9"));
  CHECK_FALSE(valid_label_name(""));
  CHECK_FALSE(valid_label_name("__name__"));  // reserved
  CHECK_FALSE(valid_label_name("a:b"));       // colons are for metric names only
  CHECK_FALSE(valid_label_name("9a"));
}

TEST_CASE("label values escape backslash, quote and newline, nothing else") {
  CHECK(escape_label_value("plain") == "plain");
  CHECK(escape_label_value("a\\b") == "a\\\\b");
  CHECK(escape_label_value("say \"hi\"") == "say \\\"hi\\\"");
  CHECK(escape_label_value("two\nlines") == "two\\nlines");
  CHECK(escape_label_value("tab\there") == "tab\there");
  CHECK(escape_label_value("\\\"\n") == "\\\\\\\"\\n");
  CHECK(escape_label_value("caf\xc3\xa9") == "caf\xc3\xa9");  // UTF-8 passes through
}

TEST_CASE("HELP escapes backslash and newline but not quotes") {
  CHECK(escape_help("a \"quoted\" word") == "a \"quoted\" word");
  CHECK(escape_help("back\\slash\nnext") == "back\\\\slash\\nnext");
}

TEST_CASE("values: integers exact, doubles shortest, special values by name") {
  CHECK(format_value(0.5) == "0.5");
  CHECK(format_value(1e-6) == "1e-06");
  CHECK(format_value(3.0) == "3");
  CHECK(format_value(std::numeric_limits<double>::quiet_NaN()) == "NaN");
  CHECK(format_value(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(format_value(-std::numeric_limits<double>::infinity()) == "-Inf");

  Exposition e;
  REQUIRE(e.declare("big", MetricType::Counter, "a large counter"));
  // 2^53 + 1 is not a double: a counter must still come out exact.
  REQUIRE(e.add("big", {}, uint64_t{9007199254740993ull}));
  CHECK(e.render() ==
        "# HELP big_total a large counter\n# TYPE big_total counter\nbig_total 9007199254740993\n");
}

TEST_CASE("a family is written once, HELP and TYPE first, with all its label sets") {
  Exposition e;
  REQUIRE(
      e.declare("edgepin_lb_server_connections", MetricType::Counter, "Connections per server."));
  REQUIRE(
      e.declare("edgepin_lb_server_current_connections", MetricType::Gauge, "Open connections."));
  // Interleaved on purpose: the output still groups samples by family.
  REQUIRE(e.add("edgepin_lb_server_connections", {{"server", "node1"}}, uint64_t{5}));
  REQUIRE(e.add("edgepin_lb_server_current_connections", {{"server", "node1"}}, uint64_t{1}));
  REQUIRE(e.add("edgepin_lb_server_connections", {{"server", "node2"}}, uint64_t{7}));
  REQUIRE(e.add("edgepin_lb_server_current_connections", {{"server", "node2"}}, 0.25));
  CHECK(e.ok());
  CHECK(lines_of(e.render()) ==
        std::vector<std::string>{
            "# HELP edgepin_lb_server_connections_total Connections per server.",
            "# TYPE edgepin_lb_server_connections_total counter",
            "edgepin_lb_server_connections_total{server=\"node1\"} 5",
            "edgepin_lb_server_connections_total{server=\"node2\"} 7",
            "# HELP edgepin_lb_server_current_connections Open connections.",
            "# TYPE edgepin_lb_server_current_connections gauge",
            "edgepin_lb_server_current_connections{server=\"node1\"} 1",
            "edgepin_lb_server_current_connections{server=\"node2\"} 0.25",
        });
}

TEST_CASE("label values are escaped in samples, HELP in its line") {
  Exposition e;
  REQUIRE(e.declare("m", MetricType::Gauge, "help with \\ and\nnewline"));
  REQUIRE(e.add("m", {{"a", "x\"y"}, {"b", "p\\q\nr"}}, uint64_t{1}));
  CHECK(e.render() ==
        "# HELP m help with \\\\ and\\nnewline\n"
        "# TYPE m gauge\n"
        "m{a=\"x\\\"y\",b=\"p\\\\q\\nr\"} 1\n");
}

TEST_CASE("labels built at run time") {
  Exposition e;
  REQUIRE(e.declare("routes", MetricType::Counter, "Routing decisions."));
  std::map<std::string, uint64_t> counts{{"balance", 3}, {"tag", 2}};
  for (const auto& [reason, n] : counts) {
    std::vector<Label> labels{{"frontend", "https"}, {"reason", reason}};
    REQUIRE(e.add("routes", labels, n));
  }
  CHECK(lines_of(e.render()).size() == 4);
  CHECK(e.render().find("routes_total{frontend=\"https\",reason=\"tag\"} 2\n") !=
        std::string::npos);
}

TEST_CASE("a family without samples is left out") {
  Exposition e;
  REQUIRE(e.declare("empty", MetricType::Gauge, "nothing"));
  REQUIRE(e.declare("one", MetricType::Gauge, "something"));
  REQUIRE(e.add("one", {}, 1.5));
  CHECK(e.render() == "# HELP one something\n# TYPE one gauge\none 1.5\n");
}

TEST_CASE("misuse is refused, the first error kept, the page stays valid") {
  Exposition e;
  REQUIRE(e.declare("good", MetricType::Gauge, "fine"));
  REQUIRE(e.declare("good", MetricType::Gauge, "fine"));  // identical: accepted

  CHECK_FALSE(e.declare("bad-name", MetricType::Gauge, "x"));
  CHECK(e.error().find("bad-name") != std::string::npos);
  const std::string first = e.error();

  CHECK_FALSE(e.declare("requests_total", MetricType::Counter, "suffix is the writer's job"));
  CHECK_FALSE(e.declare("good", MetricType::Counter, "fine"));  // other type
  CHECK_FALSE(e.declare("good", MetricType::Gauge, "other help"));
  REQUIRE(e.declare("hits", MetricType::Counter, "hits"));
  CHECK_FALSE(e.declare("hits_total", MetricType::Gauge, "collides with the counter's name"));
  CHECK_FALSE(e.add("undeclared", {}, 1.0));
  CHECK_FALSE(e.add("good", {{"__reserved", "x"}}, 1.0));
  CHECK_FALSE(e.add("good", {{"a-b", "x"}}, 1.0));
  CHECK_FALSE(e.add("good", {{"a", "1"}, {"a", "2"}}, 1.0));
  REQUIRE(e.add("good", {{"a", "1"}}, 1.0));
  CHECK_FALSE(e.add("good", {{"a", "1"}}, 2.0));  // same label set twice
  REQUIRE(e.add("good", {}, 3.0));
  CHECK_FALSE(e.add("good", {}, 4.0));

  CHECK_FALSE(e.ok());
  CHECK(e.error() == first);
  CHECK(e.render() == "# HELP good fine\n# TYPE good gauge\ngood{a=\"1\"} 1\ngood 3\n");
}
