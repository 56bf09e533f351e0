#include "proxy_protocol.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace edgepin::proxy {
namespace {

// ---------------------------------------------------------------- helpers

constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    table[i] = crc;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrc32cTable = make_crc32c_table();

// Raw (not complemented) running CRC so that the checksum of a header can be
// computed in pieces with its CRC32C value field read as zeros.
uint32_t crc32c_update(uint32_t state, std::span<const uint8_t> data) {
  for (uint8_t b : data) state = kCrc32cTable[(state ^ b) & 0xFF] ^ (state >> 8);
  return state;
}

uint16_t read_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t read_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}
void append_u16(std::vector<uint8_t>& out, size_t v) {
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}
void append_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

std::string to_string(std::span<const uint8_t> bytes) {
  return std::string(bytes.begin(), bytes.end());
}

DecodeResult need_more() { return DecodeResult{}; }

DecodeResult fail(Error e, size_t offset) {
  DecodeResult r;
  r.status = ParseStatus::Error;
  r.error = e;
  r.error_offset = offset;
  return r;
}

DecodeResult done(Header&& header, size_t consumed) {
  DecodeResult r;
  r.status = ParseStatus::Done;
  r.consumed = consumed;
  r.header = std::move(header);
  return r;
}

bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
bool is_hex(uint8_t c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// ---------------------------------------------------------------- v1

enum class V1Protocol : uint8_t { Tcp4, Tcp6, Unknown };
constexpr std::string_view kV1Tcp4 = "TCP4";
constexpr std::string_view kV1Tcp6 = "TCP6";
constexpr std::string_view kV1Unknown = "UNKNOWN";
constexpr std::string_view kCrlf = "\r\n";
constexpr uint8_t kFirstPrintable = 0x20;
constexpr uint8_t kLastPrintable = 0x7E;
constexpr uint32_t kMaxPort = 65535;

// Fields after "PROXY ", in wire order.
enum class V1Field : uint8_t { Protocol, Source, Destination, SourcePort, DestinationPort };

bool is_prefix_of(std::string_view token, std::string_view word) {
  return token.size() <= word.size() && word.substr(0, token.size()) == token;
}

// Strict dotted quad as the spec wants it: exactly four decimal octets
// 0..255 without leading zeros. With complete == false it accepts any prefix
// of such an address, so a bad character is reported when it arrives.
bool parse_ipv4(std::string_view s, bool complete, std::array<uint8_t, 16>* out) {
  if (s.size() > kV1MaxIpv4Text) return false;
  size_t octet = 0;
  size_t digits = 0;
  unsigned value = 0;
  std::array<uint8_t, 4> bytes{};
  for (char ch : s) {
    const auto c = static_cast<uint8_t>(ch);
    if (is_digit(c)) {
      if (digits == 1 && value == 0) return false;  // leading zero
      value = value * 10 + (c - '0');
      if (value > 255) return false;
      ++digits;
    } else if (c == '.') {
      if (digits == 0 || octet == 3) return false;
      bytes[octet++] = static_cast<uint8_t>(value);
      digits = 0;
      value = 0;
    } else {
      return false;
    }
  }
  if (!complete) return true;
  if (octet != 3 || digits == 0) return false;
  bytes[3] = static_cast<uint8_t>(value);
  if (out) {
    out->fill(0);
    std::copy(bytes.begin(), bytes.end(), out->begin());
  }
  return true;
}

// A prefix check on characters and length, then inet_pton for the whole
// address; inet_pton covers "::" compression and embedded IPv4.
bool parse_ipv6(std::string_view s, bool complete, std::array<uint8_t, 16>* out) {
  if (s.size() > kV1MaxIpv6Text) return false;
  for (char ch : s) {
    const auto c = static_cast<uint8_t>(ch);
    if (!is_hex(c) && c != ':' && c != '.') return false;
  }
  if (!complete) return true;
  char text[kV1MaxIpv6Text + 1];
  std::memcpy(text, s.data(), s.size());
  text[s.size()] = '\0';
  in6_addr a{};
  if (inet_pton(AF_INET6, text, &a) != 1) return false;
  if (out) std::memcpy(out->data(), &a, sizeof a);
  return true;
}

// Checks a (possibly incomplete) port field. Ports are decimal 0..65535
// without leading zeros ("0" itself is fine).
Error check_port(std::string_view s, uint16_t* out) {
  uint32_t value = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (!is_digit(c)) return Error::V1PortNotNumeric;
    if (i == 1 && s[0] == '0') return Error::V1PortLeadingZero;
    value = value * 10 + (c - '0');
    if (value > kMaxPort) return Error::V1PortOutOfRange;
  }
  if (out) *out = static_cast<uint16_t>(value);
  return Error::None;
}

