#pragma once
// Strict, incremental, zero-copy HTTP/1.1 message parsing (RFC 9110, 9112)
// for a reverse proxy: request heads from clients, response heads from the
// upstream, and body framing while streaming.
//
// Nothing here owns message bytes, touches sockets or allocates per message:
// the head parsers hand back string_views into the caller's buffer, and the
// body decoders hand back sub-spans of the segment they were given.
//
// How the node-proxy drives it, per connection:
//   1. RequestParser::parse(all bytes received since the head began) until
//      Done(consumed) or Error (answer http_status(error) and close).
//   2. Rebuild the head for upstream: iterate head().fields, drop every field
//      for which is_hop_by_hop() is true (and its own policy's fields, e.g.
//      X-Forwarded-*), write a Host from head().authority, its own fields, and
//      the framing header for head().framing (see is_framing_field()).
//   3. Drain the head bytes; stream the body with a BodyDecoder built from
//      head().framing: each decode() call returns at most one span of body
//      bytes (zero-copy into the segment) bounded by the room the destination
//      has (back-pressure), plus how many input bytes it consumed.
//   4. Parse the response head with ResponseParser, compute
//      response_framing(head, request method), stream it the same way. 1xx
//      heads other than 101 are followed by another response head.
//   5. Keep-alive: request_keep_alive() && response_keep_alive() &&
//      both bodies complete; then reset() the parsers and continue with the
//      bytes left in the buffer (pipelining).
//
// Policy choices (all stricter than or equal to RFC 9112; each is named in
// the corpus tests/unit/common/http1_smuggling_cases.txt):
//   - Line endings: CRLF only. A bare LF terminating a line is rejected
//     (bare_lf), a CR not followed by LF is rejected (bare_cr).
//   - Empty lines (CRLF) before a request line are skipped (RFC 9112 2.2);
//     they count against max_head_bytes and are part of `consumed`.
//   - OWS is SP or HTAB: "Transfer-Encoding:\tchunked" is a valid chunked
//     declaration (and so conflicts with any Content-Length).
//   - Identical Content-Length values, repeated in one field as a list or in
//     several fields, are folded into one (RFC 9112 6.3 allows it); differing
//     values are rejected. Because of this the proxy must never forward the
//     received Content-Length field: it writes one from BodyFraming.
//   - Transfer-Encoding: only "chunked" (case-insensitive, no parameters) is
//     supported, and only as the sole and final coding: any other coding is
//     501, a coding after chunked is 400, chunked twice is 400, empty list
//     members are 400. This holds for responses too (no close-delimited
//     fallback for unknown codings: the upstream is ours and never sends them).
//   - Content-Length together with Transfer-Encoding is rejected, in requests
//     and in responses. Transfer-Encoding in an HTTP/1.0 message is rejected.
//   - Host: HTTP/1.1 requests need exactly one; its value must be a DNS name,
//     IPv4 or bracketed IPv6 literal, with an optional port 1..65535 (an empty
//     value, userinfo, sub-delims or an empty port are rejected). With an
//     absolute-form target the target's authority wins (RFC 9112 3.2.2): it is
//     head().authority and the proxy regenerates Host from it; the received
//     Host must still be present (HTTP/1.1) and valid, but may differ.
//   - Request target: origin-form, absolute-form (http/https only, no
//     userinfo), authority-form only for CONNECT, "*" only for OPTIONS. The
//     path allows RFC 3986 pchar, "/" and "?" with strict %HH; the query
//     allows any visible ASCII except "#" (browsers send "|" and "{" there).
//     No fragment, no control, space or non-ASCII byte.
//   - Versions: HTTP/1.0 and HTTP/1.1. Any other well-formed HTTP/D.D is 505;
//     anything else (lowercase, missing, extra digits) is 400.
//   - Status line: a missing reason phrase with or without its SP is accepted
//     (the reason is ignored anyway); status codes must be 100..599.
//   - Field values may hold obs-text (bytes >= 0x80); other controls are
//     rejected. A line starting with SP/HTAB after the start line is obs-fold.
//   - Expect: "100-continue" (HTTP/1.1 only) is recognised; any other
//     expectation is answered 417. Upgrade is honoured only in HTTP/1.1 with
//     "upgrade" in Connection.
//   - Connection may not nominate Host, Content-Length or Transfer-Encoding
//     for removal: is_hop_by_hop() ignores such nominations, as the framing
//     and routing of the message are governed by their own rules.
//   - Chunked bodies: chunk-size is 1*16HEXDIG with a value below 2^63, no
//     sign, prefix or surrounding whitespace; extensions follow the RFC 9112
//     7.1.1 grammar (BWS only before ";" and around "="), bounded in bytes;
//     data must be followed by CRLF; trailer fields are validated like header
//     fields, bounded, and may not be Content-Length, Transfer-Encoding or
//     Host.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string_view>
#include <vector>

