#pragma once
// A Prometheus text exposition (format 0.0.4) built in memory and rendered
// once, shared by both binaries' /metrics endpoints.
//
// The format's rules that scrapers enforce, and how this writer keeps them:
//   - every family appears once, as `# HELP`, `# TYPE`, then all its samples
//     together: families are declared first and samples collected per
//     family, so callers may add samples in any order;
//   - metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
//     [a-zA-Z_][a-zA-Z0-9_]* and may not start with "__" (reserved);
//   - a counter's samples are named `<family>_total` (the convention the
//     Prometheus client libraries follow): the writer appends the suffix,
//     so a counter family is declared without it;
//   - label values escape backslash, double quote and newline; HELP text
//     escapes backslash and newline;
//   - one sample per label set: a duplicate would make the scrape fail.
// A misuse (bad name, undeclared family, duplicate sample) is a programming
// error: it is refused, the first one is kept in error(), and the rest of
// the exposition stays valid, so /metrics never serves an unparsable page.
#include <cstdint>
#include <initializer_list>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace edgepin::prometheus {

// The Content-Type of a 0.0.4 text exposition.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";
// Appended to every counter family's name.
inline constexpr std::string_view kCounterSuffix = "_total";

enum class MetricType : uint8_t { Counter, Gauge };
constexpr const char* to_string(MetricType t) {
  return t == MetricType::Counter ? "counter" : "gauge";
}

struct Label {
  std::string_view name;
  std::string_view value;
};

// True when `name` is a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*).
bool valid_metric_name(std::string_view name);
// True when `name` is a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not "__"-prefixed).
bool valid_label_name(std::string_view name);
// A label value with \ " and newline escaped (no surrounding quotes).
std::string escape_label_value(std::string_view value);
// HELP text with \ and newline escaped.
std::string escape_help(std::string_view help);
// A sample value as the format writes it: shortest round-trip decimal,
// "NaN", "+Inf" or "-Inf".
std::string format_value(double value);

class Exposition {
 public:
  // Declares a family. `name` is the family name as exposed, without the
  // counter suffix (the writer appends "_total" to counters). Returns true,
  // also when the same declaration is repeated; false (and records the
  // error) for an invalid name, a counter name already ending in "_total",
  // or a name declared before with another type or help.
  bool declare(std::string_view name, MetricType type, std::string_view help);

  // Adds one sample to the declared family `name` (without "_total").
  // Returns false (and records the error) when the family is undeclared,
  // a label name is invalid or repeated, or the family already has a sample
  // with exactly these labels (in this order).
  bool add(std::string_view name, std::initializer_list<Label> labels, double value);
  bool add(std::string_view name, std::initializer_list<Label> labels, uint64_t value);
  // Same, with labels built at run time.
  bool add(std::string_view name, const std::vector<Label>& labels, double value);
  bool add(std::string_view name, const std::vector<Label>& labels, uint64_t value);

  // The exposition text: each family in declaration order, HELP, TYPE and
  // its samples; a family without samples is left out.
  std::string render() const;

  // False once any declare() or add() was refused; error() names the first.
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

 private:
  struct Family {
    std::string name;  // as exposed (with "_total" for counters)
    std::string base;  // as declared
    MetricType type;
    std::string help;
    std::vector<std::string> samples;  // rendered lines, without newline
    std::set<std::string> label_sets;  // rendered "{...}" parts already used
  };
  Family* find(std::string_view base);
  bool add_sample(std::string_view name, std::span<const Label> labels, const std::string& value);
  bool fail(std::string message);

  std::vector<Family> families_;
  std::string error_;
};

}  // namespace edgepin::prometheus