class V1Decoder {
 public:
  explicit V1Decoder(std::span<const uint8_t> in) : in_(in) {}

  DecodeResult run() {
    for (size_t i = 0; i < kV1Prefix.size(); ++i) {
      if (i >= in_.size()) return need_more();
      if (in_[i] != static_cast<uint8_t>(kV1Prefix[i])) return fail(Error::BadSignature, i);
    }
    token_start_ = kV1Prefix.size();
    for (size_t i = kV1Prefix.size();; ++i) {
      // Checked before availability: 107 bytes without CRLF is an error
      // whatever comes next.
      if (i >= kV1MaxSize) return fail(Error::V1MissingCrlf, i);
      if (i >= in_.size()) return need_more();
      const uint8_t c = in_[i];
      if (c == '\r') return end_of_line(i);
      if (c == '\n') return fail(Error::V1BadLineEnd, i);
      if (c < kFirstPrintable || c > kLastPrintable) return fail(Error::V1NonAscii, i);
      // After "UNKNOWN " the spec says to ignore everything up to CRLF.
      if (ignore_rest_) continue;
      if (c == ' ') {
        if (Error e = finish_field(i); e != Error::None) return fail(e, i);
        if (field_ == V1Field::DestinationPort) return fail(Error::V1TooManyFields, i);
        if (field_ == V1Field::Protocol && protocol_ == V1Protocol::Unknown) {
          ignore_rest_ = true;
          continue;
        }
        field_ = static_cast<V1Field>(static_cast<uint8_t>(field_) + 1);
        token_start_ = i + 1;
        continue;
      }
      if (Error e = check_prefix(token(i + 1)); e != Error::None) return fail(e, i);
    }
  }

 private:
  std::string_view token(size_t end) const {
    return {reinterpret_cast<const char*>(in_.data()) + token_start_, end - token_start_};
  }

  DecodeResult end_of_line(size_t cr) {
    if (cr + 1 >= kV1MaxSize) return fail(Error::V1MissingCrlf, cr + 1);
    if (!ignore_rest_) {
      if (Error e = finish_field(cr); e != Error::None) return fail(e, cr);
      const bool complete = field_ == V1Field::DestinationPort ||
                            (field_ == V1Field::Protocol && protocol_ == V1Protocol::Unknown);
      if (!complete) return fail(Error::V1TooFewFields, cr);
    }
    if (cr + 1 >= in_.size()) return need_more();
    if (in_[cr + 1] != '\n') return fail(Error::V1BadLineEnd, cr + 1);
    header_.version = Version::V1;
    header_.command = Command::Proxy;
    if (protocol_ == V1Protocol::Unknown) {
      header_.family = Family::Unspec;
      header_.source = {};
      header_.destination = {};
    }
    return done(std::move(header_), cr + kCrlf.size());
  }

  // Validates the field so far (token ends at the current byte).
  Error check_prefix(std::string_view t) const {
    switch (field_) {
      case V1Field::Protocol:
        if (is_prefix_of(t, kV1Tcp4) || is_prefix_of(t, kV1Tcp6) || is_prefix_of(t, kV1Unknown))
          return Error::None;
        return Error::V1UnknownProtocol;
      case V1Field::Source:
      case V1Field::Destination: {
        const bool ok = protocol_ == V1Protocol::Tcp4 ? parse_ipv4(t, false, nullptr)
                                                      : parse_ipv6(t, false, nullptr);
        return ok ? Error::None : Error::V1BadAddress;
      }
      case V1Field::SourcePort:
      case V1Field::DestinationPort:
        return check_port(t, nullptr);
    }
    return Error::None;
  }