#include "parse_status.h"

namespace edgepin::http1 {

// ---------------------------------------------------------------------------
// Errors. One code per kind of malformation, each with the status a proxy
// answers a client with. Response-side failures (the ones only a status line
// can produce, and any error met while parsing an upstream response) are
// answered 502 by the proxy whatever http_status() says for a request.
// X(name, http_status, log name)
#define EDGEPIN_HTTP1_ERRORS(X)                                                      \
  X(None, 0, "none")                                                                 \
  /* head: bytes and limits */                                                       \
  X(NulByte, 400, "nul_byte")                                                        \
  X(BareCr, 400, "bare_cr")                                                          \
  X(BareLf, 400, "bare_lf")                                                          \
  X(RequestLineTooLong, 414, "request_line_too_long")                                \
  X(HeadTooLarge, 431, "head_too_large")                                             \
  X(TooManyFields, 431, "too_many_fields")                                           \
  X(ResponseHeadTooLarge, 502, "response_head_too_large")                            \
  X(ResponseTooManyFields, 502, "response_too_many_fields")                          \
  /* request line */                                                                 \
  X(InvalidMethod, 400, "invalid_method")                                            \
  X(InvalidRequestLine, 400, "invalid_request_line")                                 \
  X(InvalidTarget, 400, "invalid_target")                                            \
  X(InvalidVersion, 400, "invalid_version")                                          \
  X(UnsupportedVersion, 505, "unsupported_version")                                  \
  /* status line */                                                                  \
  X(InvalidStatusLine, 502, "invalid_status_line")                                   \
  X(InvalidStatusCode, 502, "invalid_status_code")                                   \
  X(InvalidReasonPhrase, 502, "invalid_reason_phrase")                               \
  /* field lines (headers and trailers) */                                           \
  X(ObsFold, 400, "obs_fold")                                                        \
  X(InvalidFieldName, 400, "invalid_field_name")                                     \
  X(WhitespaceBeforeColon, 400, "whitespace_before_colon")                           \
  X(MissingColon, 400, "missing_colon")                                              \
  X(InvalidFieldValue, 400, "invalid_field_value")                                   \
  /* framing fields */                                                               \
  X(InvalidContentLength, 400, "invalid_content_length")                             \
  X(ContentLengthOverflow, 400, "content_length_overflow")                           \
  X(ConflictingContentLength, 400, "conflicting_content_length")                     \
  X(ContentLengthWithTransferEncoding, 400, "content_length_with_transfer_encoding") \
  X(TransferEncodingInHttp10, 400, "transfer_encoding_in_http10")                    \
  X(InvalidTransferEncoding, 400, "invalid_transfer_encoding")                       \
  X(ChunkedNotLast, 400, "chunked_not_last")                                         \
  X(ChunkedRepeated, 400, "chunked_repeated")                                        \
  X(UnsupportedTransferCoding, 501, "unsupported_transfer_coding")                   \
  /* other request semantics */                                                      \
  X(MissingHost, 400, "missing_host")                                                \
  X(MultipleHost, 400, "multiple_host")                                              \
  X(InvalidHost, 400, "invalid_host")                                                \
  X(InvalidConnection, 400, "invalid_connection")                                    \
  X(UnsupportedExpectation, 417, "unsupported_expectation")                          \
  /* bodies */                                                                       \
  X(BodyTooLarge, 413, "body_too_large")                                             \
  X(BodyTruncated, 400, "body_truncated")                                            \
  X(InvalidChunkSize, 400, "invalid_chunk_size")                                     \
  X(ChunkSizeTooLong, 400, "chunk_size_too_long")                                    \
  X(ChunkSizeOverflow, 400, "chunk_size_overflow")                                   \
  X(InvalidChunkExtension, 400, "invalid_chunk_extension")                           \
  X(ChunkExtensionTooLong, 400, "chunk_extension_too_long")                          \
  X(MissingChunkDataCrlf, 400, "missing_chunk_data_crlf")                            \
  X(TrailerTooLarge, 431, "trailer_too_large")                                       \
  X(TooManyTrailerFields, 431, "too_many_trailer_fields")                            \
  X(ForbiddenTrailerField, 400, "forbidden_trailer_field")                           \
  /* caller broke the contract (passed a buffer shorter than before) */              \
  X(BufferRewound, 500, "buffer_rewound")

enum class Error : uint8_t {
#define EDGEPIN_HTTP1_ENUM(name, status, text) name,
  EDGEPIN_HTTP1_ERRORS(EDGEPIN_HTTP1_ENUM)
#undef EDGEPIN_HTTP1_ENUM
};

// Number of Error values; handy for per-error counters (array index).
inline constexpr size_t kErrorCount = 0
#define EDGEPIN_HTTP1_COUNT(name, status, text) +1
    EDGEPIN_HTTP1_ERRORS(EDGEPIN_HTTP1_COUNT)
#undef EDGEPIN_HTTP1_COUNT
    ;

// Stable snake_case name for logs, counters and the smuggling corpus.
const char* to_string(Error e) noexcept;
// The status to answer a client whose request failed with `e`; 0 for None.
int http_status(Error e) noexcept;
// Parses a to_string() name back; false when unknown.
bool error_from_string(std::string_view name, Error& out) noexcept;

// ---------------------------------------------------------------------------
// Limits. Defaults are the node-proxy's defaults; config overrides them.
inline constexpr size_t kDefaultMaxHeadBytes = 16 * 1024;
inline constexpr size_t kDefaultMaxFields = 100;
inline constexpr size_t kDefaultMaxRequestLine = 8 * 1024;
inline constexpr size_t kDefaultMaxChunkExtensionBytes = 1024;
inline constexpr size_t kDefaultMaxTrailerBytes = 16 * 1024;
inline constexpr size_t kDefaultMaxTrailerFields = 100;
inline constexpr uint64_t kUnlimitedBody = std::numeric_limits<uint64_t>::max();
// RFC 9112 7.1: a chunk size is bounded to protect against overflow; 16 hex
// digits is the most a 64-bit value can need (leading zeros included).
inline constexpr size_t kMaxChunkSizeDigits = 16;
// Content-Length and chunk sizes are kept below 2^63 so they fit off_t and
// int64 counters downstream.
inline constexpr uint64_t kMaxBodyLength =
    static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

struct Limits {
  // Start line + field lines + the final CRLF (and any skipped leading
  // CRLFs). A request over it is 431, a response head_too_large (502).
  size_t max_head_bytes = kDefaultMaxHeadBytes;
  // Field lines in one head; one more is 431 (request) / 502 (response).
  size_t max_fields = kDefaultMaxFields;
  // Request line including its CRLF; longer is 414.
  size_t max_request_line = kDefaultMaxRequestLine;
  // Bytes of chunk extensions on one chunk-size line (from the first ";").
  size_t max_chunk_extension_bytes = kDefaultMaxChunkExtensionBytes;
  // Trailer section including its final CRLF, and its field count.
  size_t max_trailer_bytes = kDefaultMaxTrailerBytes;
  size_t max_trailer_fields = kDefaultMaxTrailerFields;
  // Decoded body bytes a BodyDecoder accepts; more is body_too_large (413).
  uint64_t max_body_bytes = kUnlimitedBody;
};

// ---------------------------------------------------------------------------
// Heads.
enum class Version : uint8_t { Http10, Http11 };
const char* to_string(Version v) noexcept;  // "HTTP/1.0" / "HTTP/1.1"

enum class TargetForm : uint8_t { Origin, Absolute, Authority, Asterisk };
const char* to_string(TargetForm f) noexcept;

// One field line: name as received (case preserved), value without leading
// and trailing OWS. Both view the buffer given to the parse() call that
// returned Done.
struct Field {
  std::string_view name;
  std::string_view value;
};

// ASCII case-insensitive equality, for field names and tokens.
bool iequals(std::string_view a, std::string_view b) noexcept;

// Read-only view of a head's fields in received order, with the lookups a
// proxy needs. Iterate it with range-for to rebuild the head.
class FieldList {
 public:
  FieldList() = default;
  explicit FieldList(std::span<const Field> fields) : fields_(fields) {}
  const Field* begin() const noexcept { return fields_.data(); }
  const Field* end() const noexcept { return fields_.data() + fields_.size(); }
  size_t size() const noexcept { return fields_.size(); }
  bool empty() const noexcept { return fields_.empty(); }
  const Field& operator[](size_t i) const noexcept { return fields_[i]; }
  // First field named `name` (case-insensitive), or nullptr.
  const Field* find(std::string_view name) const noexcept;
  // Number of fields named `name`.
  size_t count(std::string_view name) const noexcept;
  // True when some field named `name` holds `token` as a comma-separated
  // list member (case-insensitive, OWS trimmed), e.g. has_token("Connection",
  // "close").
  bool has_token(std::string_view name, std::string_view token) const noexcept;

