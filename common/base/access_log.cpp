#include "access_log.h"

namespace edgepin::access_log {
namespace {

constexpr char kHex[] = "0123456789ABCDEF";

// Appends `value` to `out` by the one rule; `keep_space` for quoted values.
void append_escaped(std::string& out, std::string_view value, size_t max, bool keep_space) {
  if (value.empty()) {
    out += '-';
    return;
  }
  size_t written = 0;
  for (const char ch : value) {
    if (written >= max) {
      out += "...";
      return;
    }
    const auto c = static_cast<unsigned char>(ch);
    const bool plain = (c > 0x20 && c < 0x7f && c != '"' && c != '\\') || (keep_space && c == ' ');
    if (plain) {
      out += static_cast<char>(c);
      ++written;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
      written += 3;
    }
  }
}

}  // namespace

std::string escape(std::string_view value, size_t max) {
  std::string out;
  append_escaped(out, value, max, false);
  return out;
}

Line::Line(std::string_view kind) : text_(kind) { text_.reserve(256); }

Line& Line::add(std::string_view key, std::string_view value, size_t max) {
  text_ += ' ';
  text_ += key;
  text_ += '=';
  append_escaped(text_, value, max, false);
  return *this;
}

Line& Line::add_quoted(std::string_view key, std::string_view value, size_t max) {
  text_ += ' ';
  text_ += key;
  text_ += "=\"";
  append_escaped(text_, value, max, true);
  text_ += '"';
  return *this;
}

Line& Line::add_raw(std::string_view key, std::string_view value) {
  text_ += ' ';
  text_ += key;
  text_ += '=';
  text_ += value;
  return *this;
}

}  // namespace edgepin::access_log
