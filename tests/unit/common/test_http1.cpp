// Unit tests for common/http1: request and response heads, body framing,
// chunked decoding, connection semantics, limits, and the smuggling corpus
// in http1_smuggling_cases.txt.
//
// Every message is fed whole, byte by byte and split at seeded random points
// and must give the same result each way. Head buffers are reallocated on
// every call, so a parser that kept pointers into an old buffer would be
// caught by the sanitizer build.
#include <catch2/catch.hpp>

#include <deque>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "http1.h"

using namespace edgepin;
using namespace edgepin::http1;

namespace {

std::span<const uint8_t> as_span(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\r')
      out += "\\r";
    else if (c == '\n')
      out += "\\n";
    else if (c == '\\')
      out += "\\\\";
    else if (c < 0x20 || c >= 0x7f) {
      char tmp[8];
      std::snprintf(tmp, sizeof tmp, "\\x%02x", c);
      out += tmp;
    } else
      out += static_cast<char>(c);
  }
  return out;
}

std::string describe(const HeadResult& r) {
  std::ostringstream o;
  o << to_string(r.status) << " consumed=" << r.consumed;
  if (r.status == ParseStatus::Error)
    o << " error=" << to_string(r.error) << " at=" << r.error_offset;
  return o.str();
}

std::string describe(const FieldList& fields) {
  std::string out;
  for (const Field& f : fields)
    out += "\n  " + printable(f.name) + ": [" + printable(f.value) + "]";
  return out;
}

std::string describe(const ConnectionOptions& c) {
  return std::string(c.close ? "close," : "") + (c.keep_alive ? "keep-alive," : "") +
         (c.upgrade ? "upgrade," : "");
}

std::string describe(const RequestHead& h) {
  std::ostringstream o;
  o << "method=" << printable(h.method) << " target=" << printable(h.target)
    << " form=" << to_string(h.form) << " version=" << to_string(h.version)
    << " authority=" << printable(h.authority) << " path=" << printable(h.path)
    << " framing=" << to_string(h.framing.kind) << ":" << h.framing.length
    << " conn=" << describe(h.connection) << " expect=" << h.expect_continue
    << " upgrade=" << h.upgrade << " ws=" << h.upgrade_websocket
    << " protocols=" << printable(h.upgrade_protocols) << describe(h.fields);
  return o.str();
}

std::string describe(const ResponseHead& h) {
  std::ostringstream o;
  o << "version=" << to_string(h.version) << " status=" << h.status
    << " reason=" << printable(h.reason) << " conn=" << describe(h.connection)
    << " cl=" << h.has_content_length << ":" << h.content_length << " chunked=" << h.chunked
    << " protocols=" << printable(h.upgrade_protocols) << describe(h.fields);
  return o.str();
}

// A plan is the list of segment sizes the stream arrives in.
using Plan = std::vector<size_t>;

Plan whole_plan(size_t n) { return n ? Plan{n} : Plan{}; }
Plan bytewise_plan(size_t n) { return Plan(n, 1); }
Plan random_plan(size_t n, uint32_t seed, size_t max_segment) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> len(1, max_segment);
  Plan p;
  for (size_t left = n; left > 0;) {
    const size_t s = std::min(left, len(rng));
    p.push_back(s);
    left -= s;
  }
  return p;
}

// Every plan a message is checked with: whole, byte by byte (when short
// enough to be cheap), and seeded random splits of small and large pieces.
std::vector<Plan> plans_for(size_t n) {
  std::vector<Plan> plans{whole_plan(n)};
  if (n <= 4096) plans.push_back(bytewise_plan(n));
  for (uint32_t seed = 1; seed <= 6; ++seed)
    plans.push_back(random_plan(n, seed * 7919 + static_cast<uint32_t>(n), seed <= 3 ? 7 : 300));
  return plans;
}

// Feeds `msg` to a fresh head parser segment by segment, each time in a
// newly allocated buffer holding everything so far; stops at the first
// answer that is not NeedMore.
template <class Parser>
std::string feed_head(std::string_view msg, const Plan& plan, const Limits& limits) {
  Parser parser(limits);
  std::vector<uint8_t> buf;
  HeadResult r;
  size_t off = 0;
  for (size_t seg : plan) {
    std::vector<uint8_t> next(buf.size() + seg);
    std::copy(buf.begin(), buf.end(), next.begin());
    std::memcpy(next.data() + buf.size(), msg.data() + off, seg);
    off += seg;
    buf.swap(next);
    std::vector<uint8_t>().swap(next);  // free the old buffer now
    r = parser.parse(buf);
    if (r.status != ParseStatus::NeedMore) break;
  }
  std::string out = describe(r);
  if (r.status == ParseStatus::Done) out += "\n" + describe(parser.head());
  return out;
}

// The description of a head parse, after checking that every plan gives it.
template <class Parser>
std::string consistent_head(std::string_view msg, const Limits& limits = {}) {
  const std::string expected = feed_head<Parser>(msg, whole_plan(msg.size()), limits);
  for (const Plan& plan : plans_for(msg.size())) {
    INFO("message: " << printable(msg.substr(0, 300)) << "\nsegments: " << plan.size());
    REQUIRE(feed_head<Parser>(msg, plan, limits) == expected);
  }
  return expected;
}

// What a body decoder made of a stream.
struct BodyRun {
  std::string data;
  ParseStatus status = ParseStatus::NeedMore;
  uint64_t consumed = 0;
  Error error = Error::None;
  uint64_t error_offset = 0;
  std::string describe() const {
    std::ostringstream o;
    o << to_string(status) << " consumed=" << consumed << " data=[" << printable(data) << "]";
    if (status == ParseStatus::Error) o << " error=" << to_string(error) << " at=" << error_offset;
    return o.str();
  }
  bool operator==(const BodyRun&) const = default;
};

// Streams `stream` through a BodyDecoder like the proxy will: the pending
// bytes are offered after each segment, at most max_data body bytes are
// taken per call, consumed bytes are dropped. With eof, finish() is called
// after the last segment if the body is still open.
BodyRun feed_body(const BodyFraming& framing, std::string_view stream, const Plan& plan,
                  size_t max_data, const Limits& limits = {}, bool eof = false) {
  BodyDecoder dec(framing, limits);
  BodyRun run;
  std::string pending;
  size_t off = 0;
  auto take = [&](const BodyResult& r) {
    // Every span handed out lies inside the input and before `consumed`.
    const auto* base = reinterpret_cast<const uint8_t*>(pending.data());
    if (!r.data.empty()) {
      REQUIRE(r.data.data() >= base);
      REQUIRE(r.data.data() + r.data.size() <= base + r.consumed);
    }
    REQUIRE(r.consumed <= pending.size());
    REQUIRE(r.data.size() <= max_data);
    run.data.append(reinterpret_cast<const char*>(r.data.data()), r.data.size());
    pending.erase(0, r.consumed);
    run.consumed += r.consumed;
    run.status = r.status;
    run.error = r.error;
    run.error_offset = r.error_offset;
  };
  for (size_t seg : plan) {
    pending.append(stream.substr(off, seg));
    off += seg;
    for (int guard = 0; guard < 1000000; ++guard) {
      const BodyResult r = dec.decode(as_span(pending), max_data);
      take(r);
      if (r.status != ParseStatus::NeedMore) break;
      if (r.consumed == 0 && r.data.empty()) break;  // wait for bytes
    }
    if (run.status != ParseStatus::NeedMore) break;
  }
  if (eof && run.status == ParseStatus::NeedMore) take(dec.finish());
  REQUIRE(run.data.size() == dec.body_bytes());
  return run;
}

