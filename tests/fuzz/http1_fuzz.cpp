// libFuzzer target for common/http1: a connection's worth of requests or
// responses goes through the head parser, the framing rules and the body
// decoders the way the node-proxy drives them, once whole and again split
// into segments (with a small max_data for back-pressure), and byte by byte
// when short. The transcripts must match; any difference, or a span that
// points outside its input, aborts.
//
// Input layout (so seeds stay readable text):
//   byte 0: what the stream is: 'Q' requests; 'G', 'H', 'C', 'P' responses
//           to GET, HEAD, CONNECT, POST; any other byte picks one of these.
//   byte 1: seed for the segment sizes and max_data of the split run.
//   rest:   the stream.
// HTTP1_FUZZ_PRINT=1 in the environment prints each input's transcript.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http1.h"

namespace {

using namespace edgepin;
using namespace edgepin::http1;

// Small limits so the fuzzer reaches every limit quickly.
Limits fuzz_limits() {
  Limits l;
  l.max_head_bytes = 1024;
  l.max_fields = 16;
  l.max_request_line = 256;
  l.max_chunk_extension_bytes = 64;
  l.max_trailer_bytes = 256;
  l.max_trailer_fields = 8;
  l.max_body_bytes = 64 * 1024;
  return l;
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "http1_fuzz: %s\n", what);
  std::abort();
}

void check(bool ok, const char* what) {
  if (!ok) die(what);
}

void append_view(std::string& out, std::string_view v) { out.append(v.data(), v.size()); }

void describe_fields(std::string& out, const FieldList& fields) {
  for (const Field& f : fields) {
    out += '|';
    append_view(out, f.name);
    out += '=';
    append_view(out, f.value);
  }
}

void describe_request(std::string& out, const RequestHead& h) {
  append_view(out, h.method);
  out += ' ';
  append_view(out, h.target);
  out += ' ';
  out += to_string(h.form);
  out += ' ';
  out += to_string(h.version);
  out += " a=";
  append_view(out, h.authority);
  out += " p=";
  append_view(out, h.path);
  out += " f=";
  out += to_string(h.framing.kind);
  out += std::to_string(h.framing.length);
  out += h.connection.close ? "c" : "-";
  out += h.connection.keep_alive ? "k" : "-";
  out += h.connection.upgrade ? "u" : "-";
  out += h.expect_continue ? "e" : "-";
  out += h.upgrade ? "U" : "-";
  out += h.upgrade_websocket ? "W" : "-";
  out += request_keep_alive(h) ? "K" : "-";
  describe_fields(out, h.fields);
}

void describe_response(std::string& out, const ResponseHead& h) {
  out += to_string(h.version);
  out += ' ';
  out += std::to_string(h.status);
  out += ' ';
  append_view(out, h.reason);
  out += h.connection.close ? " c" : " -";
  out += h.connection.keep_alive ? "k" : "-";
  out += h.connection.upgrade ? "u" : "-";
  out += h.chunked ? "C" : "-";
  out += h.has_content_length ? std::to_string(h.content_length) : "n";
  describe_fields(out, h.fields);
}

// Checks that a head's views all lie inside the buffer they came from.
void check_inside(std::string_view v, const std::vector<uint8_t>& buf) {
  if (v.empty()) return;
  const auto* b = reinterpret_cast<const char*>(buf.data());
  check(v.data() >= b && v.data() + v.size() <= b + buf.size(), "head view outside its buffer");
}

