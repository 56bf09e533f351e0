#include "config_reader.h"

#include <algorithm>
#include <cstdio>

#include "config_files.h"

namespace edgepin::config {
namespace {

std::string location(const std::string& file, const std::string& pointer) {
  return pointer.empty() ? file : file + ": " + pointer;
}

// Optimal-string-alignment distance: insertions, deletions, substitutions
// and swaps of two neighbours ("nmae") each count one.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// How far a misspelling may be from the key it suggests: one edit for short
// keys (where two edits reach unrelated words), two for longer ones.
size_t max_suggestion_distance(std::string_view key) { return key.size() <= 4 ? 1 : 2; }

// Tracks the JSON pointer during parsing to name the object that holds a
// duplicate key (nlohmann keeps the last value silently; a config with two
// "timeout_ms" keys almost always means one of them is not the one read).
class DuplicateKeyFinder {
 public:
  bool on_event(nlohmann::detail::parse_event_t event, Json& parsed) {
    using E = nlohmann::detail::parse_event_t;
    switch (event) {
      case E::object_start:
        begin_element();
        stack_.push_back(Frame{false, 0, {}, {}});
        break;
      case E::array_start:
        begin_element();
        stack_.push_back(Frame{true, 0, {}, {}});
        break;
      case E::key: {
        Frame& top = stack_.back();
        const auto& key = parsed.get_ref<const std::string&>();
        if (!found_ && std::find(top.keys.begin(), top.keys.end(), key) != top.keys.end()) {
          found_ = true;
          pointer_ = pointer(stack_.size() - 1);
          key_ = key;
        }
        top.keys.push_back(key);
        top.current_key = key;
        break;
      }
      case E::value:
        begin_element();
        break;
      case E::object_end:
      case E::array_end:
        stack_.pop_back();
        break;
    }
    return true;
  }

  bool found() const { return found_; }
  const std::string& pointer() const { return pointer_; }
  const std::string& key() const { return key_; }

 private:
  struct Frame {
    bool is_array;
    size_t next_index;
    std::string current_key;
    std::vector<std::string> keys;
  };

  // An element of an array starts: the pointer's last token becomes its index.
  void begin_element() {
    if (!stack_.empty() && stack_.back().is_array) {
      Frame& top = stack_.back();
      top.current_key = std::to_string(top.next_index++);
    }
  }

  // Pointer of the container at `depth` (0 = root).
  std::string pointer(size_t depth) const {
    std::string p;
    for (size_t i = 0; i < depth; ++i) p = append_pointer(p, stack_[i].current_key);
    return p;
  }