  // The field ends at `end` (a space or CR): validate it whole and store it.
  Error finish_field(size_t end) {
    const std::string_view t = token(end);
    if (t.empty()) return Error::V1EmptyField;
    switch (field_) {
      case V1Field::Protocol:
        if (t == kV1Tcp4) {
          protocol_ = V1Protocol::Tcp4;
          header_.family = Family::Inet;
        } else if (t == kV1Tcp6) {
          protocol_ = V1Protocol::Tcp6;
          header_.family = Family::Inet6;
        } else if (t == kV1Unknown) {
          protocol_ = V1Protocol::Unknown;
        } else {
          return Error::V1UnknownProtocol;
        }
        return Error::None;
      case V1Field::Source:
      case V1Field::Destination: {
        Address& a = field_ == V1Field::Source ? header_.source : header_.destination;
        a.family = header_.family;
        const bool ok =
            protocol_ == V1Protocol::Tcp4 ? parse_ipv4(t, true, &a.ip) : parse_ipv6(t, true, &a.ip);
        return ok ? Error::None : Error::V1BadAddress;
      }
      case V1Field::SourcePort:
        return check_port(t, &header_.source.port);
      case V1Field::DestinationPort:
        return check_port(t, &header_.destination.port);
    }
    return Error::None;
  }

  std::span<const uint8_t> in_;
  V1Field field_ = V1Field::Protocol;
  V1Protocol protocol_ = V1Protocol::Unknown;
  size_t token_start_ = 0;
  bool ignore_rest_ = false;
  Header header_;
};

// ---------------------------------------------------------------- v2

// Address block size for a family/transport byte; std::nullopt for the
// values the spec calls invalid.
std::optional<size_t> v2_address_size(uint8_t family) {
  switch (family) {
    case kV2FamilyUnspec:
      return 0;
    case kV2FamilyTcp4:
    case kV2FamilyUdp4:
      return kV2AddressSizeInet;
    case kV2FamilyTcp6:
    case kV2FamilyUdp6:
      return kV2AddressSizeInet6;
    case kV2FamilyUnixStream:
    case kV2FamilyUnixDgram:
      return kV2AddressSizeUnix;
    default:
      return std::nullopt;
  }
}

// Walks a TLV list occupying [begin, end) of `in`, of which only
// `in.size()` bytes have arrived. Shared by the top level and the SSL
// sub-TLVs. `on_header(type, len)` runs as soon as a TLV's 3-byte header is
// there and returns an Error (or None) decidable from it alone;
// `on_value(type, offset, len)` takes the value and returns NeedMore until
// its bytes are all there, an Error, or Done. Returns Done when the list
// ends exactly at `end`, otherwise NeedMore or the first error.
struct TlvErrors {
  Error header_overrun;
  Error value_overrun;
};

template <typename OnHeader, typename OnValue>
DecodeResult walk_tlvs(std::span<const uint8_t> in, size_t begin, size_t end, TlvErrors errors,
                       OnHeader&& on_header, OnValue&& on_value) {
  size_t off = begin;
  while (off < end) {
    // Both overrun checks use lengths only, so they fire before the value
    // bytes arrive.
    if (end - off < kTlvHeaderSize) return fail(errors.header_overrun, off);
    if (in.size() < off + kTlvHeaderSize) return need_more();
    const uint8_t type = in[off];
    const size_t len = read_u16(&in[off + 1]);
    if (len > end - off - kTlvHeaderSize) return fail(errors.value_overrun, off + 1);
    if (Error e = on_header(type, len); e != Error::None) return fail(e, off);
    const size_t value_off = off + kTlvHeaderSize;
    DecodeResult r = on_value(type, value_off, len);
    if (r.status != ParseStatus::Done) return r;
    off = value_off + len;
  }
  DecodeResult r;
  r.status = ParseStatus::Done;
  r.consumed = off;
  return r;
}

