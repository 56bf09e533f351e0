#pragma once
// The access-log line both binaries write: "<kind> key=value key=value ...",
// one line per lb session ("conn ...") or node-proxy request ("http ..."),
// with one escaping rule so a hostile SNI, path or method can never forge a
// field or a line, and a reader (or a log shipper) splits every line the
// same way:
//   - a byte outside visible US-ASCII (0x21..0x7e), '"' and '\\' become
//     "%XX" (upper-case hex), so no value holds a space, a quote or a
//     newline. '%' itself stays: request targets are already %-encoded and
//     stay readable as sent;
//   - a quoted value (key="...", for free text such as an error message)
//     keeps its spaces and escapes everything else the same way;
//   - a value longer than its cap is cut and ends in "...";
//   - an empty value is written as "-".
// Keys are identifiers chosen in code and are written as they are.
#include <concepts>
#include <cstddef>
#include <string>
#include <string_view>

namespace edgepin::access_log {

// Cap for a value when the caller names none.
inline constexpr size_t kDefaultMax = 256;

// `value` escaped as above (unquoted form), at most `max` bytes of output
// before the "..." marker; "-" if empty.
std::string escape(std::string_view value, size_t max = kDefaultMax);

class Line {
 public:
  // Starts a line with its kind: "conn", "http".
  explicit Line(std::string_view kind);

  // key=<escaped value>
  Line& add(std::string_view key, std::string_view value, size_t max = kDefaultMax);
  // key=<decimal>; bool as 1/0.
  template <typename T>
  requires std::integral<T> Line& add(std::string_view key, T value) {
    if constexpr (std::same_as<T, bool>) return add_raw(key, value ? "1" : "0");
    return add_raw(key, std::to_string(value));
  }
  // key="<escaped value, spaces kept>"
  Line& add_quoted(std::string_view key, std::string_view value, size_t max = kDefaultMax);

  const std::string& text() const { return text_; }
  std::string take() { return std::move(text_); }

 private:
  Line& add_raw(std::string_view key, std::string_view value);
  std::string text_;
};

}  // namespace edgepin::access_log
