#pragma once
// Incremental parsers for the cleartext start of a TLS connection, as seen by
// a box in the middle that holds no keys (edgepin-lb):
//   - ClientHelloParser reads the client→server bytes up to the end of the
//     ClientHello;
//   - ServerFlightParser reads the server→client bytes: the ServerHello and,
//     for TLS 1.2 and older, the rest of the cleartext handshake up to the
//     server's ChangeCipherSpec (including a NewSessionTicket).
//
// Both are pure (no sockets, no libevent) and bounded: the caller feeds
// whatever bytes arrived, in any segmentation, and gets NeedMore, Done or
// Error. They reassemble handshake messages split over several TLS records
// and records split over several feeds. Only the messages they decode are
// buffered, and never more than kMaxHelloBytes of them; the number of stream
// bytes they read before giving up is capped too (kMaxHelloBytes for the
// client side, kMaxServerFlightBytes for the server side).
//
// Every malformation has its own HelloError code, and error_offset() gives
// the stream offset of the first byte found wrong, for the log line.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "parse_status.h"

namespace edgepin::tls {

// ---------------------------------------------------------------- wire constants

inline constexpr size_t kRecordHeaderBytes = 5;     // type(1) version(2) length(2)
inline constexpr size_t kHandshakeHeaderBytes = 4;  // type(1) length(3)
// RFC 5246 6.2.1 and RFC 8446 5.1: a plaintext record carries at most 2^14 bytes.
inline constexpr size_t kMaxPlaintextRecordBytes = 16384;
inline constexpr size_t kRandomBytes = 32;
inline constexpr size_t kMaxSessionIdBytes = 32;
// RFC 6066 3: a HostName is 1..255 bytes (DNS limit).
inline constexpr size_t kMaxHostNameBytes = 255;
// RFC 8446 4.2.11: each PSK binder is an HMAC output of 32..255 bytes.
inline constexpr size_t kMinPskBinderBytes = 32;

// The most stream bytes a ClientHelloParser reads, and the most handshake
// bytes either parser buffers for one message, before giving up. Real
// ClientHellos are under 2 KiB (a post-quantum key share brings them near
// 1.5 KiB more); Envoy's tls_inspector uses the same 64 KiB ceiling.
inline constexpr size_t kMaxHelloBytes = 64 * 1024;
// The most server→client stream bytes a ServerFlightParser reads. A TLS 1.2
// flight carries the certificate chain in cleartext; OpenSSL clients refuse
// chains above 100 KiB by default (SSL_CTX_set_max_cert_list), so 256 KiB
// leaves room for the rest of the flight while bounding the work.
inline constexpr size_t kMaxServerFlightBytes = 256 * 1024;

namespace content_type {
inline constexpr uint8_t kChangeCipherSpec = 20;
inline constexpr uint8_t kAlert = 21;
inline constexpr uint8_t kHandshake = 22;
inline constexpr uint8_t kApplicationData = 23;
}  // namespace content_type

namespace handshake_type {
inline constexpr uint8_t kClientHello = 1;
inline constexpr uint8_t kServerHello = 2;
inline constexpr uint8_t kNewSessionTicket = 4;
inline constexpr uint8_t kCertificate = 11;
inline constexpr uint8_t kServerKeyExchange = 12;
inline constexpr uint8_t kCertificateRequest = 13;
inline constexpr uint8_t kServerHelloDone = 14;
inline constexpr uint8_t kCertificateStatus = 22;
}  // namespace handshake_type

namespace extension_type {
inline constexpr uint16_t kServerName = 0;
inline constexpr uint16_t kSupportedGroups = 10;
inline constexpr uint16_t kAlpn = 16;
inline constexpr uint16_t kSessionTicket = 35;
inline constexpr uint16_t kPreSharedKey = 41;
inline constexpr uint16_t kEarlyData = 42;
inline constexpr uint16_t kSupportedVersions = 43;
inline constexpr uint16_t kPskKeyExchangeModes = 45;
inline constexpr uint16_t kKeyShare = 51;
}  // namespace extension_type

namespace version {
inline constexpr uint16_t kSsl30 = 0x0300;
inline constexpr uint16_t kTls10 = 0x0301;
inline constexpr uint16_t kTls11 = 0x0302;
inline constexpr uint16_t kTls12 = 0x0303;
inline constexpr uint16_t kTls13 = 0x0304;
}  // namespace version

// RFC 8446 4.1.3: a HelloRetryRequest is a ServerHello whose random is
// SHA-256("HelloRetryRequest").
inline constexpr std::array<uint8_t, kRandomBytes> kHelloRetryRequestRandom = {
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C};

// RFC 8701: GREASE values (0x0A0A, 0x1A1A, ... 0xFAFA) that clients insert
// to keep servers tolerant; they never name a real version or extension.
constexpr bool is_grease(uint16_t v) { return (v & 0x0F0F) == 0x0A0A && (v >> 8) == (v & 0xFF); }

// ---------------------------------------------------------------- errors

// One code per kind of malformation, shared by both parsers (they are one
// codec: the two halves of the cleartext TLS handshake).
#define EDGEPIN_TLS_HELLO_ERRORS(X)                                                     \
  X(None, "none")                                                                       \
  X(NotHandshakeRecord, "not_handshake_record") /* stream does not start with TLS */    \
  X(SslV2Hello, "sslv2_hello")                  /* SSL 2.0 format ClientHello */        \
  X(BadRecordVersion, "bad_record_version")     /* record version not 3.x (x<=4) */     \
  X(EmptyRecord, "empty_record")                /* zero-length handshake/alert/CCS */   \
  X(RecordTooLong, "record_too_long")           /* record length above 2^14 */          \
  X(UnexpectedRecord, "unexpected_record")      /* record type not allowed here */      \
  X(TooLarge, "too_large")                      /* stream budget exhausted */           \
  X(HandshakeTooLong, "handshake_too_long")     /* message cannot fit the buffer cap */ \
  X(NotClientHello, "not_client_hello")                                                 \
  X(NotServerHello, "not_server_hello")                                                 \
  X(UnexpectedMessage, "unexpected_message") /* handshake type out of order */          \
  X(TrailingBytes, "trailing_bytes")         /* bytes after a hello in its record */    \
  X(TruncatedBody, "truncated_body")         /* message ends inside a fixed field */    \
  X(BadLegacyVersion, "bad_legacy_version")                                             \
  X(BadSessionIdLength, "bad_session_id_length")                                        \
  X(BadCipherSuitesLength, "bad_cipher_suites_length")                                  \
  X(BadCompressionLength, "bad_compression_length")                                     \
  X(BadExtensionsLength, "bad_extensions_length") /* block does not fill the message */ \
  X(ExtensionOverrun, "extension_overrun")        /* extension past the block end */    \
  X(DuplicateExtension, "duplicate_extension")                                          \
  X(BadSni, "bad_sni")                                                                  \
  X(BadAlpn, "bad_alpn")                                                                \
  X(BadSupportedVersions, "bad_supported_versions")                                     \
  X(BadSessionTicket, "bad_session_ticket") /* non-empty ack in a ServerHello */        \
  X(BadPskIdentities, "bad_psk_identities")                                             \
  X(BadPskBinders, "bad_psk_binders")                                                   \
  X(PskNotLast, "psk_not_last") /* pre_shared_key must be last */                       \
  X(BadPskModes, "bad_psk_modes")                                                       \
  X(BadEarlyData, "bad_early_data")                                                     \
  X(BadNewSessionTicket, "bad_new_session_ticket")                                      \
  X(BadChangeCipherSpec, "bad_change_cipher_spec")                                      \
  X(BadAlert, "bad_alert") /* malformed alert record */                                 \
  X(Alert, "alert")        /* the server sent an alert */

enum class HelloError : uint8_t {
#define EDGEPIN_TLS_HELLO_ENUM(name, str) name,
  EDGEPIN_TLS_HELLO_ERRORS(EDGEPIN_TLS_HELLO_ENUM)
#undef EDGEPIN_TLS_HELLO_ENUM
};

// The short snake_case name of an error, for logs and counters.
constexpr std::string_view to_string(HelloError e) {
  switch (e) {
#define EDGEPIN_TLS_HELLO_CASE(name, str) \
  case HelloError::name:                  \
    return str;
    EDGEPIN_TLS_HELLO_ERRORS(EDGEPIN_TLS_HELLO_CASE)
#undef EDGEPIN_TLS_HELLO_CASE
  }
  return "?";
}

// Number of HelloError values (for per-outcome counter arrays).
inline constexpr size_t kHelloErrorCount = 0
#define EDGEPIN_TLS_HELLO_COUNT(name, str) +1
    EDGEPIN_TLS_HELLO_ERRORS(EDGEPIN_TLS_HELLO_COUNT)
#undef EDGEPIN_TLS_HELLO_COUNT
    ;

// ---------------------------------------------------------------- results

// An extension as found on the wire: its data is message[offset, offset+length).
struct Extension {
  uint16_t type = 0;
  uint32_t offset = 0;
  uint16_t length = 0;
  bool operator==(const Extension&) const = default;
};

// RFC 8446 4.2.11: a PskIdentity is a ticket (as the server issued it) and
// the obfuscated ticket age.
struct PskIdentity {
  std::vector<uint8_t> identity;
  uint32_t obfuscated_ticket_age = 0;
  bool operator==(const PskIdentity&) const = default;
};

struct ClientHello {
  // The whole handshake message (4-byte header and body) after reassembly.
  std::vector<uint8_t> message;
  uint16_t record_version = 0;  // of the record the message started in
  uint16_t legacy_version = 0;
  std::array<uint8_t, kRandomBytes> random{};
  std::vector<uint8_t> session_id;  // 0..32 bytes
  std::vector<uint16_t> cipher_suites;
  std::vector<uint8_t> compression_methods;
  // False for a pre-TLS-1.0 style hello that ends after compression_methods.
  bool has_extensions_block = false;
  std::vector<Extension> extensions;  // in wire order

