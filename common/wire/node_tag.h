#pragma once
// Node tags inside TLS resumption data.
//
// The node-proxy chooses the bytes of its TLS 1.2 session IDs
// (SSL_CTX_set_generate_session_id) and the 16-byte key_name that starts
// every ticket it issues (SSL_CTX_set_tlsext_ticket_key_evp_cb; the TLS 1.2
// SessionTicket and the TLS 1.3 pre_shared_key identity both begin with it).
// It writes its node tag into both, so that the lb, which holds no keys, can
// read the tag from a resuming ClientHello and route the client back to the
// node that can resume it, with no table.
//
// WIRE CONTRACT, shared by edgepin-lb and edgepin-node-proxy. Changing a byte
// here needs a new format version, or a rolling upgrade misroutes clients.
// Multi-byte integers are big-endian.
//
// Session ID, 32 bytes (kSessionIdSize):
//   | offset | size | field                                                 |
//   |--------|------|-------------------------------------------------------|
//   |      0 |    1 | magic 0xE9 (kMagic)                                   |
//   |      1 |    1 | format: version 1 (high nibble), kind 1 (low nibble)  |
//   |      2 |    2 | node tag, 1..65535 (0 is reserved, never issued)      |
//   |      4 |    4 | epoch (the node's current ticket key epoch)           |
//   |      8 |   16 | random (RAND_bytes)                                   |
//   |     24 |    8 | check: CRC-64/XZ over bytes 0..23                     |
//
// Ticket key name, 16 bytes (kKeyNameSize), the first 16 bytes of every
// TLS 1.2 ticket and TLS 1.3 PSK identity the node issues:
//   | offset | size | field                                                 |
//   |--------|------|-------------------------------------------------------|
//   |      0 |    1 | magic 0xE9 (kMagic)                                   |
//   |      1 |    1 | format: version 1 (high nibble), kind 2 (low nibble)  |
//   |      2 |    2 | node tag, 1..65535                                    |
//   |      4 |    4 | key epoch                                             |
//   |      8 |    4 | random (RAND_bytes), tells keys of one epoch apart    |
//   |     12 |    4 | check: CRC-32C over bytes 0..11                       |
//
// Why a keyless check value: the lb sees resumption data from any server and
// any client (other TLS stacks, stale sessions, garbage). The check only
// guards against accidents, not forgery: a client that forges a tag merely
// picks its own backend, which it could do by resuming a real session anyway.
// False positives for uniformly random input (magic and format byte must
// match, 2^-16, and the check must match):
//   key name   : 2^-16 * 2^-32 = 2^-48   (the check alone: 2^-32)
//   session ID : 2^-16 * 2^-64 = 2^-80   (the check alone: 2^-64)
// A CRC, unlike a truncated hash, also *guarantees* that every 1- and 2-bit
// corruption of a value this codec made is rejected, so corrupt data never
// decodes to another node's tag.
//
// Kinds differ so that a key name is never read as a session ID prefix or the
// other way round.
//
// Key-name uniqueness: the node looks its ticket keys up by the full 16-byte
// name. (tag, epoch) plus 32 random bits makes a clash between two keys of
// one node and epoch 2^-32 per pair; the node should still compare a new name
// with the keys it holds and draw again on a clash.
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>