BodyRun consistent_body(const BodyFraming& framing, std::string_view stream,
                        const Limits& limits = {}, bool eof = false) {
  const BodyRun expected =
      feed_body(framing, stream, whole_plan(stream.size()), kNoDataLimit, limits, eof);
  std::vector<Plan> plans = plans_for(stream.size());
  // Two segments split at every point.
  for (size_t cut = 1; cut < stream.size() && stream.size() <= 2048; ++cut)
    plans.push_back({cut, stream.size() - cut});
  for (const Plan& plan : plans) {
    for (size_t max_data : {kNoDataLimit, size_t{1}, size_t{3}}) {
      if (max_data == 1 && plan.size() > 1 && stream.size() > 4096) continue;  // bounded time
      INFO("stream: " << printable(stream.substr(0, 300)) << "\nsegments: " << plan.size()
                      << " max_data: " << max_data);
      REQUIRE(feed_body(framing, stream, plan, max_data, limits, eof).describe() ==
              expected.describe());
    }
  }
  return expected;
}

// A connection's worth of requests, processed like the node-proxy will:
// head, then body with the head's framing, then the next pipelined head.
// Returns one line per event; stops at the first error.
struct Transcript {
  std::vector<std::string> events;
  Error first_error = Error::None;
  std::string text() const {
    std::string s;
    for (const auto& e : events) s += e + "\n";
    return s;
  }
};

template <class Parser>
Transcript run_stream(std::string_view stream, const Plan& plan, const Limits& limits,
                      size_t max_data, std::string_view request_method = "GET") {
  Transcript t;
  Parser parser(limits);
  std::optional<BodyDecoder> body;
  std::string body_data;
  std::string pending;
  bool stopped = false;
  size_t messages = 0;
  constexpr size_t kMaxMessages = 64;
  auto stop_with = [&](Error e, uint64_t at, const char* where) {
    t.events.push_back(std::string(where) + " error " + to_string(e) + " at " + std::to_string(at));
    t.first_error = e;
    stopped = true;
  };
  auto pump = [&]() {
    for (int guard = 0; guard < 1000000 && !stopped; ++guard) {
      if (!body) {
        // The head parser gets everything since the head began, in a
        // fresh allocation each time.
        const std::vector<uint8_t> buf(pending.begin(), pending.end());
        const HeadResult r = parser.parse(buf);
        if (r.status == ParseStatus::NeedMore) return;
        if (r.status == ParseStatus::Error) return stop_with(r.error, r.error_offset, "head");
        BodyFraming framing;
        if constexpr (std::is_same_v<Parser, RequestParser>) {
          framing = parser.head().framing;
          if (Error e = check_body_size(framing, limits.max_body_bytes); e != Error::None)
            return stop_with(e, 0, "head");
        } else {
          framing = response_framing(parser.head(), request_method);
        }
        t.events.push_back("head " + describe(r) + " " + describe(parser.head()));
        pending.erase(0, r.consumed);
        body.emplace(framing, limits);
        body_data.clear();
        continue;
      }
      const BodyResult r = body->decode(as_span(pending), max_data);
      body_data.append(reinterpret_cast<const char*>(r.data.data()), r.data.size());
      pending.erase(0, r.consumed);
      if (r.status == ParseStatus::Error) {
        t.events.push_back("body [" + printable(body_data) + "]");
        return stop_with(r.error, r.error_offset, "body");
      }
      if (r.status == ParseStatus::Done) {
        t.events.push_back("body done [" + printable(body_data) + "]");
        body.reset();
        parser.reset();
        if (++messages == kMaxMessages) stopped = true;
        continue;
      }
      if (r.consumed == 0 && r.data.empty()) return;
    }
  };
  size_t off = 0;
  for (size_t seg : plan) {
    pending.append(stream.substr(off, seg));
    off += seg;
    pump();
    if (stopped) break;
  }
  if (!stopped)
    t.events.push_back(std::string("end ") +
                       (body ? "in body [" + printable(body_data) + "]" : "in head") +
                       " pending=" + std::to_string(pending.size()));
  return t;
}

template <class Parser>
Transcript consistent_stream(std::string_view stream, const Limits& limits = {},
                             std::string_view method = "GET") {
  const Transcript expected =
      run_stream<Parser>(stream, whole_plan(stream.size()), limits, kNoDataLimit, method);
  for (const Plan& plan : plans_for(stream.size())) {
    for (size_t max_data : {kNoDataLimit, size_t{2}}) {
      INFO("stream: " << printable(stream.substr(0, 300)) << "\nsegments: " << plan.size()
                      << " max_data: " << max_data);
      REQUIRE(run_stream<Parser>(stream, plan, limits, max_data, method).text() == expected.text());
    }
  }
  return expected;
}

HeadResult parse_request(std::string_view msg, RequestParser& p) { return p.parse(as_span(msg)); }

// Expects a request head to fail with `e` (and the same way however split).
std::string error_prefix(Error e) {
  return std::string("error consumed=0 error=") + to_string(e) + " ";
}

void require_request_error(std::string_view msg, Error e, const Limits& limits = {}) {
  INFO("request: " << printable(msg.substr(0, 300)));
  const std::string d = consistent_head<RequestParser>(msg, limits);
  INFO("got: " << d);
  REQUIRE(d.rfind(error_prefix(e), 0) == 0);
}

void require_response_error(std::string_view msg, Error e, const Limits& limits = {}) {
  INFO("response: " << printable(msg.substr(0, 300)));
  const std::string d = consistent_head<ResponseParser>(msg, limits);
  INFO("got: " << d);
  REQUIRE(d.rfind(error_prefix(e), 0) == 0);
}

// Every strict prefix of a valid head is NeedMore.
template <class Parser>
void require_prefixes_need_more(std::string_view msg, size_t head_len, const Limits& limits = {}) {
  for (size_t i = 0; i < head_len; ++i) {
    Parser p(limits);
    INFO("prefix " << i << " of " << printable(msg));
    REQUIRE(p.parse(as_span(msg.substr(0, i))).status == ParseStatus::NeedMore);
  }
}

}  // namespace

// ---------------------------------------------------------------------------

TEST_CASE("error codes have unique names and the documented statuses", "[http1]") {
  std::set<std::string> names;
  const std::set<int> allowed{0, 400, 413, 414, 417, 431, 500, 501, 502, 505};
  for (size_t i = 0; i < kErrorCount; ++i) {
    const auto e = static_cast<Error>(i);
    const std::string name = to_string(e);
    REQUIRE(names.insert(name).second);
    Error back = Error::None;
    REQUIRE(error_from_string(name, back));
    REQUIRE(back == e);
    REQUIRE(allowed.count(http_status(e)) == 1);
  }
  Error unused;
  REQUIRE_FALSE(error_from_string("no_such_error", unused));
  CHECK(http_status(Error::None) == 0);
  CHECK(http_status(Error::HeadTooLarge) == 431);
  CHECK(http_status(Error::TooManyFields) == 431);
  CHECK(http_status(Error::RequestLineTooLong) == 414);
  CHECK(http_status(Error::UnsupportedTransferCoding) == 501);
  CHECK(http_status(Error::ChunkedNotLast) == 400);
  CHECK(http_status(Error::UnsupportedVersion) == 505);
  CHECK(http_status(Error::BodyTooLarge) == 413);
  CHECK(http_status(Error::ResponseHeadTooLarge) == 502);
  CHECK(std::string(to_string(Error::ContentLengthWithTransferEncoding)) ==
        "content_length_with_transfer_encoding");
}

