#pragma once
// The reading layer under every config file: a JSON document whose values
// know their file and JSON pointer, and object readers that remember which
// keys the schema asked for, so that everything else in the file is reported
// as an unknown key. Every failure is a ConfigError whose what() is one line:
//
//   <dir>/<file>: <json-pointer>: <message>      (a value in the file)
//   <dir>/<file>: <message>                      (the whole file)
//   <dir>/<file>:<line>:<column>: invalid JSON: <detail>
//
// The schema code (config_cluster.cpp, config_lb.cpp, config_node_proxy.cpp)
// reads each object inside JsonValue::object(), which checks for unknown keys
// when the body returns, so no object can forget that check.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace edgepin::config {

// ordered_json keeps document order, so "the first unknown key" is the
// first one in the file, not the first in alphabetical order.
using Json = nlohmann::ordered_json;

class ConfigError : public std::runtime_error {
 public:
  // `file` as shown to the operator ("conf/lb.json"); `pointer` is an RFC
  // 6901 JSON pointer, empty for the whole file.
  ConfigError(std::string file, std::string pointer, std::string message);

  // A JSON syntax error: "<file>:<line>:<column>: invalid JSON: <detail>".
  static ConfigError syntax(std::string file, size_t line, size_t column, std::string detail);

  const std::string& file() const noexcept { return file_; }
  const std::string& pointer() const noexcept { return pointer_; }
  const std::string& message() const noexcept { return message_; }

 private:
  ConfigError(std::string file, std::string pointer, std::string message, std::string line);
  std::string file_;
  std::string pointer_;
  std::string message_;
};

// Appends one reference token to a JSON pointer, escaping '~' and '/'.
std::string append_pointer(const std::string& pointer, std::string_view token);

class JsonObject;

// A value inside a document, with its location for error messages. Cheap to
// copy; refers to the document, which must outlive it.
class JsonValue {
 public:
  JsonValue(const Json& json, const std::string& file, std::string pointer)
      : json_(&json), file_(&file), pointer_(std::move(pointer)) {}

  // A location that holds no value: for errors about a key that was left
  // out (its default is at fault) or about a value read earlier from
  // another document. `file` must outlive the result.
  static JsonValue placeholder(const std::string& file, std::string pointer);

  const Json& json() const { return *json_; }
  const std::string& file() const { return *file_; }
  const std::string& pointer() const { return pointer_; }

  // Throws ConfigError(file, pointer, message).
  [[noreturn]] void fail(const std::string& message) const;

  // "null", "boolean", "integer", "non-integer number", "string", "array",
  // "object": the words used in "expected X, got Y".
  std::string type_name() const;

  // Each as*() returns the typed value or throws "expected <type>, got
  // <type>" (or the range message) at this value.
  bool as_bool() const;
  // A string of min_length..max_length bytes.
  std::string as_string(size_t min_length = 0, size_t max_length = kMaxStringBytes) const;
  // An integer in [min, max]; otherwise "<noun> <value> out of range
  // <min>..<max>" ("port 70000 out of range 1..65535").
  int64_t as_integer(int64_t min, int64_t max, std::string_view noun = "value") const;
  template <typename T>
  T as_int(T min, T max, std::string_view noun = "value") const {
    return static_cast<T>(as_integer(static_cast<int64_t>(min), static_cast<int64_t>(max), noun));
  }
  // Durations are integers in the unit the key's name ends with (_ms, _s).
  std::chrono::milliseconds as_milliseconds(int64_t min_ms, int64_t max_ms) const {
    return std::chrono::milliseconds(as_integer(min_ms, max_ms));
  }
  std::chrono::seconds as_seconds(int64_t min_s, int64_t max_s) const {
    return std::chrono::seconds(as_integer(min_s, max_s));
  }
  // One of the listed strings; otherwise `expected one of "a", "b", got "c"`.
  template <typename E>
  E as_enum(std::initializer_list<std::pair<std::string_view, E>> choices) const;
  // The elements of an array of min_items..max_items elements.
  std::vector<JsonValue> as_array(size_t min_items = 0, size_t max_items = kMaxArrayItems) const;

  // The member `key` of this object, for errors found after the object was
  // read (duplicates, conflicts). Throws `missing required key` if absent.
  JsonValue member(std::string_view key) const;

  // Reads an object: calls body(JsonObject&) and, once it returns, throws
  // for the first key the body never asked for. Returns body's result.
  template <typename F>
  auto object(F&& body) const;

  static constexpr size_t kMaxStringBytes = 4096;
  static constexpr size_t kMaxArrayItems = 65536;