  // Decoded extensions.
  std::optional<std::string> server_name;  // SNI host_name (1..255 bytes, no NUL)
  std::vector<std::string> alpn_protocols;
  std::vector<uint16_t> supported_versions;  // as sent, GREASE included
  bool has_session_ticket = false;           // RFC 5077 extension present
  std::vector<uint8_t> session_ticket;       // its bytes; empty asks for a new ticket
  std::vector<PskIdentity> psk_identities;   // non-empty iff pre_shared_key present
  std::vector<uint8_t> psk_key_exchange_modes;
  bool early_data = false;

  bool operator==(const ClientHello&) const = default;

  // The first extension of that type, or nullptr.
  const Extension* find_extension(uint16_t type) const;
  // The data bytes of an extension of this hello.
  std::span<const uint8_t> extension_data(const Extension& e) const;
  // The highest version offered: the largest non-GREASE supported_versions
  // entry if that extension is present, else legacy_version.
  uint16_t max_version() const;
  bool offers_tls13() const;
};

struct ServerHello {
  std::vector<uint8_t> message;  // whole handshake message
  uint16_t record_version = 0;
  uint16_t legacy_version = 0;
  std::array<uint8_t, kRandomBytes> random{};
  std::vector<uint8_t> session_id;
  uint16_t cipher_suite = 0;
  uint8_t compression_method = 0;
  bool has_extensions_block = false;
  std::vector<Extension> extensions;