TEST_CASE("valid requests parse to the expected head", "[http1]") {
  struct Case {
    std::string raw;
    std::string method, target;
    TargetForm form;
    Version version;
    std::string authority, path;
    BodyFraming framing;
    bool keep_alive;
  };
  const std::vector<Case> cases = {
      {"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "GET", "/", TargetForm::Origin,
       Version::Http11, "example.com", "/", BodyFraming::none(), true},
      {"GET /a/b;p=1/c?x=1&y=%20|{}[]\"^`<>\\ HTTP/1.1\r\nHost: example.com:8443\r\nUser-Agent: "
       "t\r\n\r\n",
       "GET", "/a/b;p=1/c?x=1&y=%20|{}[]\"^`<>\\", TargetForm::Origin, Version::Http11,
       "example.com:8443", "/a/b;p=1/c?x=1&y=%20|{}[]\"^`<>\\", BodyFraming::none(), true},
      {"GET /%7Euser/~x-._!$&'()*+,;=:@ HTTP/1.1\r\nHost: a\r\n\r\n", "GET",
       "/%7Euser/~x-._!$&'()*+,;=:@", TargetForm::Origin, Version::Http11, "a",
       "/%7Euser/~x-._!$&'()*+,;=:@", BodyFraming::none(), true},
      {"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", "POST", "/upload",
       TargetForm::Origin, Version::Http11, "h", "/upload", BodyFraming::content_length(5), true},
      {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", "POST", "/",
       TargetForm::Origin, Version::Http11, "h", "/", BodyFraming::chunked(), true},
      {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\tChunked\r\n\r\n", "POST", "/",
       TargetForm::Origin, Version::Http11, "h", "/", BodyFraming::chunked(), true},
      {"GET http://Example.COM:80/p?q HTTP/1.1\r\nHost: other.example\r\n\r\n", "GET",
       "http://Example.COM:80/p?q", TargetForm::Absolute, Version::Http11, "Example.COM:80", "/p?q",
       BodyFraming::none(), true},
      {"GET HTTPS://a.b HTTP/1.1\r\nHost: a.b\r\n\r\n", "GET", "HTTPS://a.b", TargetForm::Absolute,
       Version::Http11, "a.b", "", BodyFraming::none(), true},
      {"GET http://a?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "http://a?x=1", TargetForm::Absolute,
       Version::Http11, "a", "?x=1", BodyFraming::none(), true},
      {"GET http://[2001:db8::1]:8080/ HTTP/1.0\r\n\r\n", "GET", "http://[2001:db8::1]:8080/",
       TargetForm::Absolute, Version::Http10, "[2001:db8::1]:8080", "/", BodyFraming::none(),
       false},
      {"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", "CONNECT", "a.example:443",
       TargetForm::Authority, Version::Http11, "a.example:443", "", BodyFraming::none(), true},
      {"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", "OPTIONS", "*", TargetForm::Asterisk,
       Version::Http11, "h", "*", BodyFraming::none(), true},
      {"GET / HTTP/1.0\r\n\r\n", "GET", "/", TargetForm::Origin, Version::Http10, "", "/",
       BodyFraming::none(), false},
      {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: h\r\n\r\n", "GET", "/",
       TargetForm::Origin, Version::Http10, "h", "/", BodyFraming::none(), true},
      {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\nHost: h\r\n\r\n", "GET", "/",
       TargetForm::Origin, Version::Http10, "h", "/", BodyFraming::none(), false},
      {"GET / HTTP/1.1\r\nConnection: ,, Close ,\r\nHost: h\r\n\r\n", "GET", "/",
       TargetForm::Origin, Version::Http11, "h", "/", BodyFraming::none(), false},
      {"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET", "/", TargetForm::Origin, Version::Http11,
       "h", "/", BodyFraming::none(), true},
      {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\ncontent-length: 005\r\n\r\nhello",
       "POST", "/", TargetForm::Origin, Version::Http11, "h", "/", BodyFraming::content_length(5),
       true},
      {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", "POST", "/", TargetForm::Origin,
       Version::Http11, "h", "/", BodyFraming::content_length(0), true},
      {"PURGE /x HTTP/1.1\r\nHost: h\r\n\r\n", "PURGE", "/x", TargetForm::Origin, Version::Http11,
       "h", "/x", BodyFraming::none(), true},
      {"M-SEARCH /x HTTP/1.1\r\nHost: h\r\n\r\n", "M-SEARCH", "/x", TargetForm::Origin,
       Version::Http11, "h", "/x", BodyFraming::none(), true},
      {"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", "GET", "/", TargetForm::Origin,
       Version::Http11, "[::1]:8080", "/", BodyFraming::none(), true},
      {"GET / HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n", "GET", "/", TargetForm::Origin, Version::Http11,
       "192.0.2.1", "/", BodyFraming::none(), true},
      {"GET / HTTP/1.1\r\nHost: xn--bcher-kva.example\r\n\r\n", "GET", "/", TargetForm::Origin,
       Version::Http11, "xn--bcher-kva.example", "/", BodyFraming::none(), true},
  };
  for (const Case& c : cases) {
    INFO("request: " << printable(c.raw));
    const std::string d = consistent_head<RequestParser>(c.raw);
    REQUIRE(d.rfind("done", 0) == 0);
    RequestParser p;
    const HeadResult r = parse_request(c.raw, p);
    REQUIRE(r.status == ParseStatus::Done);
    const size_t body_start = c.raw.find("\r\n\r\n", c.raw.find_first_not_of("\r\n")) + 4;
    CHECK(r.consumed == body_start);
    const RequestHead& h = p.head();
    CHECK(h.method == c.method);
    CHECK(h.target == c.target);
    CHECK(h.form == c.form);
    CHECK(h.version == c.version);
    CHECK(h.authority == c.authority);
    CHECK(h.path == c.path);
    CHECK(h.framing == c.framing);
    CHECK(request_keep_alive(h) == c.keep_alive);
    require_prefixes_need_more<RequestParser>(c.raw, r.consumed);
  }
}

TEST_CASE("field values are trimmed, case is kept, obs-text is allowed", "[http1]") {
  const std::string raw =
      "GET / HTTP/1.1\r\nHost: h\r\nX-Spaces:  \t a  b \t \r\nX-Empty:\r\nX-Empty2: \t \r\n"
      "x-CaSe: V\r\nX-Obs: caf\xc3\xa9\xff\r\nX-Vchar: !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\r\n\r\n";
  consistent_head<RequestParser>(raw);
  RequestParser p;
  REQUIRE(parse_request(raw, p).status == ParseStatus::Done);
  const FieldList& f = p.head().fields;
  REQUIRE(f.size() == 7);
  CHECK(f[1].name == "X-Spaces");
  CHECK(f[1].value == "a  b");
  CHECK(f[2].value.empty());
  CHECK(f[3].value.empty());
  CHECK(f[4].name == "x-CaSe");
  CHECK(f.find("X-CASE") == &f[4]);
  CHECK(f[5].value == "caf\xc3\xa9\xff");
  CHECK(f[6].value == "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~");
  CHECK(f.count("x-empty") == 1);
  CHECK(f.find("missing") == nullptr);
}

