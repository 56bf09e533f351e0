#pragma once
// PROXY protocol v1 (text) and v2 (binary) codec, after HAProxy's
// doc/proxy-protocol.txt.
//
// The lb writes a v2 header (client source, original destination, SNI as the
// authority TLV) in front of every relayed connection; the node-proxy reads
// v1 or v2 from trusted senders. The decoder is pure and stateless: the
// caller passes every byte received so far, and calls again with the larger
// buffer after NeedMore. Re-parsing from the start is cheap because headers
// are capped (107 bytes for v1, kV2MaxSize for v2), and it makes the result
// independent of how TCP split the header. Checks run in wire order and each
// one fires as soon as the bytes it needs are present, so a bad signature
// byte fails at once instead of after 16 bytes, and a prefix of the input
// never reports an error that the whole input would not.
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "parse_status.h"

namespace edgepin::proxy {

// --- wire constants ---

// v1: "PROXY " then the protocol. The spec's worst case, "PROXY UNKNOWN"
// with two full IPv6 addresses and ports, is 107 bytes including CRLF; a
// receiver that has not seen CRLF within 107 bytes must reject the line.
// (Envoy and HAProxy size their buffer 108 to hold a trailing NUL.)
inline constexpr std::string_view kV1Prefix = "PROXY ";
inline constexpr size_t kV1MaxSize = 107;
// Longest IPv6 text inet_pton accepts ("ffff:...:ffff:255.255.255.255").
inline constexpr size_t kV1MaxIpv6Text = 45;
inline constexpr size_t kV1MaxIpv4Text = 15;

// v2: 12-byte signature, version/command, family/transport, 16-bit length of
// what follows (addresses then TLVs).
inline constexpr std::array<uint8_t, 12> kV2Signature{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
inline constexpr size_t kV2HeaderSize = 16;
inline constexpr size_t kV2OffsetVersionCommand = 12;
inline constexpr size_t kV2OffsetFamily = 13;
inline constexpr size_t kV2OffsetLength = 14;
inline constexpr uint8_t kV2Version = 0x2;
inline constexpr uint8_t kV2CommandLocal = 0x0;
inline constexpr uint8_t kV2CommandProxy = 0x1;
// The seven family/transport bytes the spec defines; any other is invalid.
inline constexpr uint8_t kV2FamilyUnspec = 0x00;
inline constexpr uint8_t kV2FamilyTcp4 = 0x11;
inline constexpr uint8_t kV2FamilyUdp4 = 0x12;
inline constexpr uint8_t kV2FamilyTcp6 = 0x21;
inline constexpr uint8_t kV2FamilyUdp6 = 0x22;
inline constexpr uint8_t kV2FamilyUnixStream = 0x31;
inline constexpr uint8_t kV2FamilyUnixDgram = 0x32;
inline constexpr size_t kV2AddressSizeInet = 12;   // 2 x 4 + 2 x 2
inline constexpr size_t kV2AddressSizeInet6 = 36;  // 2 x 16 + 2 x 2
inline constexpr size_t kV2AddressSizeUnix = 216;  // 2 x 108
// Cap on the address block plus TLVs. The length field allows 65535, but
// what a proxy sends in practice (addresses, SNI <= 255, unique ID <= 128,
// ALPN, an SSL TLV with a CN and cipher names) is a few hundred bytes; 4 KiB
// leaves ample room without letting a peer make us buffer 64 KiB per
// connection before the first application byte.
inline constexpr size_t kV2MaxBlockSize = 4096;
inline constexpr size_t kV2MaxSize = kV2HeaderSize + kV2MaxBlockSize;

inline constexpr size_t kTlvHeaderSize = 3;  // type, length (16-bit)
inline constexpr uint8_t kTlvAlpn = 0x01;
inline constexpr uint8_t kTlvAuthority = 0x02;
inline constexpr uint8_t kTlvCrc32c = 0x03;
inline constexpr uint8_t kTlvNoop = 0x04;
inline constexpr uint8_t kTlvUniqueId = 0x05;
inline constexpr uint8_t kTlvSsl = 0x20;
inline constexpr uint8_t kTlvSslVersion = 0x21;
inline constexpr uint8_t kTlvSslCn = 0x22;
inline constexpr uint8_t kTlvSslCipher = 0x23;
inline constexpr uint8_t kTlvSslSigAlg = 0x24;
inline constexpr uint8_t kTlvSslKeyAlg = 0x25;
inline constexpr uint8_t kTlvNetns = 0x30;
inline constexpr size_t kCrc32cValueSize = 4;
inline constexpr size_t kUniqueIdMaxSize = 128;
inline constexpr size_t kSslFixedSize = 5;  // client (1) + verify (4)
inline constexpr uint8_t kSslClientSsl = 0x01;
inline constexpr uint8_t kSslClientCertConn = 0x02;
inline constexpr uint8_t kSslClientCertSess = 0x04;
inline constexpr size_t kTlvMaxValueSize = 0xFFFF;

// --- decoded form ---

enum class Version : uint8_t { V1 = 1, V2 = 2 };
// Local: the sender's own connection (a health check); use the socket's
// endpoints. Proxy: relayed on behalf of the client in `source`.
enum class Command : uint8_t { Local, Proxy };
// Unspec: no usable addresses (v1 UNKNOWN, v2 UNSPEC, and the v2 UDP and
// UNIX families, which the spec lets a receiver treat as UNSPEC).
enum class Family : uint8_t { Unspec, Inet, Inet6 };
enum class Accept : uint8_t { V1Only, V2Only, Any };

constexpr std::string_view to_string(Command c) { return c == Command::Local ? "local" : "proxy"; }

constexpr std::string_view to_string(Family f) {
  switch (f) {
    case Family::Unspec:
      return "unspec";
    case Family::Inet:
      return "inet";
    case Family::Inet6:
      return "inet6";
  }
  return "?";
}

// An IP endpoint. `ip` is in network byte order; an IPv4 address fills the
// first 4 bytes and leaves the rest zero, so == compares addresses exactly.
struct Address {
  Family family = Family::Unspec;
  std::array<uint8_t, 16> ip{};
  uint16_t port = 0;  // host byte order

  // Parses numeric IPv4 or IPv6 text (inet_pton); std::nullopt if neither.
  static std::optional<Address> parse(std::string_view ip_text, uint16_t port);
  // From a getsockname()/getpeername() result; std::nullopt unless AF_INET
  // or AF_INET6 with a long enough `len`.
  static std::optional<Address> from_sockaddr(const sockaddr* sa, socklen_t len);
  // Fills `out`; returns the sockaddr length, or 0 (and leaves `out`
  // zeroed) for Unspec.
  socklen_t to_sockaddr(sockaddr_storage& out) const;
  // "192.0.2.1", "2001:db8::1"; empty for Unspec.
  std::string ip_string() const;

  bool operator==(const Address&) const = default;
};

struct RawTlv {
  uint8_t type = 0;
  std::vector<uint8_t> value;
  bool operator==(const RawTlv&) const = default;
};

// PP2_TYPE_SSL: how the client reached the sender.
struct SslInfo {
  uint8_t client = 0;                      // kSslClient* bits
  uint32_t verify = 0;                     // 0: the client presented a certificate that verified
  std::optional<std::string> version;      // "TLSv1.3"
  std::optional<std::string> common_name;  // client certificate CN
  std::optional<std::string> cipher;       // "TLS_AES_256_GCM_SHA384"
  std::optional<std::string> sig_alg;      // server certificate signature
  std::optional<std::string> key_alg;      // server certificate key
  std::vector<RawTlv> other;               // unknown sub-TLVs, wire order
  bool operator==(const SslInfo&) const = default;
};

struct Tlvs {
  std::optional<std::string> alpn;
  std::optional<std::string> authority;  // the client's SNI
  std::optional<std::vector<uint8_t>> unique_id;
  std::optional<SslInfo> ssl;
  // Every other type (NETNS, custom ranges, future ones), wire order.
  // NOOP TLVs are padding and are dropped.
  std::vector<RawTlv> other;
  bool operator==(const Tlvs&) const = default;
};

struct Header {
  Version version = Version::V2;
  Command command = Command::Proxy;
  // Inet/Inet6 only for a Proxy command with TCP addresses; source and
  // destination are then of this family. Otherwise Unspec and both
  // addresses stay default.
  Family family = Family::Unspec;
  Address source;
  Address destination;
  Tlvs tlvs;  // v2 only
  // Decode: a CRC32C TLV was present (and matched, or decoding failed).
  // Encode: append a CRC32C TLV.
  bool crc32c = false;
  bool operator==(const Header&) const = default;
};

// --- decoding ---

// One code per kind of malformation; the X-macro also names the per-outcome
// counters callers keep.
#define EDGEPIN_PROXY_ERRORS(X)                                                                  \
  X(None, "none")                                                                                \
  X(BadSignature, "bad_signature")              /* neither "PROXY " nor the v2 signature */      \
  X(VersionNotAccepted, "version_not_accepted") /* v1 where only v2 is allowed, or vice versa */ \
  X(V1MissingCrlf, "v1_missing_crlf")           /* no CRLF within kV1MaxSize bytes */            \
  X(V1BadLineEnd, "v1_bad_line_end")            /* CR not followed by LF, or a bare LF */        \
  X(V1NonAscii, "v1_non_ascii")                 /* a byte outside printable US-ASCII */          \
  X(V1EmptyField, "v1_empty_field")             /* two spaces in a row, or "PROXY TCP4 \r\n" */  \
  X(V1UnknownProtocol, "v1_unknown_protocol")   /* not TCP4, TCP6 or UNKNOWN */                  \
  X(V1BadAddress, "v1_bad_address")             /* not an address of the protocol's family */    \
  X(V1PortNotNumeric, "v1_port_not_numeric")                                                     \
  X(V1PortLeadingZero, "v1_port_leading_zero")                                                   \
  X(V1PortOutOfRange, "v1_port_out_of_range")  /* above 65535 */                                 \
  X(V1TooFewFields, "v1_too_few_fields")       /* CRLF before the destination port */            \
  X(V1TooManyFields, "v1_too_many_fields")     /* a space after the destination port */          \
  X(V2BadVersion, "v2_bad_version")            /* version nibble is not 2 */                     \
  X(V2BadCommand, "v2_bad_command")            /* command nibble is not LOCAL or PROXY */        \
  X(V2BadFamily, "v2_bad_family")              /* not one of the 7 family/transport bytes */     \
  X(V2TooLong, "v2_too_long")                  /* 16 + length exceeds kV2MaxSize */              \
  X(V2AddressTooShort, "v2_address_too_short") /* length below the family's address size */      \
  /* 1 or 2 bytes left after the last TLV: a TLV header there would overrun */                   \
  /* the declared length. This is also what "trailing garbage after the */                       \
  /* TLVs" looks like: the TLV loop must end exactly at the declared length. */                  \
  X(V2TlvHeaderOverrun, "v2_tlv_header_overrun")                                                 \
  X(V2TlvValueOverrun, "v2_tlv_value_overrun") /* a TLV length runs past the declared length */  \
  /* CRC32C not 4 bytes, UNIQUE_ID over 128, SSL under 5 */                                      \
  X(V2BadTlvLength, "v2_bad_tlv_length")                                                         \
  X(V2DuplicateTlv, "v2_duplicate_tlv") /* a known TLV or SSL sub-TLV given twice */             \
  X(V2SslSubTlvHeaderOverrun, "v2_ssl_sub_tlv_header_overrun")                                   \
  X(V2SslSubTlvValueOverrun, "v2_ssl_sub_tlv_value_overrun")                                     \
  X(V2Crc32cMismatch, "v2_crc32c_mismatch")

enum class Error : uint8_t {
#define EDGEPIN_X(name, text) name,
  EDGEPIN_PROXY_ERRORS(EDGEPIN_X)
#undef EDGEPIN_X
};

inline constexpr size_t kErrorCount = 0
#define EDGEPIN_X(name, text) +1
    EDGEPIN_PROXY_ERRORS(EDGEPIN_X)
#undef EDGEPIN_X
    ;

constexpr std::string_view to_string(Error e) {
  switch (e) {
#define EDGEPIN_X(name, text) \
  case Error::name:           \
    return text;
    EDGEPIN_PROXY_ERRORS(EDGEPIN_X)
#undef EDGEPIN_X
  }
  return "?";
}

struct DecodeResult {
  ParseStatus status = ParseStatus::NeedMore;
  Error error = Error::None;
  // Done: bytes the header occupies; the application data starts there.
  size_t consumed = 0;
  // Error: offset of the byte (or, for length checks, of the length field)
  // at which the input became invalid; may equal the buffer size when
  // the missing CRLF is what is wrong.
  size_t error_offset = 0;
  Header header;  // meaningful only when Done
};

// Decodes a PROXY header at the start of `buffer` (all bytes received so
// far). Returns:
//   NeedMore            `buffer` is a valid prefix of a header; call again
//                       with more bytes (an empty buffer is NeedMore);
//   Done(consumed)      `header` holds the result; bytes after `consumed`
//                       belong to the application and are not examined;
//   Error(error, error_offset)  the input cannot become a valid header.
// `accept` restricts the versions; the other version's first byte gives
// VersionNotAccepted at offset 0. Never reads past `buffer`, never throws
// (beyond std::bad_alloc from building TLV strings).
DecodeResult decode(std::span<const uint8_t> buffer, Accept accept = Accept::Any);

// --- encoding ---

#define EDGEPIN_PROXY_ENCODE_ERRORS(X)                                                             \
  X(None, "none")                                                                                  \
  X(FamilyMismatch, "family_mismatch") /* an address is not of the header's family */              \
  X(NotRepresentableInV1, "not_representable_in_v1") /* LOCAL, TLVs or CRC32C in v1 */             \
  X(ReservedTlvType, "reserved_tlv_type")            /* a known type in `other` */                 \
  X(TlvTooLong, "tlv_too_long")                      /* value over 65535, or unique ID over 128 */ \
  X(TooLong, "too_long")                             /* the header would exceed kV2MaxSize */

enum class EncodeError : uint8_t {
#define EDGEPIN_X(name, text) name,
  EDGEPIN_PROXY_ENCODE_ERRORS(EDGEPIN_X)
#undef EDGEPIN_X
};

constexpr std::string_view to_string(EncodeError e) {
  switch (e) {
#define EDGEPIN_X(name, text) \
  case EncodeError::name:     \
    return text;
    EDGEPIN_PROXY_ENCODE_ERRORS(EDGEPIN_X)
#undef EDGEPIN_X
  }
  return "?";
}

struct EncodeResult {
  EncodeError error = EncodeError::None;
  std::vector<uint8_t> bytes;  // empty unless ok()
  bool ok() const { return error == EncodeError::None; }
};

// Encodes `header` in its `version`. v1: Proxy with Inet/Inet6 becomes a
// TCP4/TCP6 line, Proxy with Unspec "PROXY UNKNOWN\r\n"; LOCAL, TLVs and
// CRC32C give NotRepresentableInV1. v2: LOCAL is sent with family UNSPEC,
// TLVs in the order ALPN, AUTHORITY, UNIQUE_ID, SSL, `other`, then CRC32C
// if requested. Returns the bytes, or the EncodeError listed beside the enum.
// A successful result always decodes back to `header` (addresses of an
// Unspec or Local header are not sent and decode as default).
EncodeResult encode(const Header& header);

// "PROXY TCP4|TCP6 src dst sport dport\r\n". FamilyMismatch if the two
// addresses are not both IPv4 or both IPv6.
EncodeResult encode_v1(const Address& source, const Address& destination);
// "PROXY UNKNOWN\r\n".
std::vector<uint8_t> encode_v1_unknown();
// A v2 PROXY header for a TCP connection from `source` to `destination`.
EncodeResult encode_v2_proxy(const Address& source, const Address& destination,
                             const Tlvs& tlvs = {}, bool crc32c = false);
// A v2 LOCAL header (health checks).
EncodeResult encode_v2_local(const Tlvs& tlvs = {}, bool crc32c = false);

// CRC-32C (Castagnoli, RFC 4960 appendix B), as PP2_TYPE_CRC32C uses it.
uint32_t crc32c(std::span<const uint8_t> data);

}  // namespace edgepin::proxy