  // supported_versions' value if present (TLS 1.3), else legacy_version.
  uint16_t selected_version = 0;
  bool has_supported_versions = false;
  bool is_hello_retry_request = false;  // random == kHelloRetryRequestRandom
  bool session_ticket_acked = false;    // empty session_ticket extension (TLS <= 1.2)
  std::optional<std::string> alpn_protocol;
  std::optional<uint16_t> selected_psk_identity;  // TLS 1.3 pre_shared_key

  bool operator==(const ServerHello&) const = default;
  const Extension* find_extension(uint16_t type) const;
  std::span<const uint8_t> extension_data(const Extension& e) const;
};

// RFC 5077 3.3: the TLS 1.2 NewSessionTicket, sent in cleartext.
struct NewSessionTicket {
  uint32_t lifetime_hint = 0;
  std::vector<uint8_t> ticket;  // may be empty: the server declines to issue one
  bool operator==(const NewSessionTicket&) const = default;
};

struct AlertRecord {
  uint8_t level = 0;  // 1 warning, 2 fatal
  uint8_t description = 0;
  bool operator==(const AlertRecord&) const = default;
};

// ---------------------------------------------------------------- engine

namespace detail {

// What the record layer does with a handshake message whose header it read.
enum class MessageAction : uint8_t { Buffer, Skip };

// What a parser answers when a whole message (or a CCS/alert) has arrived.
// For on_message, offset is relative to the message's first byte; for the
// others it is ignored and the record's start is reported.
struct Verdict {
  ParseStatus status = ParseStatus::NeedMore;  // NeedMore means "go on"
  HelloError error = HelloError::None;
  uint32_t offset = 0;
};

// The per-direction rules the record layer asks about. Implemented privately
// by the two parsers below.
class RecordSink {
 public:
  // Content type at byte 0 of a record. None accepts the record.
  virtual HelloError on_content_type(uint8_t type, bool first_record) = 0;
  // First byte of a handshake message. None accepts it.
  virtual HelloError on_message_type(uint8_t type) = 0;
  // Complete 4-byte handshake header: choose to buffer or skip the body.
  virtual HelloError on_message_length(uint8_t type, uint32_t length, MessageAction& action) = 0;
  // A complete message (its bytes if buffered, else empty). record_left is
  // how many bytes of the current record follow the message.
  virtual Verdict on_message(uint8_t type, std::vector<uint8_t>& message, uint16_t record_version,
                             size_t record_left) = 0;
  virtual Verdict on_change_cipher_spec() = 0;
  virtual Verdict on_alert(uint8_t level, uint8_t description) = 0;