template <class Parser>
std::string run(std::string_view stream, const std::vector<size_t>& plan, size_t max_data,
                std::string_view method) {
  constexpr bool kRequests = std::is_same_v<Parser, RequestParser>;
  const Limits limits = fuzz_limits();
  Parser parser(limits);
  std::optional<BodyDecoder> body;
  std::string pending;
  std::string out;
  bool stopped = false;
  size_t messages = 0;
  constexpr size_t kMaxMessages = 32;

  auto pump = [&]() {
    for (size_t guard = 0; guard < 1000000 && !stopped; ++guard) {
      if (!body) {
        // A new allocation every call, as a proxy's buffer may move.
        const std::vector<uint8_t> buf(pending.begin(), pending.end());
        const HeadResult r = parser.parse(buf);
        if (r.status == ParseStatus::NeedMore) return;
        if (r.status == ParseStatus::Error) {
          out += "head-error ";
          out += to_string(r.error);
          out += '@' + std::to_string(r.error_offset) + '\n';
          check(r.error != Error::None && r.error_offset <= buf.size(), "bad head error");
          stopped = true;
          return;
        }
        check(r.consumed > 0 && r.consumed <= buf.size() && r.consumed <= limits.max_head_bytes,
              "bad head consumed");
        const auto& h = parser.head();
        for (const Field& f : h.fields) {
          check_inside(f.name, buf);
          check_inside(f.value, buf);
        }
        BodyFraming framing;
        out += "head " + std::to_string(r.consumed) + ' ';
        if constexpr (kRequests) {
          check_inside(h.method, buf);
          check_inside(h.target, buf);
          check_inside(h.authority, buf);
          check_inside(h.path, buf);
          describe_request(out, h);
          framing = h.framing;
          check(framing.kind != BodyFraming::Kind::UntilClose, "request framed until close");
          if (Error e = check_body_size(framing, limits.max_body_bytes); e != Error::None) {
            out += "\nhead-error ";
            out += to_string(e);
            out += '\n';
            stopped = true;
            return;
          }
        } else {
          check_inside(h.reason, buf);
          describe_response(out, h);
          framing = response_framing(h, method);
          if (is_upgrade_accepted(h) || (method == "CONNECT" && h.status / 100 == 2)) {
            out += "\ntunnel\n";
            stopped = true;
            return;
          }
        }
        out += '\n';
        pending.erase(0, r.consumed);
        body.emplace(framing, limits);
        continue;
      }
      const BodyResult r = body->decode(
          {reinterpret_cast<const uint8_t*>(pending.data()), pending.size()}, max_data);
      check(r.consumed <= pending.size(), "body consumed past its input");
      check(r.data.size() <= max_data, "body data over max_data");
      if (!r.data.empty()) {
        const auto* b = reinterpret_cast<const uint8_t*>(pending.data());
        check(r.data.data() >= b && r.data.data() + r.data.size() <= b + r.consumed,
              "body data outside the consumed input");
        out.append(reinterpret_cast<const char*>(r.data.data()), r.data.size());
      }
      pending.erase(0, r.consumed);
      if (r.status == ParseStatus::Error) {
        out += "\nbody-error ";
        out += to_string(r.error);
        out += '@' + std::to_string(r.error_offset) + '\n';
        stopped = true;
        return;
      }
      if (r.status == ParseStatus::Done) {
        out += "\nbody-done " + std::to_string(body->body_bytes()) + '\n';
        if (body->framing().kind == BodyFraming::Kind::ContentLength)
          check(body->body_bytes() == body->framing().length, "content-length body miscounted");
        body.reset();
        parser.reset();
        if (++messages == kMaxMessages) stopped = true;
        continue;
      }
      if (r.consumed == 0 && r.data.empty()) return;  // wait for more bytes
    }
  };

  size_t off = 0;
  for (size_t seg : plan) {
    pending.append(stream.substr(off, seg));
    off += seg;
    pump();
    if (stopped) break;
  }
  if (!stopped) {
    if (body) {
      // End of stream inside a body: a close-delimited body is complete,
      // any other is truncated.
      const BodyResult r = body->finish();
      out += r.status == ParseStatus::Done ? "eof-done" : std::string("eof-") + to_string(r.error);
    } else {
      out += "eof-in-head " + std::to_string(pending.size());
    }
  }
  return out;
}

std::vector<size_t> split_plan(size_t n, uint8_t seed) {
  std::vector<size_t> plan;
  uint32_t state =
      0x9e3779b9u ^ (static_cast<uint32_t>(seed) * 2654435761u) ^ static_cast<uint32_t>(n);
  const uint32_t max_segment = 1 + seed % 31;
  for (size_t left = n; left > 0;) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    const size_t s = std::min<size_t>(left, 1 + state % max_segment);
    plan.push_back(s);
    left -= s;
  }
  return plan;
}

template <class Parser>
void compare(std::string_view stream, uint8_t seed, std::string_view method) {
  const std::vector<size_t> whole =
      stream.empty() ? std::vector<size_t>{} : std::vector<size_t>{stream.size()};
  const std::string expected = run<Parser>(stream, whole, kNoDataLimit, method);
  // HTTP1_FUZZ_PRINT=1 shows what an input does (for triaging a crasher).
  static const bool print = std::getenv("HTTP1_FUZZ_PRINT") != nullptr;
  if (print) std::fprintf(stderr, "----\n%s\n", expected.c_str());
  const std::string split =
      run<Parser>(stream, split_plan(stream.size(), seed), 1 + seed % 5, method);
  if (split != expected) {
    std::fprintf(stderr, "whole:\n%s\nsplit:\n%s\n", expected.c_str(), split.c_str());
    die("whole and split runs differ");
  }
  if (stream.size() <= 2048) {
    const std::string bytes =
        run<Parser>(stream, std::vector<size_t>(stream.size(), 1), kNoDataLimit, method);
    if (bytes != expected) {
      std::fprintf(stderr, "whole:\n%s\nbyte by byte:\n%s\n", expected.c_str(), bytes.c_str());
      die("whole and byte-by-byte runs differ");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const std::string_view stream(reinterpret_cast<const char*>(data) + 2, size - 2);
  static constexpr char kModes[] = {'Q', 'G', 'H', 'C', 'P'};
  char mode = static_cast<char>(data[0]);
  bool known = false;
  for (char m : kModes) known = known || m == mode;
  if (!known) mode = kModes[data[0] % sizeof(kModes)];
  switch (mode) {
    case 'Q':
      compare<RequestParser>(stream, data[1], "");
      break;
    case 'G':
      compare<ResponseParser>(stream, data[1], "GET");
      break;
    case 'H':
      compare<ResponseParser>(stream, data[1], "HEAD");
      break;
    case 'C':
      compare<ResponseParser>(stream, data[1], "CONNECT");
      break;
    default:
      compare<ResponseParser>(stream, data[1], "POST");
      break;
  }
  return 0;
}
