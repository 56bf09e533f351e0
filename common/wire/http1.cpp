#include "http1.h"

#include <algorithm>
#include <array>
#include <cstdint>

namespace edgepin::http1 {

// ---------------------------------------------------------------------------
// Errors and names.

const char* to_string(Error e) noexcept {
  switch (e) {
#define EDGEPIN_HTTP1_NAME(name, status, text) \
  case Error::name:                            \
    return text;
    EDGEPIN_HTTP1_ERRORS(EDGEPIN_HTTP1_NAME)
#undef EDGEPIN_HTTP1_NAME
  }
  return "?";
}

int http_status(Error e) noexcept {
  switch (e) {
#define EDGEPIN_HTTP1_STATUS(name, status, text) \
  case Error::name:                              \
    return status;
    EDGEPIN_HTTP1_ERRORS(EDGEPIN_HTTP1_STATUS)
#undef EDGEPIN_HTTP1_STATUS
  }
  return 500;
}

bool error_from_string(std::string_view name, Error& out) noexcept {
#define EDGEPIN_HTTP1_PARSE(n, status, text) \
  if (name == text) {                        \
    out = Error::n;                          \
    return true;                             \
  }
  EDGEPIN_HTTP1_ERRORS(EDGEPIN_HTTP1_PARSE)
#undef EDGEPIN_HTTP1_PARSE
  return false;
}

const char* to_string(Version v) noexcept { return v == Version::Http10 ? "HTTP/1.0" : "HTTP/1.1"; }

const char* to_string(TargetForm f) noexcept {
  switch (f) {
    case TargetForm::Origin:
      return "origin";
    case TargetForm::Absolute:
      return "absolute";
    case TargetForm::Authority:
      return "authority";
    case TargetForm::Asterisk:
      return "asterisk";
  }
  return "?";
}

const char* to_string(BodyFraming::Kind k) noexcept {
  switch (k) {
    case BodyFraming::Kind::None:
      return "none";
    case BodyFraming::Kind::ContentLength:
      return "content_length";
    case BodyFraming::Kind::Chunked:
      return "chunked";
    case BodyFraming::Kind::UntilClose:
      return "until_close";
  }
  return "?";
}

// ---------------------------------------------------------------------------
// Character classes (RFC 9110 5.6.2 token, 5.5 field-value, RFC 3986).
namespace {

constexpr uint8_t kSP = 0x20;
constexpr uint8_t kHTAB = 0x09;
constexpr uint8_t kCR = 0x0d;
constexpr uint8_t kLF = 0x0a;

enum : uint8_t {
  kTchar = 1 << 0,
  kFieldVchar = 1 << 1,  // HTAB / SP / VCHAR / obs-text
  kPathChar = 1 << 2,    // pchar minus pct-encoded, plus "/"
  kQueryChar = 1 << 3,   // VCHAR minus "#"
  kHostChar = 1 << 4,    // unreserved
  kHex = 1 << 5,
  kQdtext = 1 << 6,
  kDigit = 1 << 7,
};

constexpr std::array<uint8_t, 256> make_classes() {
  std::array<uint8_t, 256> t{};
  auto add = [&t](const char* chars, uint8_t bit) {
    for (const char* c = chars; *c; ++c) t[static_cast<uint8_t>(*c)] |= bit;
  };
  for (int c = 0; c < 256; ++c) {
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    const bool digit = c >= '0' && c <= '9';
    if (alpha || digit) t[c] |= kTchar | kPathChar | kHostChar;
    if (digit) t[c] |= kDigit | kHex;
    if ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) t[c] |= kHex;
    if (c == kHTAB || c == kSP || (c >= 0x21 && c <= 0x7e) || c >= 0x80) t[c] |= kFieldVchar;
    if (c >= 0x21 && c <= 0x7e && c != '#') t[c] |= kQueryChar;
    if (c == kHTAB || c == kSP || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
        (c >= 0x5d && c <= 0x7e) || c >= 0x80)
      t[c] |= kQdtext;
  }
  add("!#$%&'*+-.^_`|~", kTchar);
  add("-._~!$&'()*+,;=:@/", kPathChar);
  add("-._~", kHostChar);
  return t;
}

constexpr std::array<uint8_t, 256> kClass = make_classes();

inline bool is(uint8_t c, uint8_t cls) noexcept { return (kClass[c] & cls) != 0; }
inline bool is_ows(uint8_t c) noexcept { return c == kSP || c == kHTAB; }
inline uint8_t lower(uint8_t c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<uint8_t>(c + 32) : c;
}
inline int hex_value(uint8_t c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  return lower(c) - 'a' + 10;
}

// The error for an unexpected byte inside a line: NUL and CR have codes of
// their own (they are what smuggling payloads are made of), anything else
// gets the context's code.
inline Error bad_byte(uint8_t c, Error fallback) noexcept {
  if (c == 0) return Error::NulByte;
  if (c == kCR) return Error::BareCr;
  return fallback;
}

inline std::string_view as_sv(const uint8_t* p, size_t b, size_t e) noexcept {
  return {reinterpret_cast<const char*>(p) + b, e - b};
}

// Trims SP/HTAB from both ends of [b, e).
inline void trim_ows(const uint8_t* p, size_t& b, size_t& e) noexcept {
  while (b < e && is_ows(p[b])) ++b;
  while (e > b && is_ows(p[e - 1])) --e;
}

// Calls fn(member_begin, member_end) for each comma-separated member of
// [b, e), OWS trimmed; members may be empty. Stops at and returns the first
// non-None error fn returns.
template <typename Fn>
Error for_each_member(const uint8_t* p, size_t b, size_t e, Fn&& fn) {
  size_t i = b;
  while (true) {
    size_t j = i;
    while (j < e && p[j] != ',') ++j;
    size_t mb = i, me = j;
    trim_ows(p, mb, me);
    if (Error err = fn(mb, me); err != Error::None) return err;
    if (j >= e) return Error::None;
    i = j + 1;
  }
}

bool is_token(const uint8_t* p, size_t b, size_t e) noexcept {
  if (b >= e) return false;
  for (size_t i = b; i < e; ++i)
    if (!is(p[i], kTchar)) return false;
  return true;
}

// Validates an authority: host [":" port]. host is a bracketed IPv6 literal
// or a name/IPv4 of unreserved characters and %HH (stricter than RFC 3986:
// no userinfo, no sub-delims, see the header). The port, when present, is
// 1..65535. Returns the offset of the first bad byte via `bad`.
bool valid_authority(const uint8_t* p, size_t b, size_t e, bool require_port,
                     size_t& bad) noexcept {
  size_t i = b;
  if (i >= e) {
    bad = b;
    return false;
  }
  if (p[i] == '[') {
    ++i;
    const size_t lit = i;
    while (i < e && (is(p[i], kHex) || p[i] == ':' || p[i] == '.')) ++i;
    if (i == lit || i >= e || p[i] != ']') {
      bad = i < e ? i : e - 1;
      return false;
    }
    ++i;
  } else {
    const size_t name = i;
    while (i < e && p[i] != ':') {
      if (p[i] == '%') {
        if (i + 2 >= e || !is(p[i + 1], kHex) || !is(p[i + 2], kHex)) {
          bad = i;
          return false;
        }
        i += 3;
        continue;
      }
      if (!is(p[i], kHostChar)) {
        bad = i;
        return false;
      }
      ++i;
    }
    if (i == name) {
      bad = i;
      return false;
    }
  }
  if (i == e) {
    if (require_port) bad = e - 1;
    return !require_port;
  }
  if (p[i] != ':') {
    bad = i;
    return false;
  }
  ++i;
  const size_t port = i;
  uint32_t value = 0;
  while (i < e && is(p[i], kDigit) && i - port < 5) {
    value = value * 10 + static_cast<uint32_t>(p[i] - '0');
    ++i;
  }
  if (i != e || i == port || value == 0 || value > 65535) {
    bad = i < e ? i : e - 1;
    return false;
  }
  return true;
}

// Path (pchar / "/" with strict %HH) then, after the first "?", a query of
// any visible ASCII except "#". Returns None or the error and its offset.
Error validate_path_query(const uint8_t* p, size_t b, size_t e, size_t& bad) noexcept {
  size_t i = b;
  for (; i < e && p[i] != '?'; ++i) {
    const uint8_t c = p[i];
    if (c == '%') {
      if (i + 2 >= e || !is(p[i + 1], kHex) || !is(p[i + 2], kHex)) {
        bad = i;
        return Error::InvalidTarget;
      }
      i += 2;
      continue;
    }
    if (!is(c, kPathChar)) {
      bad = i;
      return bad_byte(c, Error::InvalidTarget);
    }
  }
  for (; i < e; ++i) {
    if (!is(p[i], kQueryChar)) {
      bad = i;
      return bad_byte(p[i], Error::InvalidTarget);
    }
  }
  return Error::None;
}

// "HTTP/" DIGIT "." DIGIT, case-sensitive. 1.0 and 1.1 are supported; any
// other well-formed version is 505.
Error parse_version(const uint8_t* p, size_t b, size_t e, Version& v, size_t& bad) noexcept {
  static constexpr char kPattern[] = "HTTP/D.D";
  constexpr size_t kLen = sizeof(kPattern) - 1;
  for (size_t k = 0; k < kLen; ++k) {
    if (b + k >= e) {
      bad = e;
      return Error::InvalidVersion;
    }
    const uint8_t c = p[b + k];
    const bool ok = kPattern[k] == 'D' ? is(c, kDigit) : c == static_cast<uint8_t>(kPattern[k]);
    if (!ok) {
      bad = b + k;
      return bad_byte(c, Error::InvalidVersion);
    }
  }
  if (e - b != kLen) {
    bad = b + kLen;
    return bad_byte(p[b + kLen], Error::InvalidVersion);
  }
  const uint8_t major = p[b + 5], minor = p[b + 7];
  if (major == '1' && minor == '1') {
    v = Version::Http11;
  } else if (major == '1' && minor == '0') {
    v = Version::Http10;
  } else {
    bad = b + 5;
    return Error::UnsupportedVersion;
  }
  return Error::None;
}

// Content-Length = 1#DIGIT list whose members are all the same value.
Error parse_content_length(const uint8_t* p, size_t b, size_t e, uint64_t& out, size_t& bad) {
  bool first = true;
  uint64_t seen = 0;
  return for_each_member(p, b, e, [&](size_t mb, size_t me) -> Error {
    if (mb == me) {
      bad = mb < e ? mb : (e > b ? e - 1 : b);
      return Error::InvalidContentLength;
    }
    uint64_t v = 0;
    for (size_t i = mb; i < me; ++i) {
      if (!is(p[i], kDigit)) {
        bad = i;
        return bad_byte(p[i], Error::InvalidContentLength);
      }
      const uint64_t d = p[i] - '0';
      if (v > (kMaxBodyLength - d) / 10) {
        bad = i;
        return Error::ContentLengthOverflow;
      }
      v = v * 10 + d;
    }
    if (!first && v != seen) {
      bad = mb;
      return Error::ConflictingContentLength;
    }
    first = false;
    seen = v;
    out = v;
    return Error::None;
  });
}

// Checks a Transfer-Encoding field value, continuing the list of codings
// of earlier Transfer-Encoding lines (`chunked` says whether chunked was
// already applied).
Error parse_transfer_encoding(const uint8_t* p, size_t b, size_t e, bool& chunked, size_t& bad) {
  return for_each_member(p, b, e, [&](size_t mb, size_t me) -> Error {
    if (mb == me) {
      bad = mb < e ? mb : (e > b ? e - 1 : b);
      return Error::InvalidTransferEncoding;
    }
    size_t i = mb;
    while (i < me && is(p[i], kTchar)) ++i;
    if (i == mb) {
      bad = mb;
      return bad_byte(p[mb], Error::InvalidTransferEncoding);
    }
    const bool is_chunked = iequals(as_sv(p, mb, i), "chunked");
    const bool has_params = i < me;
    if (has_params) {
      // transfer-coding parameters: OWS ";" OWS name "=" value. Only the
      // codings we reject anyway may carry them, so validate the first
      // separator and let the coding's own rule answer.
      size_t k = i;
      while (k < me && is_ows(p[k])) ++k;
      if (k >= me || p[k] != ';') {
        bad = k < me ? k : i;
        return bad_byte(p[bad], Error::InvalidTransferEncoding);
      }
    }
    if (chunked) {
      bad = mb;
      return is_chunked ? Error::ChunkedRepeated : Error::ChunkedNotLast;
    }
    if (!is_chunked) {
      bad = mb;
      return Error::UnsupportedTransferCoding;
    }
    if (has_params) {  // chunked defines no parameters
      bad = i;
      return Error::InvalidTransferEncoding;
    }
    chunked = true;
    return Error::None;
  });
}

Error parse_connection(const uint8_t* p, size_t b, size_t e, ConnectionOptions& opts, size_t& bad) {
  return for_each_member(p, b, e, [&](size_t mb, size_t me) -> Error {
    if (mb == me) return Error::None;  // empty members are allowed (RFC 9110 5.6.1)
    if (!is_token(p, mb, me)) {
      size_t i = mb;
      while (i < me && is(p[i], kTchar)) ++i;
      bad = i;
      return bad_byte(p[i], Error::InvalidConnection);
    }
    const std::string_view t = as_sv(p, mb, me);
    if (iequals(t, "close"))
      opts.close = true;
    else if (iequals(t, "keep-alive"))
      opts.keep_alive = true;
    else if (iequals(t, "upgrade"))
      opts.upgrade = true;
    return Error::None;
  });
}

bool offers_websocket(const uint8_t* p, size_t b, size_t e) {
  bool found = false;
  for_each_member(p, b, e, [&](size_t mb, size_t me) -> Error {
    size_t slash = mb;
    while (slash < me && p[slash] != '/') ++slash;
    if (iequals(as_sv(p, mb, slash), "websocket")) found = true;
    return Error::None;
  });
  return found;
}

// Field names the parsers act on, compared case-insensitively.
constexpr std::string_view kContentLength = "content-length";
constexpr std::string_view kTransferEncoding = "transfer-encoding";
constexpr std::string_view kHost = "host";
constexpr std::string_view kConnection = "connection";
constexpr std::string_view kExpect = "expect";
constexpr std::string_view kUpgrade = "upgrade";

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(static_cast<uint8_t>(a[i])) != lower(static_cast<uint8_t>(b[i]))) return false;
  return true;
}