 protected:
  ~RecordSink() = default;
};

// The TLS record layer and handshake message framing shared by both parsers.
class RecordStream {
 public:
  RecordStream(size_t budget, bool detect_sslv2) : budget_(budget), detect_sslv2_(detect_sslv2) {}

  ParseStatus feed(std::span<const uint8_t> in, RecordSink& sink);

  ParseStatus status() const { return status_; }
  HelloError error() const { return error_; }
  uint64_t error_offset() const { return error_offset_; }
  uint64_t consumed() const { return pos_; }

 private:
  void fail(HelloError e, uint64_t offset);
  void header_byte(uint8_t b, RecordSink& sink);
  size_t handshake_bytes(std::span<const uint8_t> in, RecordSink& sink);
  void small_record_byte(uint8_t b, RecordSink& sink);
  void apply(const Verdict& v, uint64_t offset);
  uint64_t message_to_stream(uint32_t message_offset) const;

  size_t budget_;
  bool detect_sslv2_;
  ParseStatus status_ = ParseStatus::NeedMore;
  HelloError error_ = HelloError::None;
  uint64_t error_offset_ = 0;
  uint64_t pos_ = 0;  // stream bytes consumed

  // Record layer.
  bool first_record_ = true;
  bool sslv2_candidate_ = false;
  std::array<uint8_t, kRecordHeaderBytes> rec_hdr_{};
  size_t rec_hdr_have_ = 0;
  size_t rec_left_ = 0;  // payload bytes of the current record not yet read
  uint64_t rec_start_ = 0;
  uint16_t rec_version_ = 0;
  std::array<uint8_t, 2> small_{};  // CCS and alert payloads
  size_t small_have_ = 0;

  // Handshake message in progress (msg_seen_ > 0).
  std::array<uint8_t, kHandshakeHeaderBytes> msg_hdr_{};
  size_t msg_seen_ = 0;  // header + body bytes read so far
  uint32_t msg_left_ = 0;
  MessageAction msg_action_ = MessageAction::Skip;
  uint16_t msg_record_version_ = 0;
  uint64_t msg_start_ = 0;  // stream offset of the message's type byte
  // Message offsets at which a new record's payload began; each one means 5
  // header bytes in the stream, needed to map error offsets back.
  std::vector<uint32_t> msg_splits_;
  std::vector<uint8_t> msg_;
};

}  // namespace detail

// ---------------------------------------------------------------- parsers

// Parses the client→server stream up to the end of the ClientHello.
class ClientHelloParser final : private detail::RecordSink {
 public:
  // Feeds the bytes that arrived since the last call (any segmentation).
  // Returns NeedMore while the ClientHello is incomplete (every prefix of a
  // valid hello answers NeedMore); Done once it is complete and valid (then
  // hello() and consumed() are set, and later calls consume nothing and
  // return Done); Error on the first malformation or when kMaxHelloBytes
  // were read without a complete hello (then error() and error_offset() are
  // set, and later calls return Error).
  ParseStatus feed(std::span<const uint8_t> newly_arrived);