class V2Decoder {
 public:
  explicit V2Decoder(std::span<const uint8_t> in) : in_(in) {}

  DecodeResult run() {
    for (size_t i = 0; i < kV2Signature.size(); ++i) {
      if (i >= in_.size()) return need_more();
      if (in_[i] != kV2Signature[i]) return fail(Error::BadSignature, i);
    }
    if (in_.size() <= kV2OffsetVersionCommand) return need_more();
    const uint8_t ver_cmd = in_[kV2OffsetVersionCommand];
    if (ver_cmd >> 4 != kV2Version) return fail(Error::V2BadVersion, kV2OffsetVersionCommand);
    const uint8_t command = ver_cmd & 0x0F;
    if (command != kV2CommandLocal && command != kV2CommandProxy)
      return fail(Error::V2BadCommand, kV2OffsetVersionCommand);
    const bool local = command == kV2CommandLocal;

    if (in_.size() <= kV2OffsetFamily) return need_more();
    const uint8_t family = in_[kV2OffsetFamily];
    const std::optional<size_t> address_size = v2_address_size(family);
    // LOCAL: the spec says to ignore the family, so it is not validated.
    if (!local && !address_size) return fail(Error::V2BadFamily, kV2OffsetFamily);

    // The high length byte alone can already exceed the cap.
    if (in_.size() <= kV2OffsetLength) return need_more();
    if (kV2HeaderSize + (size_t{in_[kV2OffsetLength]} << 8) > kV2MaxSize)
      return fail(Error::V2TooLong, kV2OffsetLength);
    if (in_.size() <= kV2OffsetLength + 1) return need_more();
    const size_t block = read_u16(&in_[kV2OffsetLength]);
    total_ = kV2HeaderSize + block;
    if (total_ > kV2MaxSize) return fail(Error::V2TooLong, kV2OffsetLength);

    header_.version = Version::V2;
    header_.command = local ? Command::Local : Command::Proxy;
    header_.family = Family::Unspec;

    size_t tlv_begin = 0;
    if (local) {
      // A LOCAL block is parsed (for its TLVs and CRC) only when its family
      // says where the addresses end; otherwise it is skipped unread, as
      // the spec requires LOCAL to be accepted whatever the family.
      if (!address_size || block < *address_size) {
        if (in_.size() < total_) return need_more();
        return done(std::move(header_), total_);
      }
      tlv_begin = kV2HeaderSize + *address_size;
    } else {
      if (block < *address_size) return fail(Error::V2AddressTooShort, kV2OffsetLength);
      tlv_begin = kV2HeaderSize + *address_size;
      if (in_.size() < tlv_begin) return need_more();
      read_addresses(family);
    }

    DecodeResult r = walk_tlvs(
        in_, tlv_begin, total_, {Error::V2TlvHeaderOverrun, Error::V2TlvValueOverrun},
        [this](uint8_t type, size_t len) { return check_tlv_header(type, len); },
        [this](uint8_t type, size_t off, size_t len) { return take_tlv(type, off, len); });
    if (r.status != ParseStatus::Done) return r;
    // walkTlvs ends exactly at total_ or fails; this also covers an empty
    // TLV area whose address bytes have not all arrived.
    if (in_.size() < total_) return need_more();

    if (crc_offset_) {
      uint32_t state = 0xFFFFFFFFu;
      state = crc32c_update(state, in_.first(*crc_offset_));
      constexpr std::array<uint8_t, kCrc32cValueSize> zeros{};
      state = crc32c_update(state, zeros);
      state = crc32c_update(state, in_.subspan(*crc_offset_ + kCrc32cValueSize,
                                               total_ - *crc_offset_ - kCrc32cValueSize));
      if (~state != read_u32(&in_[*crc_offset_]))
        return fail(Error::V2Crc32cMismatch, *crc_offset_);
      header_.crc32c = true;
    }
    return done(std::move(header_), total_);
  }