TEST_CASE("head views follow the buffer passed to the last parse", "[http1]") {
  const std::string raw = "GET /x HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n";
  RequestParser p;
  std::vector<uint8_t> first(raw.begin(), raw.end());
  REQUIRE(p.parse(first).status == ParseStatus::Done);
  std::vector<uint8_t> second(raw.begin(), raw.end());
  second.push_back('Z');  // bytes of the next message may follow
  const HeadResult again = p.parse(second);
  REQUIRE(again.status == ParseStatus::Done);
  REQUIRE(again.consumed == raw.size());
  const auto* b = reinterpret_cast<const char*>(second.data());
  CHECK(p.head().method.data() == b);
  CHECK(p.head().fields[1].value.data() == b + raw.find("b\r\n"));
  // A shorter buffer breaks the contract and is reported, not trusted.
  std::vector<uint8_t> shorter(raw.begin(), raw.begin() + 5);
  CHECK(p.parse(shorter).error == Error::BufferRewound);
  // reset() makes the parser reusable.
  p.reset();
  const std::string next = "HEAD /y HTTP/1.1\r\nHost: g\r\n\r\n";
  REQUIRE(parse_request(next, p).status == ParseStatus::Done);
  CHECK(p.head().method == "HEAD");
  CHECK(p.head().fields.size() == 1);
}