 private:
  std::span<const Field> fields_;
};

// How a message body is delimited (RFC 9112 section 6.3).
struct BodyFraming {
  enum class Kind : uint8_t { None, ContentLength, Chunked, UntilClose };
  Kind kind = Kind::None;
  uint64_t length = 0;  // ContentLength only

  static constexpr BodyFraming none() { return {Kind::None, 0}; }
  static constexpr BodyFraming content_length(uint64_t n) { return {Kind::ContentLength, n}; }
  static constexpr BodyFraming chunked() { return {Kind::Chunked, 0}; }
  static constexpr BodyFraming until_close() { return {Kind::UntilClose, 0}; }
  friend constexpr bool operator==(const BodyFraming&, const BodyFraming&) = default;
};
const char* to_string(BodyFraming::Kind k) noexcept;

// Connection options found in the Connection field(s).
struct ConnectionOptions {
  bool close = false;
  bool keep_alive = false;
  bool upgrade = false;
};

struct RequestHead {
  std::string_view method;  // case-sensitive token, e.g. "GET"
  std::string_view target;  // as received
  TargetForm form = TargetForm::Origin;
  Version version = Version::Http11;
  // The authority the request is for: the target's for absolute-form and
  // authority-form, else the Host value; empty for HTTP/1.0 without Host.
  std::string_view authority;
  // What to send upstream as an origin-form target: the path and query.
  // For absolute-form it is the part after the authority and may be empty
  // or start with "?": the proxy then prepends "/". "*" for asterisk-form,
  // empty for authority-form.
  std::string_view path;
  FieldList fields;
  BodyFraming framing;  // None, ContentLength or Chunked
  ConnectionOptions connection;
  bool expect_continue = false;        // HTTP/1.1 "Expect: 100-continue"
  bool upgrade = false;                // HTTP/1.1, Upgrade + "Connection: upgrade"
  bool upgrade_websocket = false;      // upgrade, and "websocket" is offered
  std::string_view upgrade_protocols;  // the first Upgrade field's value
};

struct ResponseHead {
  Version version = Version::Http11;
  uint16_t status = 0;
  std::string_view reason;  // may be empty
  FieldList fields;
  ConnectionOptions connection;
  bool has_content_length = false;
  uint64_t content_length = 0;
  bool chunked = false;                // Transfer-Encoding: chunked
  std::string_view upgrade_protocols;  // the first Upgrade field's value
};

// Outcome of a head parse.
struct HeadResult {
  ParseStatus status = ParseStatus::NeedMore;
  size_t consumed = 0;  // Done: head bytes, including the final CRLF
  Error error = Error::None;
  size_t error_offset = 0;  // Error: offset of the first offending byte
};

// Shared machinery of the two head parsers (line splitting, limits, field
// validation, framing fields). Use RequestParser / ResponseParser.
class HeadParserBase {
 public:
  // Discards all state so the next parse() starts a new head.
  void reset() noexcept;

