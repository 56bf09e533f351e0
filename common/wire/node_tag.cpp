#include "node_tag.h"

#include <algorithm>
#include <climits>

namespace edgepin::nodetag {
namespace {

// Field offsets, shared by both layouts up to the random part.
constexpr size_t kOffMagic = 0;
constexpr size_t kOffFormat = 1;
constexpr size_t kOffTag = 2;
constexpr size_t kOffEpoch = 4;
constexpr size_t kOffRandom = 8;
constexpr size_t kHeaderSize = kOffRandom;

constexpr size_t kSessionIdCheckSize = 8;
constexpr size_t kKeyNameCheckSize = 4;
constexpr size_t kSessionIdCheckOffset = kOffRandom + kSessionIdRandomSize;
constexpr size_t kKeyNameCheckOffset = kOffRandom + kKeyNameRandomSize;
static_assert(kSessionIdCheckOffset + kSessionIdCheckSize == kSessionIdSize);
static_assert(kKeyNameCheckOffset + kKeyNameCheckSize == kKeyNameSize);

constexpr uint8_t format_byte(uint8_t kind) {
  return static_cast<uint8_t>(kFormatVersion << 4 | kind);
}

// Bitwise reflected CRC: the inputs are at most 24 bytes, so a table would
// cost more cache than it saves. Both CRCs start from all ones and are
// complemented at the end, so an all-zero input does not check as zero.
template <typename T>
constexpr T crc_reflected(std::span<const uint8_t> data, T reflected_poly) {
  T crc = ~T{0};
  for (uint8_t byte : data) {
    crc ^= byte;
    for (int bit = 0; bit < CHAR_BIT; ++bit)
      crc = (crc & 1) ? (crc >> 1) ^ reflected_poly : crc >> 1;
  }
  return ~crc;
}

// CRC-32C (Castagnoli) and CRC-64/XZ (ECMA-182 polynomial), reflected forms.
constexpr uint32_t kCrc32cPoly = 0x82F63B78u;
constexpr uint64_t kCrc64XzPoly = 0xC96C5795D7870F42ull;

constexpr uint32_t crc32c(std::span<const uint8_t> d) {
  return crc_reflected<uint32_t>(d, kCrc32cPoly);
}
constexpr uint64_t crc64xz(std::span<const uint8_t> d) {
  return crc_reflected<uint64_t>(d, kCrc64XzPoly);
}

// The catalogued check values ("123456789") pin the polynomials: a typo in a
// constant would silently change the wire format.
constexpr std::array<uint8_t, 9> kCrcCheckInput{'1', '2', '3', '4', '5', '6', '7', '8', '9'};
static_assert(crc32c(kCrcCheckInput) == 0xE3069283u);
static_assert(crc64xz(kCrcCheckInput) == 0x995DC9BBDF1939FAull);

template <typename T>
constexpr void put_big_endian(uint8_t* out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i)
    out[i] = static_cast<uint8_t>(value >> (CHAR_BIT * (sizeof(T) - 1 - i)));
}

template <typename T>
constexpr T get_big_endian(const uint8_t* in) {
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i) value = static_cast<T>(value << CHAR_BIT | in[i]);
  return value;
}

// `out` has room for at least kHeaderSize bytes.
void write_header(uint8_t* out, uint8_t kind, Tag tag, Epoch epoch) {
  out[kOffMagic] = kMagic;
  out[kOffFormat] = format_byte(kind);
  put_big_endian(out + kOffTag, tag);
  put_big_endian(out + kOffEpoch, epoch);
}

// Checks magic, format and tag; the caller checks the CRC.
std::optional<Decoded> read_header(std::span<const uint8_t> in, uint8_t kind) {
  if (in.size() < kHeaderSize) return std::nullopt;
  if (in[kOffMagic] != kMagic || in[kOffFormat] != format_byte(kind)) return std::nullopt;
  Decoded d{get_big_endian<Tag>(in.data() + kOffTag), get_big_endian<Epoch>(in.data() + kOffEpoch)};
  if (d.tag == kInvalidTag) return std::nullopt;
  return d;
}

}  // namespace

Encoded<kSessionIdSize> encode_session_id(Tag tag, Epoch epoch,
                                          std::span<const uint8_t, kSessionIdRandomSize> random) {
  Encoded<kSessionIdSize> result;
  if (tag == kInvalidTag) {
    result.error = EncodeError::InvalidTag;
    return result;
  }
  auto& b = result.bytes;
  write_header(b.data(), kKindSessionId, tag, epoch);
  std::copy(random.begin(), random.end(), b.begin() + kOffRandom);
  put_big_endian(b.data() + kSessionIdCheckOffset,
                 crc64xz(std::span(b.data(), kSessionIdCheckOffset)));
  return result;
}

Encoded<kSessionIdSize> encode_session_id(Tag tag, Epoch epoch, const RandomSource& random) {
  if (tag == kInvalidTag) return {EncodeError::InvalidTag, {}};
  std::array<uint8_t, kSessionIdRandomSize> r{};
  if (!random || !random(r)) return {EncodeError::RandomFailed, {}};
  return encode_session_id(tag, epoch, r);
}

Encoded<kKeyNameSize> encode_key_name(Tag tag, Epoch epoch,
                                      std::span<const uint8_t, kKeyNameRandomSize> random) {
  Encoded<kKeyNameSize> result;
  if (tag == kInvalidTag) {
    result.error = EncodeError::InvalidTag;
    return result;
  }
  auto& b = result.bytes;
  write_header(b.data(), kKindKeyName, tag, epoch);
  std::copy(random.begin(), random.end(), b.begin() + kOffRandom);
  put_big_endian(b.data() + kKeyNameCheckOffset, crc32c(std::span(b.data(), kKeyNameCheckOffset)));
  return result;
}

Encoded<kKeyNameSize> encode_key_name(Tag tag, Epoch epoch, const RandomSource& random) {
  if (tag == kInvalidTag) return {EncodeError::InvalidTag, {}};
  std::array<uint8_t, kKeyNameRandomSize> r{};
  if (!random || !random(r)) return {EncodeError::RandomFailed, {}};
  return encode_key_name(tag, epoch, r);
}

std::optional<Decoded> decode_session_id(std::span<const uint8_t> session_id) {
  if (session_id.size() != kSessionIdSize) return std::nullopt;
  auto d = read_header(session_id, kKindSessionId);
  if (!d) return std::nullopt;
  if (get_big_endian<uint64_t>(session_id.data() + kSessionIdCheckOffset) !=
      crc64xz(session_id.first(kSessionIdCheckOffset)))
    return std::nullopt;
  return d;
}

std::optional<Decoded> decode_key_name(std::span<const uint8_t> key_name) {
  if (key_name.size() != kKeyNameSize) return std::nullopt;
  auto d = read_header(key_name, kKindKeyName);
  if (!d) return std::nullopt;
  if (get_big_endian<uint32_t>(key_name.data() + kKeyNameCheckOffset) !=
      crc32c(key_name.first(kKeyNameCheckOffset)))
    return std::nullopt;
  return d;
}

std::optional<Decoded> decode_ticket(std::span<const uint8_t> ticket) {
  if (ticket.size() < kKeyNameSize) return std::nullopt;
  return decode_key_name(ticket.first(kKeyNameSize));
}

}  // namespace edgepin::nodetag