 private:
  void read_addresses(uint8_t family) {
    const uint8_t* p = &in_[kV2HeaderSize];
    size_t ip_size = 0;
    if (family == kV2FamilyTcp4) {
      header_.family = Family::Inet;
      ip_size = 4;
    } else if (family == kV2FamilyTcp6) {
      header_.family = Family::Inet6;
      ip_size = 16;
    } else {
      // UNSPEC, UDP, UNIX: the spec lets a receiver that does not support a
      // family fall back to UNSPEC, i.e. use the socket's own addresses.
      return;
    }
    Address& src = header_.source;
    Address& dst = header_.destination;
    src.family = dst.family = header_.family;
    std::copy(p, p + ip_size, src.ip.begin());
    std::copy(p + ip_size, p + 2 * ip_size, dst.ip.begin());
    src.port = read_u16(p + 2 * ip_size);
    dst.port = read_u16(p + 2 * ip_size + 2);
  }

  // Checks decidable from a TLV's type and length alone.
  Error check_tlv_header(uint8_t type, size_t len) {
    Tlvs& t = header_.tlvs;
    switch (type) {
      case kTlvAlpn:
        return t.alpn ? Error::V2DuplicateTlv : Error::None;
      case kTlvAuthority:
        return t.authority ? Error::V2DuplicateTlv : Error::None;
      case kTlvCrc32c:
        if (crc_offset_) return Error::V2DuplicateTlv;
        return len == kCrc32cValueSize ? Error::None : Error::V2BadTlvLength;
      case kTlvUniqueId:
        if (t.unique_id) return Error::V2DuplicateTlv;
        return len <= kUniqueIdMaxSize ? Error::None : Error::V2BadTlvLength;
      case kTlvSsl:
        if (t.ssl) return Error::V2DuplicateTlv;
        return len >= kSslFixedSize ? Error::None : Error::V2BadTlvLength;
      default:
        return Error::None;
    }
  }

  DecodeResult take_tlv(uint8_t type, size_t off, size_t len) {
    if (type == kTlvSsl) return take_ssl(off, len);
    if (in_.size() < off + len) return need_more();
    const auto value = in_.subspan(off, len);
    Tlvs& t = header_.tlvs;
    switch (type) {
      case kTlvAlpn:
        t.alpn = to_string(value);
        break;
      case kTlvAuthority:
        t.authority = to_string(value);
        break;
      case kTlvCrc32c:
        crc_offset_ = off;
        break;
      case kTlvNoop:
        break;
      case kTlvUniqueId:
        t.unique_id.emplace(value.begin(), value.end());
        break;
      default:
        t.other.push_back({type, {value.begin(), value.end()}});
        break;
    }
    return walk_done();
  }

  // The SSL TLV's sub-TLVs are walked as they arrive, so an overrun inside
  // it is reported before the rest of the header.
  DecodeResult take_ssl(size_t off, size_t len) {
    if (in_.size() < off + kSslFixedSize) return need_more();
    SslInfo ssl;
    ssl.client = in_[off];
    ssl.verify = read_u32(&in_[off + 1]);
    DecodeResult r = walk_tlvs(
        in_, off + kSslFixedSize, off + len,
        {Error::V2SslSubTlvHeaderOverrun, Error::V2SslSubTlvValueOverrun},
        [&ssl](uint8_t type, size_t) {
          if (std::optional<std::string>* field = ssl_field(ssl, type); field && *field)
            return Error::V2DuplicateTlv;
          return Error::None;
        },
        [this, &ssl](uint8_t type, size_t value_off, size_t value_len) {
          if (in_.size() < value_off + value_len) return need_more();
          const auto value = in_.subspan(value_off, value_len);
          if (std::optional<std::string>* field = ssl_field(ssl, type))
            *field = to_string(value);
          else
            ssl.other.push_back({type, {value.begin(), value.end()}});
          return walk_done();
        });
    if (r.status != ParseStatus::Done) return r;
    header_.tlvs.ssl = std::move(ssl);
    return walk_done();
  }