 protected:
  enum class Mode : uint8_t { Request, Response };
  HeadParserBase(Mode mode, const Limits& limits);

  HeadResult parse_lines(std::span<const uint8_t> buf);
  HeadResult fail(Error e, size_t offset) noexcept;

  struct Span {  // offsets into the buffer; views are rebuilt at Done
    uint32_t off = 0;
    uint32_t len = 0;
    static Span make(size_t begin, size_t end) noexcept;
    std::string_view view(std::span<const uint8_t> buf) const noexcept;
  };
  struct FieldRef {
    Span name;
    Span value;
  };

  // Hooks implemented by the request / response parser.
  virtual Error parse_start_line(std::span<const uint8_t> buf, size_t begin, size_t end,
                                 size_t& error_offset) = 0;
  virtual Error on_field(std::span<const uint8_t> buf, const FieldRef& f, size_t line_begin,
                         size_t& error_offset) = 0;
  virtual Error on_head_end(std::span<const uint8_t> buf, size_t end, size_t& error_offset) = 0;
  virtual void materialize(std::span<const uint8_t> buf) = 0;
  virtual void reset_message() noexcept = 0;
  virtual ~HeadParserBase() = default;

  // Framing fields common to both directions.
  Error on_framing_field(std::span<const uint8_t> buf, const FieldRef& f, size_t line_begin,
                         size_t& error_offset);
  Error check_framing_at_end(Version v, size_t& error_offset) const;
  void materialize_fields(std::span<const uint8_t> buf);