  ParseStatus status() const { return stream_.status(); }
  // Valid after Done.
  const ClientHello& hello() const { return hello_; }
  // After Done: the stream bytes that made up the records carrying the
  // ClientHello (what follows belongs to later records).
  uint64_t consumed() const { return stream_.consumed(); }
  // After Error: the code, and the stream offset of the first byte found
  // wrong (for TooLarge, the first byte past the budget).
  HelloError error() const { return stream_.error(); }
  uint64_t error_offset() const { return stream_.error_offset(); }

 private:
  HelloError on_content_type(uint8_t type, bool first_record) override;
  HelloError on_message_type(uint8_t type) override;
  HelloError on_message_length(uint8_t type, uint32_t length,
                               detail::MessageAction& action) override;
  detail::Verdict on_message(uint8_t type, std::vector<uint8_t>& message, uint16_t record_version,
                             size_t record_left) override;
  detail::Verdict on_change_cipher_spec() override;
  detail::Verdict on_alert(uint8_t level, uint8_t description) override;

  detail::RecordStream stream_{kMaxHelloBytes, true};
  ClientHello hello_;
};

// Parses the server→client stream: the ServerHello, and for TLS <= 1.2 the
// rest of the cleartext handshake up to the server's ChangeCipherSpec.
// final: owned and deleted as itself (RecordSink's destructor is protected).
class ServerFlightParser final : private detail::RecordSink {
 public:
  // Feeds the bytes that arrived since the last call. Returns:
  //  - Done right after a TLS 1.3 ServerHello or a HelloRetryRequest (what
  //    follows is encrypted, or is the answer to a second ClientHello), or
  //    for TLS <= 1.2 after the server's ChangeCipherSpec record;
  //  - NeedMore until then, including between the TLS 1.2 flights (a full
  //    handshake's NewSessionTicket only comes after the client's Finished):
  //    check has_server_hello() to act on the ServerHello early;
  //  - Error on a malformation, on kMaxServerFlightBytes read without Done,
  //    or with error() == HelloError::Alert when the server sent an alert
  //    (then alert() holds it).
  // Handshake messages it does not decode (Certificate, ServerKeyExchange...)
  // are skipped without being buffered.
  ParseStatus feed(std::span<const uint8_t> newly_arrived);

  ParseStatus status() const { return stream_.status(); }
  bool has_server_hello() const { return has_server_hello_; }
  // Valid once has_server_hello().
  const ServerHello& server_hello() const { return server_hello_; }
  // The TLS 1.2 NewSessionTicket, if the server sent one before its CCS.
  const std::optional<NewSessionTicket>& new_session_ticket() const { return ticket_; }
  // The alert that ended the flight (error() == Alert).
  const std::optional<AlertRecord>& alert() const { return alert_; }
  // After Done: stream bytes up to the end of the record that completed the
  // flight (the ServerHello's, or the ChangeCipherSpec's).
  uint64_t consumed() const { return stream_.consumed(); }
  HelloError error() const { return stream_.error(); }
  uint64_t error_offset() const { return stream_.error_offset(); }

 private:
  HelloError on_content_type(uint8_t type, bool first_record) override;
  HelloError on_message_type(uint8_t type) override;
  HelloError on_message_length(uint8_t type, uint32_t length,
                               detail::MessageAction& action) override;
  detail::Verdict on_message(uint8_t type, std::vector<uint8_t>& message, uint16_t record_version,
                             size_t record_left) override;
  detail::Verdict on_change_cipher_spec() override;
  detail::Verdict on_alert(uint8_t level, uint8_t description) override;

  detail::RecordStream stream_{kMaxServerFlightBytes, false};
  bool has_server_hello_ = false;
  bool saw_server_hello_done_ = false;
  ServerHello server_hello_;
  std::optional<NewSessionTicket> ticket_;
  std::optional<AlertRecord> alert_;
};

}  // namespace edgepin::tls
