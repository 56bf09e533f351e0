// Fuzz target for the node tag codec. Aborts when:
// - a ticket decodes differently from its first 16 bytes (the lb may see a
//   ticket whole or only its key name);
// - a value decodes but is not exactly what the encoder makes of the decoded
//   tag, epoch and the value's own random bytes (decoding must accept only
//   values the encoder can produce, and never tag 0);
// - a value encoded from fuzzer-chosen fields does not decode back to them,
//   or still decodes after a fuzzer-chosen 1- or 2-bit corruption.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "node_tag.h"

using namespace edgepin::nodetag;

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "node_tag fuzz: %s\n", what);
  std::abort();
}

Tag read_tag(std::span<const uint8_t> in) { return static_cast<Tag>(in[0] << 8 | in[1]); }
Epoch read_epoch(std::span<const uint8_t> in) {
  return static_cast<Epoch>(in[0]) << 24 | static_cast<Epoch>(in[1]) << 16 |
         static_cast<Epoch>(in[2]) << 8 | in[3];
}

template <size_t N, typename Decode>
void check_flips(std::array<uint8_t, N> bytes, std::span<const uint8_t> choice, Decode decode) {
  if (choice.size() < 2) return;
  const size_t bits = N * 8;
  const size_t a = choice[0] % bits;
  const size_t b = choice[1] % bits;
  bytes[a / 8] ^= static_cast<uint8_t>(1u << (a % 8));
  if (decode(bytes)) fail("a 1-bit corruption still decodes");
  if (b != a) {
    bytes[b / 8] ^= static_cast<uint8_t>(1u << (b % 8));
    if (decode(bytes)) fail("a 2-bit corruption still decodes");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> in(data, size);

  const auto ticket = decode_ticket(in);
  if (size >= kKeyNameSize) {
    if (ticket != decode_key_name(in.first(kKeyNameSize))) fail("ticket and its key name disagree");
  } else if (ticket) {
    fail("a ticket shorter than a key name decoded");
  }

  if (auto d = decode_session_id(in)) {
    if (d->tag == kInvalidTag) fail("session ID decoded to tag 0");
    auto again = encode_session_id(d->tag, d->epoch, in.subspan<8, kSessionIdRandomSize>());
    if (!again.ok() || !std::equal(again.bytes.begin(), again.bytes.end(), in.begin()))
      fail("decoded session ID is not what the encoder makes");
  }
  if (auto d = decode_key_name(in)) {
    if (d->tag == kInvalidTag) fail("key name decoded to tag 0");
    auto again = encode_key_name(d->tag, d->epoch, in.subspan<8, kKeyNameRandomSize>());
    if (!again.ok() || !std::equal(again.bytes.begin(), again.bytes.end(), in.begin()))
      fail("decoded key name is not what the encoder makes");
  }

  // Encode from fuzzer-chosen fields: tag (2), epoch (4), random (16), then
  // two bytes choosing bits to flip.
  constexpr size_t kFields = 2 + 4 + kSessionIdRandomSize;
  if (size >= kFields) {
    const Tag tag = read_tag(in);
    const Epoch epoch = read_epoch(in.subspan(2));
    const auto sid = encode_session_id(tag, epoch, in.subspan<6, kSessionIdRandomSize>());
    const auto name = encode_key_name(tag, epoch, in.subspan<6, kKeyNameRandomSize>());
    if (tag == kInvalidTag) {
      if (sid.ok() || name.ok()) fail("tag 0 was encoded");
      return 0;
    }
    if (!sid.ok() || !name.ok()) fail("a valid tag was refused");
    if (decode_session_id(sid.bytes) != Decoded{tag, epoch}) fail("session ID round trip");
    if (decode_key_name(name.bytes) != Decoded{tag, epoch}) fail("key name round trip");
    if (decode_session_id(std::span(name.bytes)) ||
        decode_key_name(std::span(sid.bytes).first(kKeyNameSize)))
      fail("a value of one kind decoded as the other");
    const auto choice = in.subspan(kFields);
    check_flips(sid.bytes, choice, [](const auto& b) { return decode_session_id(b).has_value(); });
    check_flips(name.bytes, choice, [](const auto& b) { return decode_key_name(b).has_value(); });
  }
  return 0;
}