// ---------------------------------------------------------------------------
// FieldList.

const Field* FieldList::find(std::string_view name) const noexcept {
  for (const Field& f : fields_)
    if (iequals(f.name, name)) return &f;
  return nullptr;
}

size_t FieldList::count(std::string_view name) const noexcept {
  size_t n = 0;
  for (const Field& f : fields_)
    if (iequals(f.name, name)) ++n;
  return n;
}

bool FieldList::has_token(std::string_view name, std::string_view token) const noexcept {
  for (const Field& f : fields_) {
    if (!iequals(f.name, name)) continue;
    const auto* p = reinterpret_cast<const uint8_t*>(f.value.data());
    bool found = false;
    for_each_member(p, 0, f.value.size(), [&](size_t mb, size_t me) -> Error {
      if (iequals(as_sv(p, mb, me), token)) found = true;
      return Error::None;
    });
    if (found) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// Head parser core.

std::string_view HeadParserBase::Span::view(std::span<const uint8_t> buf) const noexcept {
  return {reinterpret_cast<const char*>(buf.data()) + off, len};
}

HeadParserBase::Span HeadParserBase::Span::make(size_t b, size_t e) noexcept {
  return {static_cast<uint32_t>(b), static_cast<uint32_t>(e - b)};
}

HeadParserBase::HeadParserBase(Mode mode, const Limits& limits) : mode_(mode), limits_(limits) {
  // Offsets are kept in 32 bits; no sane head limit comes near that.
  limits_.max_head_bytes = std::min<size_t>(limits_.max_head_bytes, UINT32_MAX);
  limits_.max_request_line = std::max<size_t>(limits_.max_request_line, 1);
  limits_.max_head_bytes = std::max<size_t>(limits_.max_head_bytes, 1);
  // A field line takes at least 4 bytes ("a:\r\n"): more fields than that
  // cannot fit, so a larger configured count would only waste the reserve.
  limits_.max_fields = std::min(limits_.max_fields, limits_.max_head_bytes / 4 + 1);
  // Reserved once so a parse never allocates.
  refs_.reserve(limits_.max_fields);
  fields_.reserve(limits_.max_fields);
}

void HeadParserBase::reset() noexcept {
  pos_ = 0;
  scanned_ = 0;
  high_water_ = 0;
  start_line_done_ = false;
  start_line_begin_ = 0;
  status_ = ParseStatus::NeedMore;
  result_ = {};
  refs_.clear();
  fields_.clear();
  has_content_length_ = false;
  content_length_ = 0;
  content_length_line_ = 0;
  has_transfer_encoding_ = false;
  chunked_ = false;
  transfer_encoding_line_ = 0;
  connection_ = {};
  has_upgrade_ = false;
  upgrade_ = {};
  reset_message();
}

HeadResult HeadParserBase::fail(Error e, size_t offset) noexcept {
  status_ = ParseStatus::Error;
  result_ = {ParseStatus::Error, 0, e, offset};
  return result_;
}

HeadResult HeadParserBase::parse_lines(std::span<const uint8_t> buf) {
  if (status_ == ParseStatus::Error) return result_;
  if (buf.size() < high_water_) return fail(Error::BufferRewound, buf.size());
  high_water_ = buf.size();
  if (status_ == ParseStatus::Done) {
    materialize(buf);
    return result_;
  }
  const uint8_t* p = buf.data();
  while (true) {
    // Where the current line must have ended at the latest. Deciding on a
    // limit only from (pos_, limits) and the buffer prefix up to it keeps
    // the answer the same however the bytes were split.
    size_t limit_end = limits_.max_head_bytes;
    Error limit_error = mode_ == Mode::Request ? Error::HeadTooLarge : Error::ResponseHeadTooLarge;
    if (mode_ == Mode::Request && !start_line_done_ &&
        pos_ + limits_.max_request_line <= limit_end) {
      limit_end = pos_ + limits_.max_request_line;
      limit_error = Error::RequestLineTooLong;
    }
    const size_t search_end = std::min(buf.size(), limit_end);
    // Look for the LF ending the current line. NUL and a CR not followed by
    // LF are what smuggling payloads are made of: they are reported as soon
    // as they arrive, before any structural complaint they would cause.
    // Scanning in byte order keeps the first reported byte the same however
    // the input was split.
    size_t k = std::max(pos_, scanned_);
    size_t lf_pos = SIZE_MAX;
    for (; k < search_end; ++k) {
      const uint8_t c = p[k];
      if (c > kCR) continue;  // every byte of interest is <= CR
      if (c == kLF) {
        lf_pos = k;
        break;
      }
      if (c == 0) return fail(Error::NulByte, k);
      if (c == kCR) {
        if (k + 1 >= search_end) break;  // its LF may still come: look again
        if (p[k + 1] != kLF) return fail(Error::BareCr, k);
      }
    }
    if (lf_pos == SIZE_MAX) {
      if (buf.size() >= limit_end) return fail(limit_error, limit_end - 1);
      scanned_ = k;
      return {ParseStatus::NeedMore, 0, Error::None, 0};
    }
    if (lf_pos == pos_ || p[lf_pos - 1] != kCR) return fail(Error::BareLf, lf_pos);
    const size_t line_b = pos_;
    const size_t line_e = lf_pos - 1;
    pos_ = lf_pos + 1;
    size_t bad = line_b;

    if (line_b == line_e) {
      if (!start_line_done_) {
        if (mode_ == Mode::Request) continue;  // RFC 9112 2.2: skip leading CRLF
        return fail(Error::InvalidStatusLine, line_b);
      }
      if (Error e = on_head_end(buf, pos_, bad); e != Error::None) return fail(e, bad);
      status_ = ParseStatus::Done;
      result_ = {ParseStatus::Done, pos_, Error::None, 0};
      materialize(buf);
      return result_;
    }

    if (!start_line_done_) {
      start_line_begin_ = line_b;
      if (Error e = parse_start_line(buf, line_b, line_e, bad); e != Error::None)
        return fail(e, bad);
      start_line_done_ = true;
      continue;
    }

    if (refs_.size() >= limits_.max_fields)
      return fail(mode_ == Mode::Request ? Error::TooManyFields : Error::ResponseTooManyFields,
                  line_b);

    // field-line = field-name ":" OWS field-value OWS
    if (is_ows(p[line_b])) return fail(Error::ObsFold, line_b);
    size_t i = line_b;
    while (i < line_e && is(p[i], kTchar)) ++i;
    if (i == line_b) return fail(bad_byte(p[i], Error::InvalidFieldName), i);
    if (i == line_e) return fail(Error::MissingColon, i);
    if (is_ows(p[i])) return fail(Error::WhitespaceBeforeColon, i);
    if (p[i] != ':') return fail(bad_byte(p[i], Error::InvalidFieldName), i);
    const size_t name_e = i;
    size_t vb = i + 1;
    while (vb < line_e && is_ows(p[vb])) ++vb;
    size_t ve = vb;
    for (size_t k = vb; k < line_e; ++k) {
      const uint8_t c = p[k];
      if (!is(c, kFieldVchar)) return fail(bad_byte(c, Error::InvalidFieldValue), k);
      if (!is_ows(c)) ve = k + 1;
    }
    const FieldRef f{Span::make(line_b, name_e), Span::make(vb, ve)};
    refs_.push_back(f);
    if (Error e = on_field(buf, f, line_b, bad); e != Error::None) return fail(e, bad);
  }
}

Error HeadParserBase::on_framing_field(std::span<const uint8_t> buf, const FieldRef& f,
                                       size_t line_begin, size_t& bad) {
  const uint8_t* p = buf.data();
  const std::string_view name = f.name.view(buf);
  const size_t vb = f.value.off, ve = f.value.off + f.value.len;
  if (iequals(name, kContentLength)) {
    uint64_t v = 0;
    if (Error e = parse_content_length(p, vb, ve, v, bad); e != Error::None) {
      if (vb == ve) bad = line_begin;
      return e;
    }
    if (has_content_length_ && v != content_length_) {
      bad = vb;
      return Error::ConflictingContentLength;
    }
    if (!has_content_length_) content_length_line_ = line_begin;
    has_content_length_ = true;
    content_length_ = v;
  } else if (iequals(name, kTransferEncoding)) {
    if (!has_transfer_encoding_) transfer_encoding_line_ = line_begin;
    has_transfer_encoding_ = true;
    if (Error e = parse_transfer_encoding(p, vb, ve, chunked_, bad); e != Error::None) {
      if (vb == ve) bad = line_begin;
      return e;
    }
  }
  return Error::None;
}

Error HeadParserBase::check_framing_at_end(Version v, size_t& bad) const {
  if (has_transfer_encoding_ && v == Version::Http10) {
    bad = transfer_encoding_line_;
    return Error::TransferEncodingInHttp10;
  }
  if (has_transfer_encoding_ && has_content_length_) {
    bad = std::max(transfer_encoding_line_, content_length_line_);
    return Error::ContentLengthWithTransferEncoding;
  }
  return Error::None;
}

void HeadParserBase::materialize_fields(std::span<const uint8_t> buf) {
  fields_.clear();
  for (const FieldRef& r : refs_) fields_.push_back({r.name.view(buf), r.value.view(buf)});
}

// ---------------------------------------------------------------------------
// Requests.

RequestParser::RequestParser(const Limits& limits) : HeadParserBase(Mode::Request, limits) {}

HeadResult RequestParser::parse(std::span<const uint8_t> buf) { return parse_lines(buf); }

void RequestParser::reset_message() noexcept {
  method_ = target_ = path_ = target_authority_ = host_ = {};
  form_ = TargetForm::Origin;
  version_ = Version::Http11;
  host_count_ = 0;
  expect_continue_ = false;
  upgrade_websocket_ = false;
  head_ = {};
}

Error RequestParser::parse_start_line(std::span<const uint8_t> buf, size_t b, size_t e,
                                      size_t& bad) {
  const uint8_t* p = buf.data();
  // method SP request-target SP HTTP-version, single SPs. The version is
  // after the last SP so that a SP inside the target is reported as such.
  size_t i = b;
  while (i < e && is(p[i], kTchar)) ++i;
  if (i == b) {
    bad = b;
    return is_ows(p[b]) ? Error::InvalidRequestLine : bad_byte(p[b], Error::InvalidMethod);
  }
  if (i == e) {
    bad = e;
    return Error::InvalidRequestLine;
  }
  if (p[i] != kSP) {
    bad = i;
    return is_ows(p[i]) ? Error::InvalidRequestLine : bad_byte(p[i], Error::InvalidMethod);
  }
  method_ = Span::make(b, i);
  const size_t tb = i + 1;
  if (p[e - 1] == kSP) {  // "GET / HTTP/1.1 "
    bad = e - 1;
    return Error::InvalidRequestLine;
  }
  size_t last_sp = e;
  while (last_sp > tb && p[last_sp - 1] != kSP) --last_sp;
  if (last_sp == tb) {  // no second SP: "GET /" (HTTP/0.9) or "GET  HTTP/1.1"
    bad = tb < e ? tb : e;
    return Error::InvalidRequestLine;
  }
  const size_t te = last_sp - 1;  // target is [tb, te)
  if (p[tb] == kSP) {
    bad = tb;
    return Error::InvalidRequestLine;
  }
  if (p[te - 1] == kSP) {
    bad = te - 1;
    return Error::InvalidRequestLine;
  }

  // Target.
  target_ = Span::make(tb, te);
  const std::string_view method = as_sv(p, b, i);
  if (method == "CONNECT") {
    if (!valid_authority(p, tb, te, /*require_port=*/true, bad))
      return bad_byte(p[bad], Error::InvalidTarget);
    form_ = TargetForm::Authority;
    target_authority_ = Span::make(tb, te);
    path_ = Span::make(te, te);
  } else if (te - tb == 1 && p[tb] == '*') {
    if (method != "OPTIONS") {
      bad = tb;
      return Error::InvalidTarget;
    }
    form_ = TargetForm::Asterisk;
    path_ = Span::make(tb, te);
  } else if (p[tb] == '/') {
    if (Error err = validate_path_query(p, tb, te, bad); err != Error::None) return err;
    form_ = TargetForm::Origin;
    path_ = Span::make(tb, te);
  } else {
    // absolute-form: scheme "://" authority path-abempty [ "?" query ]
    size_t k = tb;
    while (k < te && p[k] != ':' && p[k] != '/' && p[k] != '?') {
      if (!is(p[k], kTchar)) {
        bad = k;
        return bad_byte(p[k], Error::InvalidTarget);
      }
      ++k;
    }
    const std::string_view scheme = as_sv(p, tb, k);
    if (!(iequals(scheme, "http") || iequals(scheme, "https")) || te - k < 3 || p[k] != ':' ||
        p[k + 1] != '/' || p[k + 2] != '/') {
      bad = tb;
      return Error::InvalidTarget;
    }
    const size_t ab = k + 3;
    size_t ae = ab;
    while (ae < te && p[ae] != '/' && p[ae] != '?' && p[ae] != '#') ++ae;
    if (!valid_authority(p, ab, ae, /*require_port=*/false, bad)) {
      if (bad < te) return bad_byte(p[bad], Error::InvalidTarget);
      return Error::InvalidTarget;
    }
    if (Error err = validate_path_query(p, ae, te, bad); err != Error::None) return err;
    form_ = TargetForm::Absolute;
    target_authority_ = Span::make(ab, ae);
    path_ = Span::make(ae, te);
  }

  // Version.
  return parse_version(p, last_sp, e, version_, bad);
}

Error RequestParser::on_field(std::span<const uint8_t> buf, const FieldRef& f, size_t line_begin,
                              size_t& bad) {
  const uint8_t* p = buf.data();
  const std::string_view name = f.name.view(buf);
  const size_t vb = f.value.off, ve = f.value.off + f.value.len;
  if (iequals(name, kContentLength) || iequals(name, kTransferEncoding))
    return on_framing_field(buf, f, line_begin, bad);
  if (iequals(name, kHost)) {
    if (++host_count_ > 1) {
      bad = line_begin;
      return Error::MultipleHost;
    }
    if (!valid_authority(p, vb, ve, /*require_port=*/false, bad)) {
      if (vb == ve) bad = line_begin;
      return Error::InvalidHost;
    }
    host_ = f.value;
  } else if (iequals(name, kConnection)) {
    return parse_connection(p, vb, ve, connection_, bad);
  } else if (iequals(name, kExpect)) {
    // RFC 9110 10.1.1: 100-continue in an HTTP/1.0 request is ignored.
    if (version_ == Version::Http11) {
      if (!iequals(f.value.view(buf), "100-continue")) {
        bad = vb < ve ? vb : line_begin;
        return Error::UnsupportedExpectation;
      }
      expect_continue_ = true;
    }
  } else if (iequals(name, kUpgrade)) {
    if (!has_upgrade_) upgrade_ = f.value;
    has_upgrade_ = true;
    if (offers_websocket(p, vb, ve)) upgrade_websocket_ = true;
  }
  return Error::None;
}

Error RequestParser::on_head_end(std::span<const uint8_t>, size_t end, size_t& bad) {
  if (Error e = check_framing_at_end(version_, bad); e != Error::None) return e;
  if (version_ == Version::Http11 && host_count_ == 0) {
    bad = end - 2;
    return Error::MissingHost;
  }
  return Error::None;
}

void RequestParser::materialize(std::span<const uint8_t> buf) {
  materialize_fields(buf);
  RequestHead& h = head_;
  h.method = method_.view(buf);
  h.target = target_.view(buf);
  h.form = form_;
  h.version = version_;
  h.authority = (form_ == TargetForm::Absolute || form_ == TargetForm::Authority)
                    ? target_authority_.view(buf)
                    : host_.view(buf);
  h.path = path_.view(buf);
  h.fields = FieldList(std::span<const Field>(fields_.data(), fields_.size()));
  if (chunked_)
    h.framing = BodyFraming::chunked();
  else if (has_content_length_)
    h.framing = BodyFraming::content_length(content_length_);
  else
    h.framing = BodyFraming::none();
  h.connection = connection_;
  const bool http11 = version_ == Version::Http11;
  h.expect_continue = http11 && expect_continue_;
  // RFC 9110 7.8: Upgrade in an HTTP/1.0 request is ignored, and it only
  // applies when "upgrade" is a Connection option.
  h.upgrade = http11 && has_upgrade_ && connection_.upgrade;
  h.upgrade_websocket = h.upgrade && upgrade_websocket_;
  h.upgrade_protocols = has_upgrade_ ? upgrade_.view(buf) : std::string_view();
}

// ---------------------------------------------------------------------------
// Responses.

ResponseParser::ResponseParser(const Limits& limits) : HeadParserBase(Mode::Response, limits) {}

HeadResult ResponseParser::parse(std::span<const uint8_t> buf) { return parse_lines(buf); }

void ResponseParser::reset_message() noexcept {
  version_ = Version::Http11;
  status_code_ = 0;
  reason_ = {};
  head_ = {};
}

Error ResponseParser::parse_start_line(std::span<const uint8_t> buf, size_t b, size_t e,
                                       size_t& bad) {
  const uint8_t* p = buf.data();
  // HTTP-version SP 3DIGIT [ SP reason-phrase ]
  size_t sp = b;
  while (sp < e && p[sp] != kSP) ++sp;
  if (sp == e) {
    // "HTTX/1.1" is a bad version; "HTTP/1.1" alone lacks its status code.
    if (Error err = parse_version(p, b, e, version_, bad); err != Error::None) return err;
    bad = e;
    return Error::InvalidStatusLine;
  }
  if (Error err = parse_version(p, b, sp, version_, bad); err != Error::None) return err;
  const size_t cb = sp + 1;
  uint32_t code = 0;
  size_t i = cb;
  for (; i < e && i < cb + 3; ++i) {
    if (!is(p[i], kDigit)) {
      bad = i;
      return bad_byte(p[i], Error::InvalidStatusCode);
    }
    code = code * 10 + (p[i] - '0');
  }
  if (i < cb + 3) {
    bad = i;
    return Error::InvalidStatusCode;
  }
  if (i < e && p[i] != kSP) {
    bad = i;
    return bad_byte(p[i], Error::InvalidStatusCode);
  }
  if (code < 100 || code > 599) {
    bad = cb;
    return Error::InvalidStatusCode;
  }
  status_code_ = static_cast<uint16_t>(code);
  const size_t rb = i < e ? i + 1 : e;
  for (size_t k = rb; k < e; ++k) {
    if (!is(p[k], kFieldVchar)) {
      bad = k;
      return bad_byte(p[k], Error::InvalidReasonPhrase);
    }
  }
  reason_ = Span::make(rb, e);
  return Error::None;
}

Error ResponseParser::on_field(std::span<const uint8_t> buf, const FieldRef& f, size_t line_begin,
                               size_t& bad) {
  const std::string_view name = f.name.view(buf);
  const size_t vb = f.value.off, ve = f.value.off + f.value.len;
  if (iequals(name, kContentLength) || iequals(name, kTransferEncoding))
    return on_framing_field(buf, f, line_begin, bad);
  if (iequals(name, kConnection)) return parse_connection(buf.data(), vb, ve, connection_, bad);
  if (iequals(name, kUpgrade)) {
    if (!has_upgrade_) upgrade_ = f.value;
    has_upgrade_ = true;
  }
  return Error::None;
}

Error ResponseParser::on_head_end(std::span<const uint8_t>, size_t, size_t& bad) {
  return check_framing_at_end(version_, bad);
}

void ResponseParser::materialize(std::span<const uint8_t> buf) {
  materialize_fields(buf);
  ResponseHead& h = head_;
  h.version = version_;
  h.status = status_code_;
  h.reason = reason_.view(buf);
  h.fields = FieldList(std::span<const Field>(fields_.data(), fields_.size()));
  h.connection = connection_;
  h.has_content_length = has_content_length_;
  h.content_length = content_length_;
  h.chunked = chunked_;
  h.upgrade_protocols = has_upgrade_ ? upgrade_.view(buf) : std::string_view();
}

// ---------------------------------------------------------------------------
// Framing and connection semantics.

BodyFraming response_framing(const ResponseHead& head, std::string_view request_method) noexcept {
  if (request_method == "HEAD") return BodyFraming::none();
  if (head.status < 200 || head.status == 204 || head.status == 304) return BodyFraming::none();
  if (request_method == "CONNECT" && head.status < 300) return BodyFraming::none();
  if (head.chunked) return BodyFraming::chunked();
  if (head.has_content_length) return BodyFraming::content_length(head.content_length);
  return BodyFraming::until_close();
}

Error check_body_size(const BodyFraming& framing, uint64_t max_body_bytes) noexcept {
  if (framing.kind == BodyFraming::Kind::ContentLength && framing.length > max_body_bytes)
    return Error::BodyTooLarge;
  return Error::None;
}

namespace {
bool keep_alive_for(Version v, const ConnectionOptions& c) noexcept {
  if (c.close) return false;
  return v == Version::Http11 || c.keep_alive;
}
}  // namespace

bool request_keep_alive(const RequestHead& head) noexcept {
  return keep_alive_for(head.version, head.connection);
}

bool response_keep_alive(const ResponseHead& head, const BodyFraming& framing) noexcept {
  if (framing.kind == BodyFraming::Kind::UntilClose) return false;
  if (head.status == 101) return false;  // the connection becomes a tunnel
  return keep_alive_for(head.version, head.connection);
}

bool is_upgrade_accepted(const ResponseHead& head) noexcept {
  return head.status == 101 && head.version == Version::Http11 && head.connection.upgrade &&
         !head.upgrade_protocols.empty();
}

bool is_framing_field(std::string_view name) noexcept {
  return iequals(name, kContentLength) || iequals(name, kTransferEncoding);
}

bool is_hop_by_hop(std::string_view name, const FieldList& fields,
                   const HopByHopOptions& options) noexcept {
  static constexpr std::string_view kAlways[] = {"connection", "keep-alive", "proxy-connection",
                                                 "te", "trailer"};
  for (std::string_view h : kAlways)
    if (iequals(name, h)) return true;
  if (iequals(name, kUpgrade)) return !options.keep_upgrade;
  if (is_framing_field(name)) return options.reframe;
  if (iequals(name, kHost)) return false;
  return fields.has_token(kConnection, name);
}

// ---------------------------------------------------------------------------
// Content-Length bodies.

ContentLengthDecoder::ContentLengthDecoder(uint64_t length, const Limits& limits)
    : length_(length), too_large_(length > limits.max_body_bytes) {}

BodyResult ContentLengthDecoder::decode(std::span<const uint8_t> input, size_t max_data) {
  if (too_large_) return {ParseStatus::Error, 0, {}, Error::BodyTooLarge, 0};
  const uint64_t left = length_ - delivered_;
  const size_t take =
      static_cast<size_t>(std::min<uint64_t>(left, std::min<uint64_t>(input.size(), max_data)));
  delivered_ += take;
  const ParseStatus st = delivered_ == length_ ? ParseStatus::Done : ParseStatus::NeedMore;
  return {st, take, input.first(take), Error::None, 0};
}

BodyResult ContentLengthDecoder::finish() {
  if (too_large_) return {ParseStatus::Error, 0, {}, Error::BodyTooLarge, 0};
  if (delivered_ == length_) return {ParseStatus::Done, 0, {}, Error::None, 0};
  return {ParseStatus::Error, 0, {}, Error::BodyTruncated, delivered_};
}

// ---------------------------------------------------------------------------
// Chunked bodies.
//
// chunked-body = *chunk last-chunk trailer-section CRLF
// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
// chunk-ext    = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )

enum class ChunkedDecoder::State : uint8_t {
  Size,      // hex digits
  SizeWs,    // BWS after the size: only ";" may follow
  ExtStart,  // after ";": BWS then a name
  ExtName,
  ExtNameWs,      // BWS after a name: "=" or ";" must follow
  ExtValueStart,  // after "=": BWS then token or quoted-string
  ExtToken,
  ExtQuoted,
  ExtQuotedPair,
  ExtAfterQuoted,
  ExtValueWs,  // BWS after a value: ";" must follow
  SizeLf,      // CR seen at the end of the size line
  Data,
  DataCr,
  DataLf,
  TrailerLineStart,
  TrailerName,
  TrailerValue,
  TrailerLf,
  FinalLf,
  Done,
  Failed,
};

namespace {
// Trailer fields that would change how the message is framed or routed if
// a later hop merged trailers into the header section.
constexpr std::string_view kForbiddenTrailers[] = {"content-length", "transfer-encoding", "host"};
}  // namespace

ChunkedDecoder::ChunkedDecoder(const Limits& limits) : limits_(limits), state_(State::Size) {}

void ChunkedDecoder::reset() noexcept {
  state_ = State::Size;
  stream_offset_ = body_bytes_ = chunk_size_ = chunk_remaining_ = 0;
  size_digits_ = extension_bytes_ = trailer_bytes_ = trailer_fields_ = trailer_name_len_ = 0;
  error_ = Error::None;
  error_offset_ = 0;
}

BodyResult ChunkedDecoder::fail(Error e, size_t consumed_in_call) {
  state_ = State::Failed;
  error_ = e;
  error_offset_ = stream_offset_ + consumed_in_call;
  stream_offset_ += consumed_in_call;
  return {ParseStatus::Error, consumed_in_call, {}, e, error_offset_};
}

BodyResult ChunkedDecoder::finish() {
  if (state_ == State::Failed) return {ParseStatus::Error, 0, {}, error_, error_offset_};
  if (state_ == State::Done) return {ParseStatus::Done, 0, {}, Error::None, 0};
  return {ParseStatus::Error, 0, {}, Error::BodyTruncated, stream_offset_};
}

BodyResult ChunkedDecoder::decode(std::span<const uint8_t> input, size_t max_data) {
  if (state_ == State::Failed) return {ParseStatus::Error, 0, {}, error_, error_offset_};
  if (state_ == State::Done) return {ParseStatus::Done, 0, {}, Error::None, 0};

  const uint8_t* p = input.data();
  const size_t n = input.size();
  std::span<const uint8_t> data;
  bool have_data = false;
  size_t i = 0;

  // An error after data was found in this call still hands that data out:
  // those bytes preceded the error, exactly as they would have in an
  // earlier call had the input been split before the error.
  auto error = [&](Error e) {
    BodyResult r = fail(e, i);
    r.data = data;
    return r;
  };

  while (i < n) {
    if (state_ == State::Data) {
      if (have_data) break;  // one span per call
      const size_t take = static_cast<size_t>(
          std::min<uint64_t>(chunk_remaining_, std::min<uint64_t>(n - i, max_data)));
      if (take == 0) break;  // back-pressure: the destination has no room
      data = input.subspan(i, take);
      have_data = true;
      i += take;
      chunk_remaining_ -= take;
      body_bytes_ += take;
      if (chunk_remaining_ == 0) state_ = State::DataCr;
      continue;
    }

    const uint8_t c = p[i];
    // Bytes of the size line after the digits (up to its CR) are bounded
    // as extensions.
    if (state_ >= State::SizeWs && state_ <= State::ExtValueWs && c != kCR) {
      if (++extension_bytes_ > limits_.max_chunk_extension_bytes)
        return error(Error::ChunkExtensionTooLong);
    }
    if (state_ >= State::TrailerLineStart && state_ <= State::FinalLf) {
      if (++trailer_bytes_ > limits_.max_trailer_bytes) return error(Error::TrailerTooLarge);
    }

    switch (state_) {
      case State::Size:
        if (is(c, kHex)) {
          if (++size_digits_ > kMaxChunkSizeDigits) return error(Error::ChunkSizeTooLong);
          const uint64_t d = static_cast<uint64_t>(hex_value(c));
          if (chunk_size_ > (kMaxBodyLength - d) / 16) return error(Error::ChunkSizeOverflow);
          chunk_size_ = chunk_size_ * 16 + d;
        } else if (size_digits_ == 0) {
          // Also an empty size line ("\r\n"): a CR here is no line end.
          if (c == kLF) return error(Error::BareLf);
          return error(c == 0 ? Error::NulByte : Error::InvalidChunkSize);
        } else if (c == kCR) {
          state_ = State::SizeLf;
        } else if (c == ';' || is_ows(c)) {
          extension_bytes_ = 1;
          state_ = c == ';' ? State::ExtStart : State::SizeWs;
        } else if (c == kLF) {
          return error(Error::BareLf);
        } else {
          return error(c == 0 ? Error::NulByte : Error::InvalidChunkSize);
        }
        break;
      case State::SizeWs:
        if (c == ';')
          state_ = State::ExtStart;
        else if (!is_ows(c))
          return error(c == 0 ? Error::NulByte : Error::InvalidChunkSize);
        break;
      case State::ExtStart:
        if (is(c, kTchar))
          state_ = State::ExtName;
        else if (!is_ows(c))
          return error(c == 0 ? Error::NulByte : Error::InvalidChunkExtension);
        break;
      case State::ExtName:
        if (is(c, kTchar)) break;
        if (c == ';')
          state_ = State::ExtStart;
        else if (c == '=')
          state_ = State::ExtValueStart;
        else if (is_ows(c))
          state_ = State::ExtNameWs;
        else if (c == kCR)
          state_ = State::SizeLf;
        else if (c == kLF)
          return error(Error::BareLf);
        else
          return error(c == 0 ? Error::NulByte : Error::InvalidChunkExtension);
        break;
      case State::ExtNameWs:
        if (c == ';')
          state_ = State::ExtStart;
        else if (c == '=')
          state_ = State::ExtValueStart;
        else if (!is_ows(c))
          return error(c == 0 ? Error::NulByte : Error::InvalidChunkExtension);
        break;
      case State::ExtValueStart:
        if (c == '"')
          state_ = State::ExtQuoted;
        else if (is(c, kTchar))
          state_ = State::ExtToken;
        else if (!is_ows(c))
          return error(c == 0 ? Error::NulByte : Error::InvalidChunkExtension);
        break;
      case State::ExtToken:
        if (is(c, kTchar)) break;
        if (c == ';')
          state_ = State::ExtStart;
        else if (is_ows(c))
          state_ = State::ExtValueWs;
        else if (c == kCR)
          state_ = State::SizeLf;
        else if (c == kLF)
          return error(Error::BareLf);
        else
          return error(c == 0 ? Error::NulByte : Error::InvalidChunkExtension);
        break;
      case State::ExtQuoted:
        if (c == '"')
          state_ = State::ExtAfterQuoted;
        else if (c == '\\')
          state_ = State::ExtQuotedPair;
        else if (!is(c, kQdtext))
          return error(c == 0 ? Error::NulByte : Error::InvalidChunkExtension);
        break;
      case State::ExtQuotedPair:
        if (!is(c, kFieldVchar))
          return error(c == 0 ? Error::NulByte : Error::InvalidChunkExtension);
        state_ = State::ExtQuoted;
        break;
      case State::ExtAfterQuoted:
        if (c == ';')
          state_ = State::ExtStart;
        else if (is_ows(c))
          state_ = State::ExtValueWs;
        else if (c == kCR)
          state_ = State::SizeLf;
        else if (c == kLF)
          return error(Error::BareLf);
        else
          return error(c == 0 ? Error::NulByte : Error::InvalidChunkExtension);
        break;
      case State::ExtValueWs:
        if (c == ';')
          state_ = State::ExtStart;
        else if (!is_ows(c))
          return error(c == 0 ? Error::NulByte : Error::InvalidChunkExtension);
        break;
      case State::SizeLf:
        if (c != kLF) return error(Error::BareCr);
        if (chunk_size_ == 0) {
          state_ = State::TrailerLineStart;
        } else {
          if (chunk_size_ > limits_.max_body_bytes - body_bytes_) return error(Error::BodyTooLarge);
          chunk_remaining_ = chunk_size_;
          state_ = State::Data;
        }
        break;
      case State::DataCr:
        if (c != kCR) return error(Error::MissingChunkDataCrlf);
        state_ = State::DataLf;
        break;
      case State::DataLf:
        if (c != kLF) return error(Error::MissingChunkDataCrlf);
        state_ = State::Size;
        chunk_size_ = 0;
        size_digits_ = 0;
        extension_bytes_ = 0;
        break;
      case State::TrailerLineStart:
        if (c == kCR) {
          state_ = State::FinalLf;
        } else if (is(c, kTchar)) {
          if (++trailer_fields_ > limits_.max_trailer_fields)
            return error(Error::TooManyTrailerFields);
          trailer_name_[0] = static_cast<char>(lower(c));
          trailer_name_len_ = 1;
          state_ = State::TrailerName;
        } else if (is_ows(c)) {
          return error(Error::ObsFold);
        } else if (c == kLF) {
          return error(Error::BareLf);
        } else {
          return error(c == 0 ? Error::NulByte : Error::InvalidFieldName);
        }
        break;
      case State::TrailerName:
        if (is(c, kTchar)) {
          // Names longer than the buffer cannot be forbidden ones; keep
          // counting so they never match.
          if (trailer_name_len_ < sizeof(trailer_name_))
            trailer_name_[trailer_name_len_] = static_cast<char>(lower(c));
          ++trailer_name_len_;
        } else if (c == ':') {
          if (trailer_name_len_ <= sizeof(trailer_name_)) {
            const std::string_view nm(trailer_name_, trailer_name_len_);
            for (std::string_view f : kForbiddenTrailers)
              if (nm == f) return error(Error::ForbiddenTrailerField);
          }
          state_ = State::TrailerValue;
        } else if (is_ows(c)) {
          return error(Error::WhitespaceBeforeColon);
        } else if (c == kCR || c == kLF) {
          return error(Error::MissingColon);
        } else {
          return error(c == 0 ? Error::NulByte : Error::InvalidFieldName);
        }
        break;
      case State::TrailerValue:
        if (c == kCR)
          state_ = State::TrailerLf;
        else if (c == kLF)
          return error(Error::BareLf);
        else if (!is(c, kFieldVchar))
          return error(c == 0 ? Error::NulByte : Error::InvalidFieldValue);
        break;
      case State::TrailerLf:
        if (c != kLF) return error(Error::BareCr);
        state_ = State::TrailerLineStart;
        break;
      case State::FinalLf:
        if (c != kLF) return error(Error::BareCr);
        state_ = State::Done;
        break;
      case State::Data:
      case State::Done:
      case State::Failed:
        break;  // handled above / unreachable
    }
    ++i;
    if (state_ == State::Done) break;
  }
  stream_offset_ += i;
  const ParseStatus st = state_ == State::Done ? ParseStatus::Done : ParseStatus::NeedMore;
  return {st, i, data, Error::None, 0};
}

// ---------------------------------------------------------------------------
// BodyDecoder.

BodyDecoder::BodyDecoder(const BodyFraming& framing, const Limits& limits)
    : framing_(framing),
      limits_(limits),
      length_(framing.kind == BodyFraming::Kind::ContentLength ? framing.length : 0, limits),
      chunked_(limits) {}

BodyResult BodyDecoder::decode(std::span<const uint8_t> input, size_t max_data) {
  switch (framing_.kind) {
    case BodyFraming::Kind::None:
      return {ParseStatus::Done, 0, {}, Error::None, 0};
    case BodyFraming::Kind::ContentLength:
      return length_.decode(input, max_data);
    case BodyFraming::Kind::Chunked:
      return chunked_.decode(input, max_data);
    case BodyFraming::Kind::UntilClose:
      break;
  }
  if (until_close_done_) return {ParseStatus::Done, 0, {}, Error::None, 0};
  if (until_close_failed_)
    return {ParseStatus::Error, 0, {}, Error::BodyTooLarge, until_close_bytes_};
  const uint64_t allowed = limits_.max_body_bytes - until_close_bytes_;
  const size_t want = std::min(input.size(), max_data);
  if (want > allowed) {
    // Deliver what fits, then fail: the same bytes reach the caller however
    // the stream was split.
    const size_t take = static_cast<size_t>(allowed);
    until_close_bytes_ += take;
    const uint64_t off = until_close_bytes_;
    until_close_failed_ = true;
    return {ParseStatus::Error, take, input.first(take), Error::BodyTooLarge, off};
  }
  until_close_bytes_ += want;
  return {ParseStatus::NeedMore, want, input.first(want), Error::None, 0};
}

BodyResult BodyDecoder::finish() {
  switch (framing_.kind) {
    case BodyFraming::Kind::None:
      return {ParseStatus::Done, 0, {}, Error::None, 0};
    case BodyFraming::Kind::ContentLength:
      return length_.finish();
    case BodyFraming::Kind::Chunked:
      return chunked_.finish();
    case BodyFraming::Kind::UntilClose:
      break;
  }
  if (until_close_failed_)
    return {ParseStatus::Error, 0, {}, Error::BodyTooLarge, until_close_bytes_};
  until_close_done_ = true;
  return {ParseStatus::Done, 0, {}, Error::None, 0};
}

uint64_t BodyDecoder::body_bytes() const noexcept {
  switch (framing_.kind) {
    case BodyFraming::Kind::None:
      return 0;
    case BodyFraming::Kind::ContentLength:
      return length_.body_bytes();
    case BodyFraming::Kind::Chunked:
      return chunked_.body_bytes();
    case BodyFraming::Kind::UntilClose:
      return until_close_bytes_;
  }
  return 0;
}

}  // namespace edgepin::http1