namespace edgepin::nodetag {

inline constexpr size_t kSessionIdSize = 32;
inline constexpr size_t kKeyNameSize = 16;
inline constexpr size_t kSessionIdRandomSize = 16;
inline constexpr size_t kKeyNameRandomSize = 4;

inline constexpr uint8_t kMagic = 0xE9;
inline constexpr uint8_t kFormatVersion = 1;
inline constexpr uint8_t kKindSessionId = 1;
inline constexpr uint8_t kKindKeyName = 2;
// Tag 0 means "no node" in configs and logs; it is never written.
inline constexpr uint16_t kInvalidTag = 0;

using Tag = uint16_t;
using Epoch = uint32_t;

// What a tagged value carries besides its random bytes.
struct Decoded {
  Tag tag = kInvalidTag;
  Epoch epoch = 0;
  bool operator==(const Decoded&) const = default;
};

#define EDGEPIN_NODETAG_ENCODE_ERRORS(X)                   \
  X(None, "none")                                          \
  X(InvalidTag, "invalid_tag")     /* tag 0 is reserved */ \
  X(RandomFailed, "random_failed") /* the random source reported failure */

enum class EncodeError : uint8_t {
#define EDGEPIN_X(name, text) name,
  EDGEPIN_NODETAG_ENCODE_ERRORS(EDGEPIN_X)
#undef EDGEPIN_X
};

constexpr std::string_view to_string(EncodeError e) {
  switch (e) {
#define EDGEPIN_X(name, text) \
  case EncodeError::name:     \
    return text;
    EDGEPIN_NODETAG_ENCODE_ERRORS(EDGEPIN_X)
#undef EDGEPIN_X
  }
  return "?";
}

// An encoded value, or why there is none. `bytes` is all zero unless ok().
template <size_t N>
struct Encoded {
  EncodeError error = EncodeError::None;
  std::array<uint8_t, N> bytes{};
  bool ok() const { return error == EncodeError::None; }
};

// Fills `out` completely with unpredictable bytes; returns false on failure.
using RandomSource = std::function<bool(std::span<uint8_t> out)>;

// The production source is tls::openssl_random (tls/random.h): this
// codec stays free of OpenSSL so the wire library needs only the standard
// library.

// --- encoding (node-proxy) ---

// Builds a session ID from caller-supplied random bytes (deterministic).
// Returns InvalidTag for tag 0, otherwise the 32 bytes.
Encoded<kSessionIdSize> encode_session_id(Tag tag, Epoch epoch,
                                          std::span<const uint8_t, kSessionIdRandomSize> random);

// Builds a session ID, drawing its random bytes from `random`. Returns InvalidTag for tag 0,
// RandomFailed if the source fails, otherwise the 32 bytes.
Encoded<kSessionIdSize> encode_session_id(Tag tag, Epoch epoch, const RandomSource& random);

// Builds a ticket key name from caller-supplied random bytes. Returns
// InvalidTag for tag 0, otherwise the 16 bytes.
Encoded<kKeyNameSize> encode_key_name(Tag tag, Epoch epoch,
                                      std::span<const uint8_t, kKeyNameRandomSize> random);

// Builds a ticket key name, drawing its random bytes from `random`. Returns
// InvalidTag for tag 0, RandomFailed if the source fails, otherwise the bytes.
Encoded<kKeyNameSize> encode_key_name(Tag tag, Epoch epoch, const RandomSource& random);

// --- decoding (lb, and the node for its own logs) ---
// All decoders are pure and total: any input, any length, never reads past
// the span. They return std::nullopt for anything this codec did not make.

// `session_id` is a ClientHello's or ServerHello's session ID. Returns the
// tag and epoch if it is exactly 32 bytes with our magic, format, session-ID
// kind, a non-zero tag and a matching check; std::nullopt otherwise
// (including the empty session ID and every TLS 1.3 legacy_session_id).
std::optional<Decoded> decode_session_id(std::span<const uint8_t> session_id);

// `key_name` must be exactly 16 bytes. Returns the tag and epoch if it is a
// key name this codec made; std::nullopt otherwise.
std::optional<Decoded> decode_key_name(std::span<const uint8_t> key_name);

// `ticket` is a TLS 1.2 SessionTicket extension body or a TLS 1.3 PSK
// identity. Reads its first 16 bytes as a key name. Returns std::nullopt if
// it is shorter than 16 bytes or its key name is not one of ours.
std::optional<Decoded> decode_ticket(std::span<const uint8_t> ticket);

}  // namespace edgepin::nodetag