  static std::optional<std::string>* ssl_field(SslInfo& ssl, uint8_t type) {
    switch (type) {
      case kTlvSslVersion:
        return &ssl.version;
      case kTlvSslCn:
        return &ssl.common_name;
      case kTlvSslCipher:
        return &ssl.cipher;
      case kTlvSslSigAlg:
        return &ssl.sig_alg;
      case kTlvSslKeyAlg:
        return &ssl.key_alg;
      default:
        return nullptr;
    }
  }

  static DecodeResult walk_done() {
    DecodeResult r;
    r.status = ParseStatus::Done;
    return r;
  }

  std::span<const uint8_t> in_;
  size_t total_ = 0;
  std::optional<size_t> crc_offset_;
  Header header_;
};

// ---------------------------------------------------------------- encoding

EncodeResult encode_error(EncodeError e) { return EncodeResult{e, {}}; }

bool is_known_tlv_type(uint8_t type) {
  return type == kTlvAlpn || type == kTlvAuthority || type == kTlvCrc32c || type == kTlvNoop ||
         type == kTlvUniqueId || type == kTlvSsl;
}

bool is_known_ssl_sub_type(uint8_t type) { return type >= kTlvSslVersion && type <= kTlvSslKeyAlg; }

// Appends one TLV; false if the value does not fit the 16-bit length.
bool append_tlv(std::vector<uint8_t>& out, uint8_t type, std::span<const uint8_t> value) {
  if (value.size() > kTlvMaxValueSize) return false;
  out.push_back(type);
  append_u16(out, value.size());
  out.insert(out.end(), value.begin(), value.end());
  return true;
}