  Mode mode_;
  Limits limits_;
  // Parse position: start of the first line not yet parsed, and how far the
  // current line has been searched for its LF without finding it.
  size_t pos_ = 0;
  size_t scanned_ = 0;
  size_t high_water_ = 0;  // largest buffer size seen (rewind detection)
  bool start_line_done_ = false;
  size_t start_line_begin_ = 0;
  ParseStatus status_ = ParseStatus::NeedMore;
  HeadResult result_;

  std::vector<FieldRef> refs_;
  std::vector<Field> fields_;

  // Framing state accumulated over the field lines.
  bool has_content_length_ = false;
  uint64_t content_length_ = 0;
  size_t content_length_line_ = 0;
  bool has_transfer_encoding_ = false;
  bool chunked_ = false;
  size_t transfer_encoding_line_ = 0;
  ConnectionOptions connection_;
  bool has_upgrade_ = false;
  Span upgrade_;
};

// Parses a request head incrementally.
class RequestParser final : public HeadParserBase {
 public:
  explicit RequestParser(const Limits& limits = {});

  // `buf` holds every byte received since the head began (the same bytes
  // as the previous call, possibly more; it may have moved in memory).
  // Work per call is proportional to the new bytes plus completed lines.
  // Returns:
  //   NeedMore: no complete head yet and no error so far;
  //   Done: consumed = head length (bytes after it belong to the body or to
  //         the next request); head() is valid until reset() or the next
  //         parse(), and views `buf`;
  //   Error: error and error_offset (into buf); http_status(error) is the
  //         answer (400, 414, 417, 431, 501, 505). Results are sticky: the
  //         same call with more bytes returns the same Done or Error.
  HeadResult parse(std::span<const uint8_t> buf);
  const RequestHead& head() const noexcept { return head_; }

