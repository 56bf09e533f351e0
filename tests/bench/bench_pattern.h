#pragma once
// The byte stream that edgepin-bench-server sends for `SOURCE N` and that
// edgepin-bench-client sends as ECHO payload, and how either side checks
// what it received. Shared by both so every benchmark run also proves that
// the balancer relayed the bytes exactly: nothing lost, duplicated or
// reordered.
//
// Byte `o` of the stream is byte (o mod 8) of the little-endian 64-bit word
// (o div 8 + 1) * kPatternMultiplier. Every aligned 8-byte word of a stream
// up to 2^64 bytes is distinct (an odd multiplier is a bijection mod 2^64),
// so a chunk delivered at the wrong offset never matches, unlike a short
// repeating block. Generating it costs one multiply per 8 bytes, far below
// the copy the relay itself does, so it does not distort the measurement.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace edgepin::bench {

inline constexpr uint64_t kPatternMultiplier = 0x9E3779B97F4A7C15ULL;  // odd
inline constexpr size_t kPatternWord = sizeof(uint64_t);

// The 64-bit word that covers stream bytes [8 * index, 8 * index + 8).
constexpr uint64_t pattern_word(uint64_t index) { return (index + 1) * kPatternMultiplier; }

// Writes stream bytes [offset, offset + out.size()) into `out`.
inline void fill_pattern(uint64_t offset, std::span<uint8_t> out) {
  size_t pos = 0;
  // Unaligned head: byte by byte up to the next word boundary.
  while (pos < out.size() && (offset + pos) % kPatternWord != 0) {
    const uint64_t o = offset + pos;
    out[pos] = static_cast<uint8_t>(pattern_word(o / kPatternWord) >> (8 * (o % kPatternWord)));
    ++pos;
  }
  // Whole words. memcpy of a host-order word is the little-endian layout on
  // the x86-64 and arm64 hosts this runs on; the static_assert keeps it so.
  static_assert(std::endian::native == std::endian::little, "pattern assumes a little-endian host");
  uint64_t index = (offset + pos) / kPatternWord;
  for (; pos + kPatternWord <= out.size(); pos += kPatternWord, ++index) {
    const uint64_t word = pattern_word(index);
    std::memcpy(out.data() + pos, &word, kPatternWord);
  }
  // Tail.
  for (; pos < out.size(); ++pos) {
    const uint64_t o = offset + pos;
    out[pos] = static_cast<uint8_t>(pattern_word(o / kPatternWord) >> (8 * (o % kPatternWord)));
  }
}

// Compares `got` with stream bytes [offset, offset + got.size()), using
// `scratch` to hold the expected bytes a piece at a time. Returns
// got.size() if every byte matches, else the index in `got` of the first
// wrong byte (0 if `scratch` is empty and `got` is not: nothing was checked).
inline size_t first_pattern_mismatch(uint64_t offset, std::span<const uint8_t> got,
                                     std::span<uint8_t> scratch) {
  if (scratch.empty()) return 0;
  size_t done = 0;
  while (done < got.size()) {
    const size_t n = std::min(scratch.size(), got.size() - done);
    fill_pattern(offset + done, scratch.first(n));
    if (std::memcmp(scratch.data(), got.data() + done, n) != 0) {
      for (size_t i = 0; i < n; ++i) {
        if (scratch[i] != got[done + i]) return done + i;
      }
    }
    done += n;
  }
  return got.size();
}

}  // namespace edgepin::bench
