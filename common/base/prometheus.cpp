#include "prometheus.h"

#include <charconv>
#include <cmath>

namespace edgepin::prometheus {

namespace {

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

bool valid_metric_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = is_alpha(c) || c == '_' || c == ':' || (i > 0 && is_digit(c));
    if (!ok) return false;
  }
  return true;
}

bool valid_label_name(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = is_alpha(c) || c == '_' || (i > 0 && is_digit(c));
    if (!ok) return false;
  }
  return true;
}

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string escape_help(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, r.ptr);
}

Exposition::Family* Exposition::find(std::string_view base) {
  for (Family& f : families_)
    if (f.base == base) return &f;
  return nullptr;
}

bool Exposition::fail(std::string message) {
  if (error_.empty()) error_ = std::move(message);
  return false;
}

bool Exposition::declare(std::string_view name, MetricType type, std::string_view help) {
  if (!valid_metric_name(name)) return fail("invalid metric name \"" + std::string(name) + "\"");
  if (type == MetricType::Counter && ends_with(name, kCounterSuffix))
    return fail("counter \"" + std::string(name) + "\" declared with its _total suffix");
  if (Family* f = find(name)) {
    if (f->type != type || f->help != help)
      return fail("metric \"" + std::string(name) + "\" declared twice with another type or help");
    return true;
  }
  std::string exposed(name);
  if (type == MetricType::Counter) exposed += kCounterSuffix;
  // A gauge "x_total" and a counter "x" would expose the same name.
  for (const Family& f : families_)
    if (f.name == exposed) return fail("metric \"" + exposed + "\" exposed by two families");
  families_.push_back(
      Family{std::move(exposed), std::string(name), type, std::string(help), {}, {}});
  return true;
}

bool Exposition::add_sample(std::string_view name, std::span<const Label> labels,
                            const std::string& value) {
  Family* f = find(name);
  if (!f) return fail("sample for undeclared metric \"" + std::string(name) + "\"");
  std::string set;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (!valid_label_name(labels[i].name))
      return fail("metric \"" + f->name + "\": invalid label name \"" +
                  std::string(labels[i].name) + "\"");
    for (size_t j = 0; j < i; ++j)
      if (labels[j].name == labels[i].name)
        return fail("metric \"" + f->name + "\": label \"" + std::string(labels[i].name) +
                    "\" given twice");
    set += i ? "," : "{";
    set += labels[i].name;
    set += "=\"";
    set += escape_label_value(labels[i].value);
    set += '"';
  }
  if (!set.empty()) set += '}';
  if (!f->label_sets.insert(set).second)
    return fail("metric \"" + f->name + "\": duplicate sample " + (set.empty() ? "{}" : set));
  f->samples.push_back(f->name + set + " " + value);
  return true;
}

bool Exposition::add(std::string_view name, std::initializer_list<Label> labels, double value) {
  return add_sample(name, std::span<const Label>(labels.begin(), labels.size()),
                    format_value(value));
}

bool Exposition::add(std::string_view name, std::initializer_list<Label> labels, uint64_t value) {
  // Integers are written exactly (a double would round counters past 2^53).
  return add_sample(name, std::span<const Label>(labels.begin(), labels.size()),
                    std::to_string(value));
}

bool Exposition::add(std::string_view name, const std::vector<Label>& labels, double value) {
  return add_sample(name, labels, format_value(value));
}

bool Exposition::add(std::string_view name, const std::vector<Label>& labels, uint64_t value) {
  return add_sample(name, labels, std::to_string(value));
}

std::string Exposition::render() const {
  std::string out;
  for (const Family& f : families_) {
    if (f.samples.empty()) continue;
    out += "# HELP " + f.name + " " + escape_help(f.help) + "\n";
    out += "# TYPE " + f.name + " " + to_string(f.type) + "\n";
    for (const std::string& s : f.samples) {
      out += s;
      out += '\n';
    }
  }
  return out;
}

}  // namespace edgepin::prometheus