 private:
  Error parse_start_line(std::span<const uint8_t> buf, size_t begin, size_t end,
                         size_t& error_offset) override;
  Error on_field(std::span<const uint8_t> buf, const FieldRef& f, size_t line_begin,
                 size_t& error_offset) override;
  Error on_head_end(std::span<const uint8_t> buf, size_t end, size_t& error_offset) override;
  void materialize(std::span<const uint8_t> buf) override;
  void reset_message() noexcept override;

  Span method_, target_, path_, target_authority_, host_;
  TargetForm form_ = TargetForm::Origin;
  Version version_ = Version::Http11;
  size_t host_count_ = 0;
  bool expect_continue_ = false;
  bool upgrade_websocket_ = false;
  RequestHead head_;
};

// Parses a response head incrementally; same contract as RequestParser.
// Errors are answered 502 by the proxy (see Error).
class ResponseParser final : public HeadParserBase {
 public:
  explicit ResponseParser(const Limits& limits = {});
  HeadResult parse(std::span<const uint8_t> buf);
  const ResponseHead& head() const noexcept { return head_; }

 private:
  Error parse_start_line(std::span<const uint8_t> buf, size_t begin, size_t end,
                         size_t& error_offset) override;
  Error on_field(std::span<const uint8_t> buf, const FieldRef& f, size_t line_begin,
                 size_t& error_offset) override;
  Error on_head_end(std::span<const uint8_t> buf, size_t end, size_t& error_offset) override;
  void materialize(std::span<const uint8_t> buf) override;
  void reset_message() noexcept override;

  Version version_ = Version::Http11;
  uint16_t status_code_ = 0;
  Span reason_;
  ResponseHead head_;
};

// ---------------------------------------------------------------------------
// Framing and connection semantics.

// Framing of a response to a request with method `request_method`
// (RFC 9112 6.3): None for HEAD, for 1xx, 204 and 304, and for a 2xx answer
// to CONNECT (the connection becomes a tunnel); else Chunked, ContentLength,
// or UntilClose when neither is present.
BodyFraming response_framing(const ResponseHead& head, std::string_view request_method) noexcept;

// BodyTooLarge when the framing announces more than max_body_bytes (answer
// 413 before reading the body); None otherwise. Chunked and UntilClose
// bodies are checked by BodyDecoder as they arrive.
Error check_body_size(const BodyFraming& framing, uint64_t max_body_bytes) noexcept;

// Whether the client connection may carry another request after this one:
// HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with
// "Connection: keep-alive" (and no close).
bool request_keep_alive(const RequestHead& head) noexcept;
// Whether the upstream connection may be reused after this response: the
// same version rule, and never for a close-delimited body.
bool response_keep_alive(const ResponseHead& head, const BodyFraming& framing) noexcept;
// True for "101 Switching Protocols" with Upgrade and "Connection: upgrade":
// after its head both directions become an opaque tunnel.
bool is_upgrade_accepted(const ResponseHead& head) noexcept;

struct HopByHopOptions {
  // Keep Upgrade (and the "upgrade" Connection option is the proxy's to
  // write) when forwarding an upgrade request the proxy will tunnel.
  bool keep_upgrade = false;
  // The proxy writes its own framing: also drop Content-Length and
  // Transfer-Encoding. Leave false only when forwarding the body bytes
  // exactly as received with the received framing fields.
  bool reframe = true;
};

// True when the field `name` must not be forwarded: Connection, Keep-Alive,
// Proxy-Connection, TE, Trailer, Upgrade (unless keep_upgrade),
// Content-Length and Transfer-Encoding (when reframe), and any field
// nominated in a Connection field of `fields` (except Host, Content-Length
// and Transfer-Encoding, see the policy notes at the top).
bool is_hop_by_hop(std::string_view name, const FieldList& fields,
                   const HopByHopOptions& options = {}) noexcept;
// True for Content-Length and Transfer-Encoding.
bool is_framing_field(std::string_view name) noexcept;

// ---------------------------------------------------------------------------
// Body decoders. All share one contract:
//
//   BodyResult decode(std::span<const uint8_t> input, size_t max_data);
//
// `input` is the next unconsumed bytes of the stream (any segmentation).
// The decoder consumes framing bytes into its own small state, so it never
// needs bytes it already consumed. It returns at most one span of body data,
// a sub-span of `input` of at most `max_data` bytes (the room the
// destination has: pass 0 to stop the flow of data while still letting
// framing be checked). `consumed` counts every input byte used (framing and
// data); the caller drops them and calls again with the rest plus new bytes.
//   NeedMore: the body is not finished; if consumed < input.size() call
//             again (data was returned or max_data was reached).
//   Done:     the body ended; bytes after `consumed` are the next message.
//   Error:    `error` names the problem; error_offset is the offset within
//             the whole body stream of the first offending byte. `data` may
//             still hold body bytes that came before the offending byte in
//             this call (they would have been delivered by an earlier call
//             had the stream been split there). Sticky.
struct BodyResult {
  ParseStatus status = ParseStatus::NeedMore;
  size_t consumed = 0;
  std::span<const uint8_t> data;
  Error error = Error::None;
  uint64_t error_offset = 0;
};

inline constexpr size_t kNoDataLimit = std::numeric_limits<size_t>::max();

// Content-Length bodies: a counter.
class ContentLengthDecoder {
 public:
  // A length above limits.max_body_bytes fails with body_too_large on the
  // first decode() (check_body_size() lets the proxy answer before that).
  ContentLengthDecoder(uint64_t length, const Limits& limits = {});
  BodyResult decode(std::span<const uint8_t> input, size_t max_data = kNoDataLimit);
  // At end of stream: Done when the body is complete, else body_truncated.
  BodyResult finish();
  uint64_t body_bytes() const noexcept { return delivered_; }
  uint64_t remaining() const noexcept { return length_ - delivered_; }