std::span<const uint8_t> bytes_of(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

EncodeError append_tlvs(std::vector<uint8_t>& out, const Tlvs& tlvs) {
  if (tlvs.alpn && !append_tlv(out, kTlvAlpn, bytes_of(*tlvs.alpn))) return EncodeError::TlvTooLong;
  if (tlvs.authority && !append_tlv(out, kTlvAuthority, bytes_of(*tlvs.authority)))
    return EncodeError::TlvTooLong;
  if (tlvs.unique_id) {
    if (tlvs.unique_id->size() > kUniqueIdMaxSize) return EncodeError::TlvTooLong;
    append_tlv(out, kTlvUniqueId, *tlvs.unique_id);
  }
  if (tlvs.ssl) {
    const SslInfo& s = *tlvs.ssl;
    std::vector<uint8_t> v;
    v.push_back(s.client);
    append_u32(v, s.verify);
    const std::pair<uint8_t, const std::optional<std::string>*> subs[] = {
        {kTlvSslVersion, &s.version}, {kTlvSslCn, &s.common_name}, {kTlvSslCipher, &s.cipher},
        {kTlvSslSigAlg, &s.sig_alg},  {kTlvSslKeyAlg, &s.key_alg},
    };
    for (const auto& [type, field] : subs)
      if (*field && !append_tlv(v, type, bytes_of(**field))) return EncodeError::TlvTooLong;
    for (const RawTlv& t : s.other) {
      if (is_known_ssl_sub_type(t.type)) return EncodeError::ReservedTlvType;
      if (!append_tlv(v, t.type, t.value)) return EncodeError::TlvTooLong;
    }
    if (!append_tlv(out, kTlvSsl, v)) return EncodeError::TlvTooLong;
  }
  for (const RawTlv& t : tlvs.other) {
    if (is_known_tlv_type(t.type)) return EncodeError::ReservedTlvType;
    if (!append_tlv(out, t.type, t.value)) return EncodeError::TlvTooLong;
  }
  return EncodeError::None;
}

EncodeResult encode_v2(const Header& h) {
  std::vector<uint8_t> out(kV2Signature.begin(), kV2Signature.end());
  const bool local = h.command == Command::Local;
  out.push_back(
      static_cast<uint8_t>(kV2Version << 4 | (local ? kV2CommandLocal : kV2CommandProxy)));
  uint8_t family = kV2FamilyUnspec;
  size_t ip_size = 0;
  if (!local && h.family != Family::Unspec) {
    if (h.source.family != h.family || h.destination.family != h.family)
      return encode_error(EncodeError::FamilyMismatch);
    family = h.family == Family::Inet ? kV2FamilyTcp4 : kV2FamilyTcp6;
    ip_size = h.family == Family::Inet ? 4 : 16;
  }
  out.push_back(family);
  append_u16(out, 0);  // length, patched below
  if (ip_size) {
    out.insert(out.end(), h.source.ip.begin(), h.source.ip.begin() + ip_size);
    out.insert(out.end(), h.destination.ip.begin(), h.destination.ip.begin() + ip_size);
    append_u16(out, h.source.port);
    append_u16(out, h.destination.port);
  }
  if (EncodeError e = append_tlvs(out, h.tlvs); e != EncodeError::None) return encode_error(e);
  size_t crc_value = 0;
  if (h.crc32c) {
    out.push_back(kTlvCrc32c);
    append_u16(out, kCrc32cValueSize);
    crc_value = out.size();
    out.resize(out.size() + kCrc32cValueSize, 0);
  }
  if (out.size() > kV2MaxSize) return encode_error(EncodeError::TooLong);
  const size_t block = out.size() - kV2HeaderSize;
  out[kV2OffsetLength] = static_cast<uint8_t>(block >> 8);
  out[kV2OffsetLength + 1] = static_cast<uint8_t>(block);
  if (h.crc32c) {
    const uint32_t crc = crc32c(out);  // computed with the value field zero
    for (size_t i = 0; i < kCrc32cValueSize; ++i)
      out[crc_value + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
  }
  return EncodeResult{EncodeError::None, std::move(out)};
}

// resize + memcpy rather than insert(end, first, last): GCC 12 at -O3
// inlines the range insert into an empty vector and then warns that it
// writes into a region of size 0 (-Wstringop-overflow, a false positive).
void append_text(std::vector<uint8_t>& out, std::string_view s) {
  if (s.empty()) return;
  const size_t at = out.size();
  out.resize(at + s.size());
  std::memcpy(out.data() + at, s.data(), s.size());
}

}  // namespace

// ---------------------------------------------------------------- public

uint32_t crc32c(std::span<const uint8_t> data) { return ~crc32c_update(0xFFFFFFFFu, data); }

std::optional<Address> Address::parse(std::string_view ip_text, uint16_t port) {
  char text[INET6_ADDRSTRLEN];
  if (ip_text.size() >= sizeof text) return std::nullopt;
  std::memcpy(text, ip_text.data(), ip_text.size());
  text[ip_text.size()] = '\0';
  Address a;
  a.port = port;
  if (inet_pton(AF_INET, text, a.ip.data()) == 1) {
    a.family = Family::Inet;
    return a;
  }
  if (inet_pton(AF_INET6, text, a.ip.data()) == 1) {
    a.family = Family::Inet6;
    return a;
  }
  return std::nullopt;
}

std::optional<Address> Address::from_sockaddr(const sockaddr* sa, socklen_t len) {
  if (!sa) return std::nullopt;
  Address a;
  if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    sockaddr_in sin;
    std::memcpy(&sin, sa, sizeof sin);
    a.family = Family::Inet;
    std::memcpy(a.ip.data(), &sin.sin_addr, sizeof sin.sin_addr);
    a.port = ntohs(sin.sin_port);
    return a;
  }
  if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    sockaddr_in6 sin6;
    std::memcpy(&sin6, sa, sizeof sin6);
    a.family = Family::Inet6;
    std::memcpy(a.ip.data(), &sin6.sin6_addr, sizeof sin6.sin6_addr);
    a.port = ntohs(sin6.sin6_port);
    return a;
  }
  return std::nullopt;
}

