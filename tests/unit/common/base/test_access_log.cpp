#include <catch2/catch.hpp>

#include <string>

#include "access_log.h"

using edgepin::access_log::escape;
using edgepin::access_log::Line;

TEST_CASE("access log: visible ASCII is written as is", "[access_log]") {
  CHECK(escape("app.example.com") == "app.example.com");
  CHECK(escape("/a/b;p=1?x=%20&y={}") == "/a/b;p=1?x=%20&y={}");
}

TEST_CASE("access log: space, quote, backslash, controls and high bytes are %XX", "[access_log]") {
  CHECK(escape("a b") == "a%20b");
  CHECK(escape("a\"b") == "a%22b");
  CHECK(escape("a\\b") == "a%5Cb");
  CHECK(escape("x\r\nconn client=1.2.3.4") == "x%0D%0Aconn%20client=1.2.3.4");
  CHECK(escape(std::string("n\0ul", 4)) == "n%00ul");
  CHECK(escape("\x7f\xff\x80") == "%7F%FF%80");
}

TEST_CASE("access log: empty is '-', long values are cut with '...'", "[access_log]") {
  CHECK(escape("") == "-");
  CHECK(escape("abcdef", 4) == "abcd...");
  CHECK(escape("abcd", 4) == "abcd");
  // The cap counts output bytes: an escape is never split.
  CHECK(escape("  x", 4) == "%20%20...");
}

TEST_CASE("access log: a line is kind then key=value fields", "[access_log]") {
  Line line("conn");
  line.add("client", "127.0.0.1:5000").add("sni", "evil\nhttp x=1").add("bytes_in", uint64_t{42});
  line.add("attempts", 2).add("resumed", true).add("sni2", "");
  line.add_quoted("error", "Connection refused \"now\"");
  CHECK(line.text() ==
        "conn client=127.0.0.1:5000 sni=evil%0Ahttp%20x=1 bytes_in=42 attempts=2 resumed=1 sni2=- "
        "error=\"Connection refused %22now%22\"");
}

TEST_CASE("access log: no value can add a field or a line", "[access_log]") {
  const std::string hostile = "a\" b=\"c\nd e";
  Line line("http");
  line.add("path", hostile).add_quoted("error", hostile);
  const std::string& t = line.text();
  CHECK(t.find('\n') == std::string::npos);
  // Exactly the three separators the writer put there: kind/path, path/error.
  size_t spaces_outside_quotes = 0;
  bool quoted = false;
  for (char c : t) {
    if (c == '"') quoted = !quoted;
    if (c == ' ' && !quoted) ++spaces_outside_quotes;
  }
  CHECK(spaces_outside_quotes == 2);
  CHECK(!quoted);
}