TEST_CASE("errors are sticky and carry the first offending offset", "[http1]") {
  RequestParser p;
  const std::string bad = "GET / HTTP/1.1\r\nHost: h\r\nX: a\x01z\r\n";
  HeadResult r = parse_request(bad, p);
  REQUIRE(r.status == ParseStatus::Error);
  CHECK(r.error == Error::InvalidFieldValue);
  CHECK(r.error_offset == bad.find('\x01'));
  r = parse_request(bad + "\r\n", p);
  CHECK(r.error == Error::InvalidFieldValue);

  struct Off {
    std::string raw;
    Error error;
    size_t offset;
  };
  const std::vector<Off> offsets = {
      {std::string("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 35), Error::NulByte, 29},
      {std::string("GET / HTTP/1.1\r\nHost: h\r\nX: a\0", 30), Error::NulByte, 29},
      {"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb", Error::BareCr, 29},
      {"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", Error::BareLf, 23},
      {"GET / HTTP/1.1\r\nHost : h\r\n\r\n", Error::WhitespaceBeforeColon, 20},
      {"GET / HTTP/1.1\r\nHost: h\r\n y\r\n\r\n", Error::ObsFold, 25},
      {"GET / HTTP/1.1\r\n\r\n", Error::MissingHost, 16},
      {"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n", Error::MultipleHost, 25},
      {"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
       Error::ContentLengthWithTransferEncoding, 44},
      {"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", Error::InvalidTarget, 6},
      {"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 12x\r\n\r\n", Error::InvalidContentLength, 43},
  };
  for (const Off& o : offsets) {
    INFO(printable(o.raw));
    RequestParser q;
    const HeadResult res = parse_request(o.raw, q);
    REQUIRE(res.status == ParseStatus::Error);
    CHECK(res.error == o.error);
    CHECK(res.error_offset == o.offset);
  }
}

TEST_CASE("request semantics: Expect, Upgrade, Connection", "[http1]") {
  // The parsed heads view their buffers: keep each one alive for the test.
  std::deque<std::string> buffers;
  auto head_of = [&buffers](const std::string& raw) {
    buffers.push_back(raw);
    auto p = std::make_unique<RequestParser>();
    const HeadResult r = p->parse(as_span(buffers.back()));
    REQUIRE(r.status == ParseStatus::Done);
    return p;
  };
  {
    auto p =
        head_of("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
    CHECK(p->head().expect_continue);
  }
  {  // HTTP/1.0: 100-continue and any other expectation are ignored.
    auto p = head_of("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    CHECK_FALSE(p->head().expect_continue);
    auto q = head_of("POST / HTTP/1.0\r\nExpect: something-else\r\nContent-Length: 3\r\n\r\n");
    CHECK_FALSE(q->head().expect_continue);
  }
  require_request_error("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue, x\r\n\r\n",
                        Error::UnsupportedExpectation);
  {
    auto p = head_of(
        "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    CHECK(p->head().upgrade);
    CHECK(p->head().upgrade_websocket);
    CHECK(p->head().upgrade_protocols == "websocket");
    CHECK(p->head().connection.keep_alive);
    CHECK(p->head().connection.upgrade);
  }
  {
    auto p = head_of(
        "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c, WebSocket/13\r\nConnection: upgrade\r\n\r\n");
    CHECK(p->head().upgrade);
    CHECK(p->head().upgrade_websocket);
  }
  {  // No "upgrade" Connection option: no upgrade.
    auto p = head_of("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n");
    CHECK_FALSE(p->head().upgrade);
    CHECK_FALSE(p->head().upgrade_websocket);
  }
  {  // HTTP/1.0 upgrade is ignored.
    auto p = head_of("GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
    CHECK_FALSE(p->head().upgrade);
  }
  {
    auto p = head_of("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n");
    CHECK(p->head().upgrade);
    CHECK_FALSE(p->head().upgrade_websocket);
  }
  require_request_error("GET / HTTP/1.1\r\nHost: h\r\nConnection: \"close\"\r\n\r\n",
                        Error::InvalidConnection);
}

TEST_CASE("hop-by-hop fields and lookups", "[http1]") {
  const std::string raw =
      "GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Private , content-length, HOST\r\n"
      "connection: X-Second\r\nKeep-Alive: timeout=5\r\nX-Private: 1\r\nX-Public: 2\r\n"
      "Content-Length: 0\r\nTE: trailers\r\nTrailer: X\r\nProxy-Connection: keep-alive\r\n"
      "Upgrade: websocket\r\n\r\n";
  RequestParser p;
  REQUIRE(parse_request(raw, p).status == ParseStatus::Done);
  const FieldList& f = p.head().fields;
  CHECK(f.count("connection") == 2);
  CHECK(f.has_token("Connection", "x-private"));
  CHECK(f.has_token("Connection", "x-second"));
  CHECK_FALSE(f.has_token("Connection", "x-public"));
  for (const char* name :
       {"Connection", "keep-alive", "Proxy-Connection", "te", "TRAILER", "Upgrade", "X-Private",
        "x-second", "Content-Length", "Transfer-Encoding"})
    CHECK(is_hop_by_hop(name, f));
  // Never nominated away: Host and, without reframing, the framing fields.
  CHECK_FALSE(is_hop_by_hop("Host", f));
  CHECK_FALSE(is_hop_by_hop("X-Public", f));
  CHECK_FALSE(is_hop_by_hop("Content-Length", f, {.keep_upgrade = false, .reframe = false}));
  CHECK_FALSE(is_hop_by_hop("Upgrade", f, {.keep_upgrade = true, .reframe = true}));
  CHECK(is_framing_field("transfer-encoding"));
  CHECK(is_framing_field("Content-Length"));
  CHECK_FALSE(is_framing_field("Content-Type"));
  // What a proxy forwards from this head with the default options.
  std::vector<std::string> kept;
  for (const Field& field : f)
    if (!is_hop_by_hop(field.name, f)) kept.emplace_back(field.name);
  CHECK(kept == std::vector<std::string>{"Host", "X-Public"});
  CHECK(iequals("ABC-def", "abc-DEF"));
  CHECK_FALSE(iequals("abc", "abd"));
  CHECK_FALSE(iequals("abc", "abcd"));
}

TEST_CASE("request rejections beyond the corpus", "[http1]") {
  require_request_error("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\tchunked\r\n\r\n",
                        Error::InvalidTransferEncoding);
  require_request_error("M-SEARCH * HTTP/1.1\r\nHost: h\r\n\r\n", Error::InvalidTarget);
  require_request_error("GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\nHost: h\r\n\r\n",
                        Error::MultipleHost);
  require_request_error("GET / HTTP/1.1\r\nHost: a:0\r\n\r\n", Error::InvalidHost);
  require_request_error("GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n", Error::InvalidHost);
  require_request_error("GET / HTTP/1.1\r\nHost: []\r\n\r\n", Error::InvalidHost);
  require_request_error("GET / HTTP/1.1\r\nHost: a%4\r\n\r\n", Error::InvalidHost);
  require_request_error("GET /a%2 HTTP/1.1\r\nHost: h\r\n\r\n", Error::InvalidTarget);
  require_request_error("GET /a%2x HTTP/1.1\r\nHost: h\r\n\r\n", Error::InvalidTarget);
  require_request_error("GET /a?b#c HTTP/1.1\r\nHost: h\r\n\r\n", Error::InvalidTarget);
  require_request_error("GET http://a:99999/ HTTP/1.1\r\nHost: h\r\n\r\n", Error::InvalidTarget);
  require_request_error("GET http:/a/ HTTP/1.1\r\nHost: h\r\n\r\n", Error::InvalidTarget);
  require_request_error("GET http://a/b c HTTP/1.1\r\nHost: h\r\n\r\n", Error::InvalidTarget);
  require_request_error("CONNECT a:443/x HTTP/1.1\r\nHost: h\r\n\r\n", Error::InvalidTarget);
  require_request_error("GET / HTTP/1.1\r\n\r\n", Error::MissingHost);
  require_request_error(
      "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 00000000000000000000000000000000005\r\n"
      "Content-Length: 6\r\n\r\n",
      Error::ConflictingContentLength);
  require_request_error("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\n",
                        Error::ContentLengthOverflow);
  // The largest Content-Length is accepted (and check_body_size answers 413).
  {
    const std::string raw =
        "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n";
    RequestParser p;
    REQUIRE(parse_request(raw, p).status == ParseStatus::Done);
    CHECK(p.head().framing == BodyFraming::content_length(kMaxBodyLength));
    CHECK(check_body_size(p.head().framing, 1u << 30) == Error::BodyTooLarge);
  }
  // A NUL after a complete head belongs to the next pipelined request, and
  // is refused as soon as it arrives.
  const Transcript t =
      consistent_stream<RequestParser>(std::string("GET / HTTP/1.1\r\nHost: h\r\n\r\n\0", 28));
  REQUIRE(t.events.size() == 3);
  CHECK(t.first_error == Error::NulByte);
  CHECK(t.events[2] == "head error nul_byte at 0");
}

TEST_CASE("limits: head bytes, field count, request line", "[http1]") {
  Limits limits;
  limits.max_head_bytes = 256;
  limits.max_fields = 4;
  limits.max_request_line = 64;

  // A head of exactly `total` bytes: a request line, Host, and one padded field.
  auto head_of_size = [](size_t total) {
    std::string base = "GET / HTTP/1.1\r\nHost: h\r\nX: ";
    const size_t fixed = base.size() + 4;  // + "\r\n\r\n"
    REQUIRE(total >= fixed);
    return base + std::string(total - fixed, 'v') + "\r\n\r\n";
  };
  CHECK(consistent_head<RequestParser>(head_of_size(256), limits).rfind("done consumed=256", 0) ==
        0);
  require_request_error(head_of_size(257), Error::HeadTooLarge, limits);
  {  // Detected without waiting for the end of the line.
    RequestParser p(limits);
    const std::string big = head_of_size(400).substr(0, 256);
    const HeadResult r = parse_request(big, p);
    CHECK(r.error == Error::HeadTooLarge);
    CHECK(r.error_offset == 255);
    RequestParser q(limits);
    CHECK(parse_request(big.substr(0, 255), q).status == ParseStatus::NeedMore);
  }
  // Leading empty lines count against the head limit.
  {
    std::string lead;
    for (int i = 0; i < 127; ++i) lead += "\r\n";
    require_request_error(lead + "GET / HTTP/1.1\r\nHost: h\r\n\r\n", Error::HeadTooLarge, limits);
  }

  // Field count.
  std::string four = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
  CHECK(consistent_head<RequestParser>(four, limits).rfind("done", 0) == 0);
  std::string five = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
  require_request_error(five, Error::TooManyFields, limits);

  // Request line: 64 bytes including CRLF is the most.
  auto line_of = [](size_t total) {
    const std::string pre = "GET /", post = " HTTP/1.1\r\n";
    return pre + std::string(total - pre.size() - post.size(), 'a') + post + "Host: h\r\n\r\n";
  };
  CHECK(consistent_head<RequestParser>(line_of(64), limits).rfind("done", 0) == 0);
  require_request_error(line_of(65), Error::RequestLineTooLong, limits);
  {
    RequestParser p(limits);
    const HeadResult r = parse_request(std::string(64, 'G'), p);
    CHECK(r.error == Error::RequestLineTooLong);
    CHECK(r.error_offset == 63);
    RequestParser q(limits);
    CHECK(parse_request(std::string(63, 'G'), q).status == ParseStatus::NeedMore);
  }

  // Responses get their own codes (the proxy answers 502).
  auto response_of_size = [](size_t total) {
    std::string base = "HTTP/1.1 200 OK\r\nX: ";
    return base + std::string(total - base.size() - 4, 'v') + "\r\n\r\n";
  };
  CHECK(consistent_head<ResponseParser>(response_of_size(256), limits).rfind("done", 0) == 0);
  require_response_error(response_of_size(257), Error::ResponseHeadTooLarge, limits);
  require_response_error("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
                         Error::ResponseTooManyFields, limits);
  // A status line has only the head limit.
  require_response_error("HTTP/1.1 200 " + std::string(300, 'r') + "\r\n\r\n",
                         Error::ResponseHeadTooLarge, limits);
}

TEST_CASE("valid responses and their framing", "[http1]") {
  struct Case {
    std::string raw;
    std::string method;
    uint16_t status;
    std::string reason;
    BodyFraming framing;
    bool keep_alive;
  };
  const std::vector<Case> cases = {
      {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "GET", 200, "OK",
       BodyFraming::content_length(3), true},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", 200, "OK",
       BodyFraming::chunked(), true},
      {"HTTP/1.1 200 OK\r\n\r\n", "GET", 200, "OK", BodyFraming::until_close(), false},
      {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "GET", 200, "OK",
       BodyFraming::content_length(0), false},
      {"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n", "GET", 200, "OK",
       BodyFraming::content_length(0), true},
      {"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", 200, "OK",
       BodyFraming::content_length(0), false},
      {"HTTP/1.1 204 No Content\r\n\r\n", "GET", 204, "No Content", BodyFraming::none(), true},
      {"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", "GET", 304, "Not Modified",
       BodyFraming::none(), true},
      {"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", "HEAD", 200, "OK", BodyFraming::none(),
       true},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HEAD", 200, "OK",
       BodyFraming::none(), true},
      {"HTTP/1.1 100 Continue\r\n\r\n", "POST", 100, "Continue", BodyFraming::none(), true},
      {"HTTP/1.1 200 Connection established\r\n\r\n", "CONNECT", 200, "Connection established",
       BodyFraming::none(), true},
      {"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 2\r\n\r\n", "CONNECT", 407, "Proxy Auth",
       BodyFraming::content_length(2), true},
      {"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "GET", 200, "", BodyFraming::content_length(0),
       true},
      {"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", "GET", 200, "", BodyFraming::content_length(0),
       true},
      {"HTTP/1.1 599 Odd\treason \xe9\r\nContent-Length: 0\r\n\r\n", "GET", 599, "Odd\treason \xe9",
       BodyFraming::content_length(0), true},
      {"HTTP/1.1 404 Not Found\r\nContent-Length: 7, 7\r\n\r\n", "GET", 404, "Not Found",
       BodyFraming::content_length(7), true},
  };
  for (const Case& c : cases) {
    INFO("response: " << printable(c.raw) << " to " << c.method);
    const std::string d = consistent_head<ResponseParser>(c.raw);
    REQUIRE(d.rfind("done", 0) == 0);
    ResponseParser p;
    const HeadResult r = p.parse(as_span(c.raw));
    REQUIRE(r.status == ParseStatus::Done);
    CHECK(r.consumed == c.raw.size());
    CHECK(p.head().status == c.status);
    CHECK(p.head().reason == c.reason);
    const BodyFraming framing = response_framing(p.head(), c.method);
    CHECK(framing == c.framing);
    CHECK(response_keep_alive(p.head(), framing) == c.keep_alive);
    require_prefixes_need_more<ResponseParser>(c.raw, r.consumed);
  }
  {
    const std::string raw =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    ResponseParser p;
    REQUIRE(p.parse(as_span(raw)).status == ParseStatus::Done);
    CHECK(is_upgrade_accepted(p.head()));
    CHECK(response_framing(p.head(), "GET") == BodyFraming::none());
    CHECK_FALSE(response_keep_alive(p.head(), BodyFraming::none()));
    ResponseParser q;
    REQUIRE(q.parse(as_span(std::string_view("HTTP/1.1 101 Switching Protocols\r\n\r\n"))).status ==
            ParseStatus::Done);
    CHECK_FALSE(is_upgrade_accepted(q.head()));
  }
}

TEST_CASE("invalid responses", "[http1]") {
  require_response_error("HTTP/1.1 099 X\r\n\r\n", Error::InvalidStatusCode);
  require_response_error("HTTP/1.1 600 X\r\n\r\n", Error::InvalidStatusCode);
  require_response_error("HTTP/1.1 2000 OK\r\n\r\n", Error::InvalidStatusCode);
  require_response_error("HTTP/1.1 20 OK\r\n\r\n", Error::InvalidStatusCode);
  require_response_error("HTTP/1.1 20\r\n\r\n", Error::InvalidStatusCode);
  require_response_error("HTTP/1.1 2x0 OK\r\n\r\n", Error::InvalidStatusCode);
  require_response_error("HTTP/1.1  200 OK\r\n\r\n", Error::InvalidStatusCode);
  require_response_error("HTTP/2 200 OK\r\n\r\n", Error::InvalidVersion);
  require_response_error("http/1.1 200 OK\r\n\r\n", Error::InvalidVersion);
  require_response_error("HTTP/2.0 200 OK\r\n\r\n", Error::UnsupportedVersion);
  require_response_error("HTTP/1.1 200 O\x01K\r\n\r\n", Error::InvalidReasonPhrase);
  require_response_error("HTTP/1.1 200 O\x7fK\r\n\r\n", Error::InvalidReasonPhrase);
  require_response_error("\r\nHTTP/1.1 200 OK\r\n\r\n", Error::InvalidStatusLine);
  require_response_error("HTTP/1.1\r\n\r\n", Error::InvalidStatusLine);
  require_response_error("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", Error::BareLf);
  require_response_error(
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
      Error::ContentLengthWithTransferEncoding);
  require_response_error("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                         Error::TransferEncodingInHttp10);
  require_response_error("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                         Error::UnsupportedTransferCoding);
  require_response_error("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                         Error::ChunkedNotLast);
  require_response_error("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
                         Error::ConflictingContentLength);
  require_response_error("HTTP/1.1 200 OK\r\nSet-Cookie: a\r\n b\r\n\r\n", Error::ObsFold);
  require_response_error(std::string("HTTP/1.1 200 OK\r\nX\0: b\r\n\r\n", 26), Error::NulByte);
  require_response_error("HTTP/1.1 200 OK\r\nX: \rb\r\n\r\n", Error::BareCr);
}

TEST_CASE("chunked bodies: extensions, trailers, every split", "[http1]") {
  const std::string body =
      "5;name=value;q=\"quo\\\"ted; x\";flag\r\nhello\r\n"
      "6 ; a = b ;c\t=\t\"\"\r\n world\r\n"
      "000A\r\n0123456789\r\n"
      "0000000000000001\r\n!\r\n"
      "0;last\r\nTrailer-A: x\r\nTrailer-B:\t y \r\nX-Obs: \xc3\xa9\r\n\r\n";
  const std::string next = "GET /next HTTP/1.1\r\n";
  const BodyRun run = consistent_body(BodyFraming::chunked(), body + next);
  CHECK(run.status == ParseStatus::Done);
  CHECK(run.data == "hello world0123456789!");
  CHECK(run.consumed == body.size());

  ChunkedDecoder d;
  const BodyResult r = d.decode(as_span(body));
  CHECK(r.status == ParseStatus::NeedMore);  // one data span per call
  CHECK(std::string_view(reinterpret_cast<const char*>(r.data.data()), r.data.size()) == "hello");
  size_t used = r.consumed;
  for (int i = 0; i < 10 && used < body.size(); ++i)
    used += d.decode(as_span(body).subspan(used)).consumed;
  CHECK(used == body.size());
  CHECK(d.trailer_fields() == 3);
  CHECK(d.body_bytes() == 22);
  CHECK(d.finish().status == ParseStatus::Done);

  // Minimal body, no trailers.
  CHECK(consistent_body(BodyFraming::chunked(), "0\r\n\r\n").status == ParseStatus::Done);
  // Upper and lower case hex.
  CHECK(consistent_body(BodyFraming::chunked(), "a\r\n0123456789\r\nB\r\n0123456789a\r\n0\r\n\r\n")
            .data == "01234567890123456789a");
}

TEST_CASE("chunked bodies: truncation at every offset is NeedMore", "[http1]") {
  const std::string body = "4;e=1\r\nwiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\n";
  for (size_t i = 0; i < body.size(); ++i) {
    INFO("prefix " << i);
    const BodyRun run =
        feed_body(BodyFraming::chunked(), body.substr(0, i), whole_plan(i), kNoDataLimit);
    REQUIRE(run.status == ParseStatus::NeedMore);
    const BodyRun at_eof = feed_body(BodyFraming::chunked(), body.substr(0, i), whole_plan(i),
                                     kNoDataLimit, {}, /*eof=*/true);
    REQUIRE(at_eof.status == ParseStatus::Error);
    REQUIRE(at_eof.error == Error::BodyTruncated);
  }
}

TEST_CASE("chunked bodies: back-pressure with max_data", "[http1]") {
  const std::string body = "a\r\n0123456789\r\n0\r\n\r\n";
  ChunkedDecoder d;
  // No room: framing is read up to the data, no data is taken.
  BodyResult r = d.decode(as_span(body), 0);
  CHECK(r.status == ParseStatus::NeedMore);
  CHECK(r.consumed == 3);
  CHECK(r.data.empty());
  r = d.decode(as_span(body).subspan(3), 0);
  CHECK(r.consumed == 0);
  r = d.decode(as_span(body).subspan(3), 4);
  CHECK(r.data.size() == 4);
  CHECK(r.consumed == 4);
  r = d.decode(as_span(body).subspan(7));
  CHECK(r.data.size() == 6);
  CHECK(r.status == ParseStatus::Done);
  CHECK(r.consumed == body.size() - 7);
}

TEST_CASE("chunked bodies: size, extension and trailer limits", "[http1]") {
  Limits limits;
  // 16 hex digits and values up to 2^63-1 are accepted.
  {
    ChunkedDecoder d(limits);
    const BodyResult r = d.decode(as_span(std::string_view("7fffffffffffffff\r\nabc")));
    CHECK(r.status == ParseStatus::NeedMore);
    CHECK(r.data.size() == 3);
  }
  // Extension bytes: ";" onwards up to (not including) the CR.
  limits.max_chunk_extension_bytes = 8;
  CHECK(consistent_body(BodyFraming::chunked(), "1;abc=def\r\nx\r\n0\r\n\r\n", limits).status ==
        ParseStatus::Done);
  BodyRun run = consistent_body(BodyFraming::chunked(), "1;abc=defg\r\nx\r\n0\r\n\r\n", limits);
  CHECK(run.error == Error::ChunkExtensionTooLong);
  // Whitespace after the size counts too (no unbounded BWS).
  run = consistent_body(BodyFraming::chunked(), "1" + std::string(20, ' ') + ";a\r\n", limits);
  CHECK(run.error == Error::ChunkExtensionTooLong);

  // Trailer section bytes include its final CRLF.
  limits = {};
  limits.max_trailer_bytes = 10;
  CHECK(consistent_body(BodyFraming::chunked(), "0\r\nAb: cd\r\n\r\n", limits).status ==
        ParseStatus::Done);
  run = consistent_body(BodyFraming::chunked(), "0\r\nAb: cde\r\n\r\n", limits);
  CHECK(run.error == Error::TrailerTooLarge);
  limits = {};
  limits.max_trailer_fields = 2;
  CHECK(consistent_body(BodyFraming::chunked(), "0\r\nA: 1\r\nB: 2\r\n\r\n", limits).status ==
        ParseStatus::Done);
  run = consistent_body(BodyFraming::chunked(), "0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits);
  CHECK(run.error == Error::TooManyTrailerFields);

  // Body size: exactly the limit passes, one more byte is 413 before the data.
  limits = {};
  limits.max_body_bytes = 10;
  run = consistent_body(BodyFraming::chunked(), "6\r\n012345\r\n4\r\n6789\r\n0\r\n\r\n", limits);
  CHECK(run.status == ParseStatus::Done);
  CHECK(run.data == "0123456789");
  run = consistent_body(BodyFraming::chunked(), "6\r\n012345\r\n5\r\n6789a\r\n0\r\n\r\n", limits);
  CHECK(run.error == Error::BodyTooLarge);
  CHECK(run.data == "012345");
  CHECK(run.error_offset == 13);  // the LF ending the "5" line
  CHECK(http_status(run.error) == 413);

  // Long trailer field names are fine; only the forbidden names are refused.
  CHECK(consistent_body(BodyFraming::chunked(),
                        "0\r\nContent-Length-Is-Not-This-One-At-All: 1\r\nHostname: x\r\n\r\n")
            .status == ParseStatus::Done);
  CHECK(consistent_body(BodyFraming::chunked(), "0\r\nHOST: x\r\n\r\n").error ==
        Error::ForbiddenTrailerField);
}

TEST_CASE("chunked decoding errors", "[http1]") {
  struct Case {
    std::string body;
    Error error;
    uint64_t offset;
  };
  const std::vector<Case> cases = {
      {"0x10\r\n", Error::InvalidChunkSize, 1},
      {" 5\r\n", Error::InvalidChunkSize, 0},
      {"5 \r\n", Error::InvalidChunkSize, 2},
      {"\r\n", Error::InvalidChunkSize, 0},
      {"\n", Error::BareLf, 0},
      {"5\n", Error::BareLf, 1},
      {"5\rx", Error::BareCr, 2},
      {std::string("\0", 1), Error::NulByte, 0},
      {"12345678901234567\r\n", Error::ChunkSizeTooLong, 16},
      {"8000000000000000\r\n", Error::ChunkSizeOverflow, 15},
      {"1;\r\n", Error::InvalidChunkExtension, 2},
      {"1;a=\r\n", Error::InvalidChunkExtension, 4},
      {"1;a=\"b\r\n", Error::InvalidChunkExtension, 6},
      {"1;a=\"\\\x01\"\r\n", Error::InvalidChunkExtension, 6},
      {"1;a b\r\n", Error::InvalidChunkExtension, 4},
      {"1;a=b c\r\n", Error::InvalidChunkExtension, 6},
      {"1;a=\"b\" c\r\n", Error::InvalidChunkExtension, 8},
      {"1;a\n", Error::BareLf, 3},
      {"1\r\nxy\r\n", Error::MissingChunkDataCrlf, 4},
      {"1\r\nx\rx", Error::MissingChunkDataCrlf, 5},
      {"0\r\n\rx", Error::BareCr, 4},
      {"0\r\nA: b\rx", Error::BareCr, 8},
      {"0\r\nA: b\n", Error::BareLf, 7},
      {"0\r\n A: b\r\n\r\n", Error::ObsFold, 3},
      {"0\r\nA : b\r\n\r\n", Error::WhitespaceBeforeColon, 4},
      {"0\r\nA\r\n\r\n", Error::MissingColon, 4},
      {"0\r\n: b\r\n\r\n", Error::InvalidFieldName, 3},
      {"0\r\nA(: b\r\n\r\n", Error::InvalidFieldName, 4},
      {"0\r\nA: \x01\r\n\r\n", Error::InvalidFieldValue, 6},
      {"0\r\nTransfer-Encoding: chunked\r\n\r\n", Error::ForbiddenTrailerField, 20},
  };
  for (const Case& c : cases) {
    INFO("body: " << printable(c.body));
    const BodyRun run = consistent_body(BodyFraming::chunked(), c.body + "tail");
    REQUIRE(run.status == ParseStatus::Error);
    CHECK(run.error == c.error);
    CHECK(run.error_offset == c.offset);
  }
}

TEST_CASE("Content-Length, close-delimited and empty bodies", "[http1]") {
  BodyRun run = consistent_body(BodyFraming::content_length(10), "0123456789NEXT");
  CHECK(run.status == ParseStatus::Done);
  CHECK(run.data == "0123456789");
  CHECK(run.consumed == 10);
  run = consistent_body(BodyFraming::content_length(0), "NEXT");
  CHECK(run.status == ParseStatus::Done);
  CHECK(run.consumed == 0);
  run = consistent_body(BodyFraming::content_length(10), "01234", {}, /*eof=*/true);
  CHECK(run.error == Error::BodyTruncated);
  CHECK(run.error_offset == 5);
  CHECK(run.data == "01234");

  Limits limits;
  limits.max_body_bytes = 9;
  CHECK(check_body_size(BodyFraming::content_length(10), 9) == Error::BodyTooLarge);
  CHECK(check_body_size(BodyFraming::content_length(9), 9) == Error::None);
  CHECK(check_body_size(BodyFraming::chunked(), 0) == Error::None);
  run = consistent_body(BodyFraming::content_length(10), "0123456789", limits);
  CHECK(run.error == Error::BodyTooLarge);
  CHECK(run.data.empty());

  run = consistent_body(BodyFraming::until_close(), "all of it", {}, /*eof=*/true);
  CHECK(run.status == ParseStatus::Done);
  CHECK(run.data == "all of it");
  run = consistent_body(BodyFraming::until_close(), "0123456789ab", limits, /*eof=*/true);
  CHECK(run.error == Error::BodyTooLarge);
  CHECK(run.data == "012345678");

  run = consistent_body(BodyFraming::none(), "NEXT");
  CHECK(run.status == ParseStatus::Done);
  CHECK(run.consumed == 0);

  ContentLengthDecoder cl(4);
  CHECK(cl.remaining() == 4);
  BodyResult r = cl.decode(as_span(std::string_view("ab")), 1);
  CHECK(r.data.size() == 1);
  CHECK(cl.remaining() == 3);
  CHECK(cl.finish().error == Error::BodyTruncated);
}

TEST_CASE("pipelined requests on one connection", "[http1]") {
  const std::string stream =
      "GET /one HTTP/1.1\r\nHost: h\r\n\r\n"
      "POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
      "\r\n"  // a stray CRLF after a body is tolerated before the next request
      "POST /three HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n"
      "GET /four HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
      "GET /five-incomplete HTTP/1.1\r\nHo";
  const Transcript t = consistent_stream<RequestParser>(stream);
  REQUIRE(t.first_error == Error::None);
  REQUIRE(t.events.size() == 9);
  CHECK(t.events[0].find("target=/one ") != std::string::npos);
  CHECK(t.events[1] == "body done []");
  CHECK(t.events[2].find("target=/two ") != std::string::npos);
  CHECK(t.events[3] == "body done [hello]");
  CHECK(t.events[4].find("target=/three ") != std::string::npos);
  CHECK(t.events[5] == "body done [abcde]");
  CHECK(t.events[6].find("conn=close,") != std::string::npos);
  CHECK(t.events[7] == "body done []");
  CHECK(t.events[8] == "end in head pending=33");

  // A smuggled request hidden in a body stays in the body.
  const std::string hidden =
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 26\r\n\r\nGET /admin HTTP/1.1\r\nX: \r\n"
      "GET /ok HTTP/1.1\r\nHost: h\r\n\r\n";
  const Transcript h = consistent_stream<RequestParser>(hidden);
  REQUIRE(h.events.size() == 5);
  CHECK(h.events[1] == "body done [GET /admin HTTP/1.1\\r\\nX: \\r\\n]");
  CHECK(h.events[2].find("target=/ok ") != std::string::npos);
}

TEST_CASE("pipelined responses with interim heads", "[http1]") {
  const std::string stream =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
      "HTTP/1.1 204 No Content\r\n\r\n"
      "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\n"
      "HTTP/1.1 200 OK\r\n\r\nuntil the end";
  const Transcript t = consistent_stream<ResponseParser>(stream);
  REQUIRE(t.first_error == Error::None);
  REQUIRE(t.events.size() == 12);
  CHECK(t.events[0].find("status=100 ") != std::string::npos);
  CHECK(t.events[3] == "body done [abc]");
  CHECK(t.events[5] == "body done []");
  CHECK(t.events[7] == "body done []");
  CHECK(t.events[9] == "body done [wxyz]");
  CHECK(t.events[11] == "end in body [until the end] pending=0");
}

TEST_CASE("random garbage and mutations never disagree across splits", "[http1]") {
  // Mutations of valid messages (bounded count, fixed seed): whatever the
  // outcome, it must not depend on how the bytes were split.
  const std::vector<std::string> seeds = {
      "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0\r\nT: "
      "v\r\n\r\n",
      "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: "
      "h\r\n\r\n",
      "GET http://a:80/p?q HTTP/1.1\r\nHost: b\r\nConnection: close, X\r\nX: y\r\n\r\n",
  };
  std::mt19937 rng(20240611);
  const std::string alphabet =
      std::string("\r\n \t:;,=\"\\0aAxX-9\x7f\x80", 19) + std::string(1, '\0');
  for (const std::string& seed : seeds) {
    for (int i = 0; i < 150; ++i) {
      std::string m = seed;
      const int edits = 1 + static_cast<int>(rng() % 3);
      for (int e = 0; e < edits; ++e) {
        const size_t at = rng() % m.size();
        const char c = alphabet[rng() % alphabet.size()];
        switch (rng() % 3) {
          case 0:
            m[at] = c;
            break;
          case 1:
            m.insert(m.begin() + static_cast<long>(at), c);
            break;
          default:
            m.erase(at, 1);
            break;
        }
      }
      consistent_stream<RequestParser>(m);
    }
  }
}

// ---------------------------------------------------------------------------
// The smuggling corpus.

namespace {

struct CorpusCase {
  int status = 0;
  std::string code;
  std::string name;
  std::string bytes;
  size_t line = 0;
};

// Decodes the escapes documented at the top of the corpus file.
std::string unescape(std::string_view raw, size_t line) {
  std::string out;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '\\') {
      out += raw[i];
      continue;
    }
    INFO("corpus line " << line);
    REQUIRE(i + 1 < raw.size());
    const char e = raw[++i];
    switch (e) {
      case 'r':
        out += '\r';
        break;
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case '0':
        out += '\0';
        break;
      case '\\':
        out += '\\';
        break;
      case 'x': {
        REQUIRE(i + 2 < raw.size());
        out += static_cast<char>(std::stoi(std::string(raw.substr(i + 1, 2)), nullptr, 16));
        i += 2;
        break;
      }
      case '[': {
        const size_t close = raw.find("](", i);
        REQUIRE(close != std::string_view::npos);
        const size_t count = std::stoul(std::string(raw.substr(i + 1, close - i - 1)));
        const size_t end = raw.find(')', close + 2);
        REQUIRE(end != std::string_view::npos);
        const std::string text = unescape(raw.substr(close + 2, end - close - 2), line);
        for (size_t k = 0; k < count; ++k) out += text;
        i = end;
        break;
      }
      default:
        FAIL("unknown escape \\" << e << " on corpus line " << line);
    }
  }
  return out;
}

std::vector<CorpusCase> load_corpus(Limits& limits) {
  const std::string path =
      std::string(EDGEPIN_SOURCE_DIR) + "/tests/unit/common/http1_smuggling_cases.txt";
  std::ifstream in(path);
  REQUIRE(in.good());
  std::vector<CorpusCase> cases;
  std::string text;
  size_t line_no = 0;
  while (std::getline(in, text)) {
    ++line_no;
    if (text.empty() || text[0] == '#') continue;
    std::istringstream fields(text);
    if (text[0] == '@') {
      std::string directive, name;
      uint64_t value = 0;
      fields >> directive >> name >> value;
      INFO("corpus line " << line_no);
      REQUIRE(directive == "@limit");
      if (name == "max_head_bytes")
        limits.max_head_bytes = value;
      else if (name == "max_fields")
        limits.max_fields = value;
      else if (name == "max_request_line")
        limits.max_request_line = value;
      else if (name == "max_chunk_extension_bytes")
        limits.max_chunk_extension_bytes = value;
      else if (name == "max_trailer_bytes")
        limits.max_trailer_bytes = value;
      else if (name == "max_trailer_fields")
        limits.max_trailer_fields = value;
      else if (name == "max_body_bytes")
        limits.max_body_bytes = value;
      else
        FAIL("unknown limit " << name);
      continue;
    }
    CorpusCase c;
    c.line = line_no;
    fields >> c.status >> c.code >> c.name;
    fields >> std::ws;
    std::string raw;
    std::getline(fields, raw);
    INFO("corpus line " << line_no);
    REQUIRE(!raw.empty());
    c.bytes = unescape(raw, line_no);
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace

TEST_CASE("smuggling corpus: every case is rejected with its status and code", "[http1][corpus]") {
  Limits limits;
  const std::vector<CorpusCase> cases = load_corpus(limits);
  REQUIRE(cases.size() >= 40);
  std::set<std::string> names;
  std::set<int> statuses;
  for (const CorpusCase& c : cases) {
    INFO("case " << c.name << " (line " << c.line << "): " << printable(c.bytes.substr(0, 200)));
    REQUIRE(names.insert(c.name).second);
    Error expected = Error::None;
    REQUIRE(error_from_string(c.code, expected));
    REQUIRE(http_status(expected) == c.status);
    const Transcript t = consistent_stream<RequestParser>(c.bytes, limits);
    INFO(t.text());
    REQUIRE(t.first_error == expected);
    statuses.insert(c.status);
  }
  // The corpus covers every class of answer a request can get.
  CHECK(statuses == std::set<int>{400, 413, 414, 417, 431, 501, 505});
}
