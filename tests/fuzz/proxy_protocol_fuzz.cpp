// Fuzz target for the PROXY protocol decoder. The input is what a
// connection delivers. Aborts when:
// - decoding it whole, byte by byte, or at input-derived split points gives
//   different answers (status, error, error offset, consumed, header);
// - a Done claims more bytes than it was given;
// - the version-restricted modes disagree with autodetection;
// - a decoded header does not encode, or its encoding does not decode back
//   to the same header.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "proxy_protocol.h"

using namespace edgepin::proxy;
using edgepin::ParseStatus;

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "proxy_protocol fuzz: %s\n", what);
  std::abort();
}

bool same(const DecodeResult& a, const DecodeResult& b) {
  if (a.status != b.status) return false;
  if (a.status == ParseStatus::Error) return a.error == b.error && a.error_offset == b.error_offset;
  if (a.status == ParseStatus::Done) return a.consumed == b.consumed && a.header == b.header;
  return true;
}

// Feeds prefixes ending at each cut; the first non-NeedMore answer wins.
template <typename NextCut>
DecodeResult in_pieces(std::span<const uint8_t> in, Accept accept, NextCut next_cut) {
  DecodeResult r;
  size_t n = 0;
  while (n < in.size()) {
    n = next_cut(n);
    r = decode(in.first(n), accept);
    if (r.status != ParseStatus::NeedMore) return r;
  }
  return r;
}

void check_splits(std::span<const uint8_t> in, Accept accept, const DecodeResult& whole) {
  const DecodeResult bytewise = in_pieces(in, accept, [](size_t n) { return n + 1; });
  if (!same(whole, bytewise)) fail("whole and byte-by-byte differ");
  // Split points derived from the input itself, so a corpus file replays
  // the same way every time.
  uint32_t h = 2166136261u;
  for (uint8_t b : in) h = (h ^ b) * 16777619u;
  const size_t size = in.size();
  const DecodeResult split = in_pieces(in, accept, [&h, size](size_t n) {
    h = h * 1103515245u + 12345u;
    const size_t step = 1 + (h >> 16) % 24;
    return std::min(size, n + step);
  });
  if (!same(whole, split)) fail("whole and split differ");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> in(data, size);

  const DecodeResult any = decode(in, Accept::Any);
  check_splits(in, Accept::Any, any);
  if (any.status == ParseStatus::Done && (any.consumed == 0 || any.consumed > size))
    fail("bad consumed");

  for (Accept only : {Accept::V1Only, Accept::V2Only}) {
    const DecodeResult r = decode(in, only);
    check_splits(in, only, r);
    const bool is_v1 = size > 0 && in[0] == 'P';
    const bool is_v2 = size > 0 && in[0] == 0x0D;
    const bool wanted = (only == Accept::V1Only && is_v1) || (only == Accept::V2Only && is_v2);
    if (wanted) {
      if (!same(r, any)) fail("restricted mode differs from autodetection");
    } else if (is_v1 || is_v2) {
      if (r.status != ParseStatus::Error || r.error != Error::VersionNotAccepted)
        fail("other version accepted");
    } else if (!same(r, any)) {
      fail("restricted mode differs on a non-PROXY input");
    }
  }

  if (any.status == ParseStatus::Done) {
    const EncodeResult e = encode(any.header);
    if (!e.ok()) fail("a decoded header does not encode");
    const DecodeResult back = decode(e.bytes);
    if (back.status != ParseStatus::Done) fail("an encoded header does not decode");
    if (back.consumed != e.bytes.size()) fail("an encoded header decodes to another size");
    if (!(back.header == any.header)) fail("encode/decode round trip changed the header");
  }
  return 0;
}