 private:
  uint64_t length_;
  uint64_t delivered_ = 0;
  bool too_large_ = false;
};

// Chunked bodies (RFC 9112 section 7.1), byte-level state machine.
class ChunkedDecoder {
 public:
  explicit ChunkedDecoder(const Limits& limits = {});
  BodyResult decode(std::span<const uint8_t> input, size_t max_data = kNoDataLimit);
  // At end of stream: Done when the last chunk and trailers were read, else
  // body_truncated.
  BodyResult finish();
  uint64_t body_bytes() const noexcept { return body_bytes_; }
  size_t trailer_fields() const noexcept { return trailer_fields_; }
  void reset() noexcept;

 private:
  enum class State : uint8_t;
  BodyResult fail(Error e, size_t consumed_in_call);

  Limits limits_;
  State state_;
  uint64_t stream_offset_ = 0;  // bytes consumed before this call
  uint64_t body_bytes_ = 0;
  uint64_t chunk_size_ = 0;
  uint64_t chunk_remaining_ = 0;
  size_t size_digits_ = 0;
  size_t extension_bytes_ = 0;
  size_t trailer_bytes_ = 0;
  size_t trailer_fields_ = 0;
  // Lower-cased prefix of the current trailer field name, enough to spot
  // the forbidden names.
  char trailer_name_[24] = {};
  size_t trailer_name_len_ = 0;
  Error error_ = Error::None;
  uint64_t error_offset_ = 0;
};

// Any framing behind one object, so the proxy streams every body alike.
// None is Done at once (consuming nothing); UntilClose passes everything
// as data until finish(), which is Done.
class BodyDecoder {
 public:
  BodyDecoder(const BodyFraming& framing, const Limits& limits = {});
  BodyResult decode(std::span<const uint8_t> input, size_t max_data = kNoDataLimit);
  BodyResult finish();
  uint64_t body_bytes() const noexcept;
  const BodyFraming& framing() const noexcept { return framing_; }

 private:
  BodyFraming framing_;
  Limits limits_;
  ContentLengthDecoder length_;
  ChunkedDecoder chunked_;
  uint64_t until_close_bytes_ = 0;
  bool until_close_done_ = false;
  bool until_close_failed_ = false;
};

}  // namespace edgepin::http1