socklen_t Address::to_sockaddr(sockaddr_storage& out) const {
  std::memset(&out, 0, sizeof out);
  if (family == Family::Inet) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    std::memcpy(&sin.sin_addr, ip.data(), sizeof sin.sin_addr);
    std::memcpy(&out, &sin, sizeof sin);
    return sizeof sin;
  }
  if (family == Family::Inet6) {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(port);
    std::memcpy(&sin6.sin6_addr, ip.data(), sizeof sin6.sin6_addr);
    std::memcpy(&out, &sin6, sizeof sin6);
    return sizeof sin6;
  }
  return 0;
}

std::string Address::ip_string() const {
  char text[INET6_ADDRSTRLEN];
  const int af = family == Family::Inet ? AF_INET : family == Family::Inet6 ? AF_INET6 : AF_UNSPEC;
  if (af == AF_UNSPEC || !inet_ntop(af, ip.data(), text, sizeof text)) return {};
  return text;
}

DecodeResult decode(std::span<const uint8_t> buffer, Accept accept) {
  if (buffer.empty()) return need_more();
  // One byte tells the versions apart: 'P' starts v1, CR starts v2.
  const bool v1 = buffer[0] == static_cast<uint8_t>(kV1Prefix[0]);
  const bool v2 = buffer[0] == kV2Signature[0];
  if (!v1 && !v2) return fail(Error::BadSignature, 0);
  if ((v1 && accept == Accept::V2Only) || (v2 && accept == Accept::V1Only))
    return fail(Error::VersionNotAccepted, 0);
  return v1 ? V1Decoder(buffer).run() : V2Decoder(buffer).run();
}

EncodeResult encode(const Header& header) {
  if (header.version == Version::V2) return encode_v2(header);
  if (header.command == Command::Local || header.crc32c || header.tlvs != Tlvs{})
    return encode_error(EncodeError::NotRepresentableInV1);
  if (header.family == Family::Unspec) return EncodeResult{EncodeError::None, encode_v1_unknown()};
  if (header.source.family != header.family) return encode_error(EncodeError::FamilyMismatch);
  return encode_v1(header.source, header.destination);
}

EncodeResult encode_v1(const Address& source, const Address& destination) {
  if (source.family == Family::Unspec || source.family != destination.family)
    return encode_error(EncodeError::FamilyMismatch);
  std::vector<uint8_t> out;
  out.reserve(kV1MaxSize);
  append_text(out, kV1Prefix);
  append_text(out, source.family == Family::Inet ? kV1Tcp4 : kV1Tcp6);
  for (const std::string& s :
       {source.ip_string(), destination.ip_string(), std::to_string(source.port)}) {
    out.push_back(' ');
    append_text(out, s);
  }
  out.push_back(' ');
  append_text(out, std::to_string(destination.port));
  append_text(out, kCrlf);
  return EncodeResult{EncodeError::None, std::move(out)};
}

std::vector<uint8_t> encode_v1_unknown() {
  std::vector<uint8_t> out;
  append_text(out, kV1Prefix);
  append_text(out, kV1Unknown);
  append_text(out, kCrlf);
  return out;
}

EncodeResult encode_v2_proxy(const Address& source, const Address& destination, const Tlvs& tlvs,
                             bool crc) {
  Header h;
  h.version = Version::V2;
  h.command = Command::Proxy;
  h.family = source.family;
  if (h.family == Family::Unspec) return encode_error(EncodeError::FamilyMismatch);
  h.source = source;
  h.destination = destination;
  h.tlvs = tlvs;
  h.crc32c = crc;
  return encode_v2(h);
}

EncodeResult encode_v2_local(const Tlvs& tlvs, bool crc) {
  Header h;
  h.version = Version::V2;
  h.command = Command::Local;
  h.tlvs = tlvs;
  h.crc32c = crc;
  return encode_v2(h);
}

}  // namespace edgepin::proxy