  std::vector<Frame> stack_;
  bool found_ = false;
  std::string pointer_;
  std::string key_;
};

}  // namespace

ConfigError::ConfigError(std::string file, std::string pointer, std::string message)
    : ConfigError(file, pointer, message, location(file, pointer) + ": " + message) {}

ConfigError::ConfigError(std::string file, std::string pointer, std::string message,
                         std::string line)
    : std::runtime_error(line),
      file_(std::move(file)),
      pointer_(std::move(pointer)),
      message_(std::move(message)) {}

ConfigError ConfigError::syntax(std::string file, size_t line, size_t column, std::string detail) {
  std::string message = "invalid JSON: " + detail;
  std::string where = file + ":" + std::to_string(line) + ":" + std::to_string(column);
  return ConfigError(std::move(file), "", message, where + ": " + message);
}

std::string append_pointer(const std::string& pointer, std::string_view token) {
  std::string out = pointer;
  out += '/';
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

// --- JsonValue ---

JsonValue JsonValue::placeholder(const std::string& file, std::string pointer) {
  static const Json kNull;
  return JsonValue(kNull, file, std::move(pointer));
}

void JsonValue::fail(const std::string& message) const {
  throw ConfigError(*file_, pointer_, message);
}

std::string JsonValue::type_name() const {
  switch (json_->type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "integer";
    case Json::value_t::number_float:
      return "non-integer number";
    case Json::value_t::string:
      return "string";
    case Json::value_t::array:
      return "array";
    case Json::value_t::object:
      return "object";
    default:
      return "unsupported value";
  }
}

void JsonValue::fail_expected(std::string_view expected) const {
  fail("expected " + std::string(expected) + ", got " + type_name());
}

bool JsonValue::as_bool() const {
  if (!json_->is_boolean()) fail_expected("boolean");
  return json_->get<bool>();
}

std::string JsonValue::as_string(size_t min_length, size_t max_length) const {
  if (!json_->is_string()) fail_expected("string");
  const auto& s = json_->get_ref<const std::string&>();
  if (s.size() < min_length) {
    fail(min_length == 1 ? "must not be empty"
                         : "string of " + std::to_string(s.size()) + " bytes, expected at least " +
                               std::to_string(min_length));
  }
  if (s.size() > max_length) {
    fail("string of " + std::to_string(s.size()) + " bytes, expected at most " +
         std::to_string(max_length));
  }
  return s;
}

int64_t JsonValue::as_integer(int64_t min, int64_t max, std::string_view noun) const {
  std::string range = std::to_string(min) + ".." + std::to_string(max);
  if (json_->is_number_unsigned()) {
    // nlohmann stores every non-negative literal as unsigned.
    auto u = json_->get<uint64_t>();
    if (u > static_cast<uint64_t>(max) || (min > 0 && u < static_cast<uint64_t>(min))) {
      fail(std::string(noun) + " " + std::to_string(u) + " out of range " + range);
    }
    return static_cast<int64_t>(u);
  }
  if (!json_->is_number_integer()) fail_expected("integer");
  auto i = json_->get<int64_t>();
  if (i < min || i > max)
    fail(std::string(noun) + " " + std::to_string(i) + " out of range " + range);
  return i;
}

std::vector<JsonValue> JsonValue::as_array(size_t min_items, size_t max_items) const {
  if (!json_->is_array()) fail_expected("array");
  const size_t n = json_->size();
  if (n < min_items) {
    fail(min_items == 1 ? "must not be empty"
                        : "array of " + std::to_string(n) + " elements, expected at least " +
                              std::to_string(min_items));
  }
  if (n > max_items) {
    fail("array of " + std::to_string(n) + " elements, expected at most " +
         std::to_string(max_items));
  }
  std::vector<JsonValue> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    out.emplace_back((*json_)[i], *file_, append_pointer(pointer_, std::to_string(i)));
  }
  return out;
}

JsonValue JsonValue::member(std::string_view key) const {
  require_object();
  auto it = json_->find(key);
  if (it == json_->end()) fail("missing required key \"" + std::string(key) + "\"");
  return JsonValue(*it, *file_, append_pointer(pointer_, key));
}

void JsonValue::require_object() const {
  if (!json_->is_object()) fail_expected("object");
}

// --- JsonObject ---

void JsonObject::mark_known(std::string_view key) {
  if (std::find(known_.begin(), known_.end(), key) == known_.end()) known_.emplace_back(key);
}

bool JsonObject::has(std::string_view key) {
  mark_known(key);
  return value_.json().contains(key);
}

std::optional<JsonValue> JsonObject::get(std::string_view key) {
  mark_known(key);
  auto it = value_.json().find(key);
  if (it == value_.json().end()) return std::nullopt;
  return JsonValue(*it, value_.file(), append_pointer(value_.pointer(), key));
}

JsonValue JsonObject::require(std::string_view key) {
  if (auto v = get(key)) return *v;
  if (const std::string* typo = near_miss(key, false)) {
    fail("unknown key \"" + *typo + "\" (did you mean \"" + std::string(key) + "\"?)");
  }
  fail("missing required key \"" + std::string(key) + "\"");
}

// Returns the closest key within max_suggestion_distance(key) edits of `key`:
// among the schema's keys if `among_known`, else among the object's keys
// that the schema has not claimed. nullptr if none.
const std::string* JsonObject::near_miss(std::string_view key, bool among_known) const {
  const std::string* best = nullptr;
  size_t best_distance = max_suggestion_distance(key) + 1;
  auto consider = [&](const std::string& candidate) {
    if (candidate == key) return;
    size_t d = edit_distance(candidate, key);
    if (d < best_distance) {
      best_distance = d;
      best = &candidate;
    }
  };
  if (among_known) {
    for (const auto& k : known_) consider(k);
  } else {
    for (auto it = value_.json().begin(); it != value_.json().end(); ++it) {
      const std::string& k = it.key();
      if (std::find(known_.begin(), known_.end(), k) == known_.end()) consider(k);
    }
  }
  return best;
}

void JsonObject::finish() const {
  for (auto it = value_.json().begin(); it != value_.json().end(); ++it) {
    const std::string& key = it.key();
    if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
    if (const std::string* suggestion = near_miss(key, true)) {
      fail("unknown key \"" + key + "\" (did you mean \"" + *suggestion + "\"?)");
    }
    fail("unknown key \"" + key + "\"");
  }
}

bool JsonObject::boolean(std::string_view key, bool fallback) {
  auto v = get(key);
  return v ? v->as_bool() : fallback;
}

std::string JsonObject::string(std::string_view key, std::string fallback, size_t min_length,
                               size_t max_length) {
  auto v = get(key);
  return v ? v->as_string(min_length, max_length) : fallback;
}

std::chrono::milliseconds JsonObject::milliseconds(std::string_view key,
                                                   std::chrono::milliseconds fallback,
                                                   int64_t min_ms, int64_t max_ms) {
  auto v = get(key);
  return v ? v->as_milliseconds(min_ms, max_ms) : fallback;
}

std::chrono::seconds JsonObject::seconds(std::string_view key, std::chrono::seconds fallback,
                                         int64_t min_s, int64_t max_s) {
  auto v = get(key);
  return v ? v->as_seconds(min_s, max_s) : fallback;
}

// --- JsonDocument ---

JsonDocument JsonDocument::load(const std::filesystem::path& dir, std::string_view name) {
  const std::string file = (dir / name).string();
  std::string error;
  auto text = read_small_file(dir / name, kMaxFileBytes, error);
  if (!text) throw ConfigError(file, "", error);
  return parse(file, *text);
}

JsonDocument JsonDocument::parse(std::string file, std::string_view text) {
  JsonDocument doc;
  doc.file_ = std::make_unique<std::string>(std::move(file));
  DuplicateKeyFinder duplicates;
  try {
    doc.json_ = std::make_unique<Json>(
        Json::parse(text, [&](int, nlohmann::detail::parse_event_t e, Json& parsed) {
          return duplicates.on_event(e, parsed);
        }));
  } catch (const Json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line L,
    // column C: DETAIL"; the operator needs "file:L:C: invalid JSON: DETAIL".
    std::string what = e.what();
    unsigned long line = 0, column = 0;
    int consumed = 0;
    size_t at = what.find("parse error at line ");
    if (at != std::string::npos &&
        std::sscanf(what.c_str() + at, "parse error at line %lu, column %lu: %n", &line, &column,
                    &consumed) == 2 &&
        consumed > 0) {
      throw ConfigError::syntax(*doc.file_, line, column, what.substr(at + consumed));
    }
    size_t bracket = what.find("] ");
    throw ConfigError(
        *doc.file_, "",
        "invalid JSON: " + (bracket == std::string::npos ? what : what.substr(bracket + 2)));
  }
  if (duplicates.found()) {
    throw ConfigError(*doc.file_, duplicates.pointer(),
                      "duplicate key \"" + duplicates.key() + "\"");
  }
  return doc;
}

}  // namespace edgepin::config