 private:
  void require_object() const;
  [[noreturn]] void fail_expected(std::string_view expected) const;
  const Json* json_;
  const std::string* file_;
  std::string pointer_;
};

// The keys of one JSON object, read by name. Each lookup marks the key as
// part of the schema; finish() (called by JsonValue::object) reports the
// rest as unknown.
class JsonObject {
 public:
  explicit JsonObject(const JsonValue& value) : value_(value) {}

  const JsonValue& value() const { return value_; }
  [[noreturn]] void fail(const std::string& message) const { value_.fail(message); }

  // True if the key is present.
  bool has(std::string_view key);
  // The value if present, std::nullopt if absent.
  std::optional<JsonValue> get(std::string_view key);
  // The value; throws `missing required key "k"` if absent (or, if the
  // object holds a near-miss spelling of it, `unknown key "nmae" (did you
  // mean "name"?)`, which is what the operator needs to hear).
  JsonValue require(std::string_view key);

  // Shorthands: the typed value of `key`, or `fallback` if it is absent.
  bool boolean(std::string_view key, bool fallback);
  std::string string(std::string_view key, std::string fallback, size_t min_length = 0,
                     size_t max_length = JsonValue::kMaxStringBytes);
  template <typename T>
  T integer(std::string_view key, T fallback, T min, T max, std::string_view noun = "value") {
    auto v = get(key);
    return v ? v->as_int<T>(min, max, noun) : fallback;
  }
  std::chrono::milliseconds milliseconds(std::string_view key, std::chrono::milliseconds fallback,
                                         int64_t min_ms, int64_t max_ms);
  std::chrono::seconds seconds(std::string_view key, std::chrono::seconds fallback, int64_t min_s,
                               int64_t max_s);
  template <typename E>
  E enumeration(std::string_view key, E fallback,
                std::initializer_list<std::pair<std::string_view, E>> choices) {
    auto v = get(key);
    return v ? v->as_enum(choices) : fallback;
  }

  // Throws `unknown key "k"` (with a suggestion when one of the known keys
  // is one or two edits away) for the first key, in document order, that
  // was never looked up.
  void finish() const;

 private:
  void mark_known(std::string_view key);
  const std::string* near_miss(std::string_view key, bool among_known) const;
  JsonValue value_;
  std::vector<std::string> known_;
};

// One parsed configuration file. Values handed out refer into it.
class JsonDocument {
 public:
  // Reads and parses `dir / name`. Throws ConfigError for a missing,
  // unreadable, non-regular or oversized file, invalid JSON (with line and
  // column) and duplicate keys in an object.
  static JsonDocument load(const std::filesystem::path& dir, std::string_view name);
  // Parses `text` as the contents of a file shown as `file`; same errors.
  static JsonDocument parse(std::string file, std::string_view text);

  JsonDocument(JsonDocument&&) = default;
  JsonDocument& operator=(JsonDocument&&) = default;
  JsonDocument(const JsonDocument&) = delete;
  JsonDocument& operator=(const JsonDocument&) = delete;

  const std::string& file() const { return *file_; }
  // The root value (pointer ""). Valid while the document lives.
  JsonValue root() const { return JsonValue(*json_, *file_, ""); }

  // Config files are small; anything bigger is a mistake (a log file named
  // on the command line), not a configuration.
  static constexpr size_t kMaxFileBytes = 4 * 1024 * 1024;

 private:
  JsonDocument() = default;
  // Heap-allocated so that JsonValues stay valid when the document moves.
  std::unique_ptr<std::string> file_;
  std::unique_ptr<Json> json_;
};

// --- template definitions ---

template <typename E>
E JsonValue::as_enum(std::initializer_list<std::pair<std::string_view, E>> choices) const {
  std::string list;
  for (const auto& [name, value] : choices) {
    if (json_->is_string() && json_->template get_ref<const std::string&>() == name) return value;
    if (!list.empty()) list += ", ";
    // Appended piece by piece: `"\"" + std::string(...)` makes GCC 12 at -O3
    // warn (-Wrestrict) inside libstdc++'s operator+ (a false positive).
    list += '"';
    list += name;
    list += '"';
  }
  if (json_->is_string())
    fail("expected one of " + list + ", got \"" + json_->template get_ref<const std::string&>() +
         "\"");
  fail("expected one of " + list + ", got " + type_name());
}

template <typename F>
auto JsonValue::object(F&& body) const {
  require_object();
  JsonObject obj(*this);
  if constexpr (std::is_void_v<decltype(body(obj))>) {
    body(obj);
    obj.finish();
  } else {
    auto result = body(obj);
    obj.finish();
    return result;
  }
}

}  // namespace edgepin::config
