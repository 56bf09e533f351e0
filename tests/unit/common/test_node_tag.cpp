// Node tag codec: the wire contract between the node-proxy (encoder) and the
// lb (decoder). The property that matters: the lb never reads a wrong tag
// from data a node made, and almost never reads a tag from anything else.
#include "node_tag.h"
#include "random.h"

#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace edgepin::nodetag;

namespace {

// Deterministic "random" bytes so that failures reproduce.
struct SeededRandom {
  std::mt19937_64 rng;
  explicit SeededRandom(uint64_t seed) : rng(seed) {}
  bool operator()(std::span<uint8_t> out) {
    for (auto& b : out) b = static_cast<uint8_t>(rng());
    return true;
  }
};

RandomSource seeded(uint64_t seed) {
  auto state = std::make_shared<SeededRandom>(seed);
  return [state](std::span<uint8_t> out) { return (*state)(out); };
}

// A spread of tags and epochs including the edges of their ranges.
const std::vector<Tag> kTags = {1, 2, 3, 7, 255, 256, 4096, 32767, 32768, 65534, 65535};
const std::vector<Epoch> kEpochs = {0,          1,           2,           1000,
                                    0x7FFFFFFF, 0x80000000u, 0xFFFFFFFEu, 0xFFFFFFFFu};

template <size_t N>
std::vector<uint8_t> to_vector(const std::array<uint8_t, N>& a) {
  return {a.begin(), a.end()};
}

}  // namespace

TEST_CASE("session IDs and key names round-trip for every tag and epoch", "[node_tag]") {
  auto random = seeded(1);
  for (Tag tag : kTags) {
    for (Epoch epoch : kEpochs) {
      auto sid = encode_session_id(tag, epoch, random);
      REQUIRE(sid.ok());
      auto d = decode_session_id(sid.bytes);
      REQUIRE(d);
      CHECK(d->tag == tag);
      CHECK(d->epoch == epoch);

      auto name = encode_key_name(tag, epoch, random);
      REQUIRE(name.ok());
      auto k = decode_key_name(name.bytes);
      REQUIRE(k);
      CHECK(*k == Decoded{tag, epoch});
      // A ticket or PSK identity is the key name followed by the sealed
      // session: only the first 16 bytes matter.
      std::vector<uint8_t> ticket = to_vector(name.bytes);
      for (int i = 0; i < 200; ++i) ticket.push_back(static_cast<uint8_t>(i * 37));
      CHECK(decode_ticket(ticket) == Decoded{tag, epoch});
      CHECK(decode_ticket(name.bytes) == Decoded{tag, epoch});
    }
  }
  // Every tag, not just the sample: the tag field is read back exactly.
  for (uint32_t tag = 1; tag <= 0xFFFF; ++tag) {
    const std::array<uint8_t, kKeyNameRandomSize> r{0x5A, 0xA5, 0x00, 0xFF};
    auto name = encode_key_name(static_cast<Tag>(tag), tag * 7919u, r);
    REQUIRE(name.ok());
    auto k = decode_key_name(name.bytes);
    REQUIRE(k);
    REQUIRE(k->tag == tag);
    REQUIRE(k->epoch == tag * 7919u);
  }
}

TEST_CASE("the documented byte layout is what goes on the wire", "[node_tag]") {
  std::array<uint8_t, kSessionIdRandomSize> sr{};
  for (size_t i = 0; i < sr.size(); ++i) sr[i] = static_cast<uint8_t>(0xA0 + i);
  auto sid = encode_session_id(0x1234, 0x89ABCDEFu, sr);
  REQUIRE(sid.ok());
  const auto& s = sid.bytes;
  CHECK(s[0] == kMagic);
  CHECK(s[1] == 0x11);  // version 1, kind session ID
  CHECK(s[2] == 0x12);
  CHECK(s[3] == 0x34);
  CHECK(s[4] == 0x89);
  CHECK(s[5] == 0xAB);
  CHECK(s[6] == 0xCD);
  CHECK(s[7] == 0xEF);
  for (size_t i = 0; i < sr.size(); ++i) CHECK(s[8 + i] == sr[i]);

  const std::array<uint8_t, kKeyNameRandomSize> kr{1, 2, 3, 4};
  auto name = encode_key_name(0x0102, 7, kr);
  REQUIRE(name.ok());
  const auto& k = name.bytes;
  CHECK(k[0] == kMagic);
  CHECK(k[1] == 0x12);  // version 1, kind key name
  CHECK(k[2] == 0x01);
  CHECK(k[3] == 0x02);
  CHECK(k[4] == 0);
  CHECK(k[7] == 7);
  CHECK(k[8] == 1);
  CHECK(k[11] == 4);
}

TEST_CASE("the check value is a CRC over header and random bytes", "[node_tag]") {
  // Recomputed here independently (bitwise, from the catalogue definition)
  // so that a change to the encoder's check shows up as a contract break.
  auto crc32c = [](std::span<const uint8_t> d) {
    uint32_t c = 0xFFFFFFFFu;
    for (uint8_t b : d) {
      c ^= b;
      for (int i = 0; i < 8; ++i) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
    }
    return ~c;
  };
  auto crc64xz = [](std::span<const uint8_t> d) {
    uint64_t c = ~uint64_t{0};
    for (uint8_t b : d) {
      c ^= b;
      for (int i = 0; i < 8; ++i) c = (c >> 1) ^ (0xC96C5795D7870F42ull & (uint64_t{0} - (c & 1)));
    }
    return ~c;
  };
  auto random = seeded(2);
  for (int i = 0; i < 100; ++i) {
    auto name = encode_key_name(static_cast<Tag>(i + 1), static_cast<Epoch>(i), random);
    REQUIRE(name.ok());
    const uint32_t expect = crc32c(std::span(name.bytes).first(12));
    const auto& k = name.bytes;
    CHECK((uint32_t{k[12]} << 24 | uint32_t{k[13]} << 16 | uint32_t{k[14]} << 8 | k[15]) == expect);

    auto sid = encode_session_id(static_cast<Tag>(i + 1), static_cast<Epoch>(i), random);
    REQUIRE(sid.ok());
    uint64_t stored = 0;
    for (size_t j = 24; j < 32; ++j) stored = stored << 8 | sid.bytes[j];
    CHECK(stored == crc64xz(std::span(sid.bytes).first(24)));
  }
}

TEST_CASE("encoded values are distinct", "[node_tag]") {
  auto random = seeded(3);
  std::set<std::vector<uint8_t>> names;
  std::set<std::vector<uint8_t>> sids;
  constexpr int kPerPair = 20;
  size_t made = 0;
  for (Tag tag : kTags) {
    for (Epoch epoch : kEpochs) {
      for (int i = 0; i < kPerPair; ++i) {
        names.insert(to_vector(encode_key_name(tag, epoch, random).bytes));
        sids.insert(to_vector(encode_session_id(tag, epoch, random).bytes));
        ++made;
      }
    }
  }
  CHECK(names.size() == made);
  CHECK(sids.size() == made);

  // The random part is what keeps names of one (tag, epoch) apart; with the
  // same random bytes, tag and epoch alone must still give distinct names.
  const std::array<uint8_t, kKeyNameRandomSize> fixed{9, 9, 9, 9};
  std::set<std::vector<uint8_t>> by_field;
  for (Tag tag : kTags)
    for (Epoch epoch : kEpochs)
      by_field.insert(to_vector(encode_key_name(tag, epoch, fixed).bytes));
  CHECK(by_field.size() == kTags.size() * kEpochs.size());
}

TEST_CASE("the real RAND_bytes source works and gives fresh values", "[node_tag]") {
  auto a = encode_session_id(42, 1, edgepin::tls::openssl_random);
  auto b = encode_session_id(42, 1, edgepin::tls::openssl_random);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a.bytes != b.bytes);
  CHECK(decode_session_id(a.bytes) == Decoded{42, 1});
  auto k1 = encode_key_name(42, 1, edgepin::tls::openssl_random);
  auto k2 = encode_key_name(42, 1, edgepin::tls::openssl_random);
  REQUIRE(k1.ok());
  REQUIRE(k2.ok());
  CHECK(k1.bytes != k2.bytes);
  CHECK(decode_key_name(k1.bytes) == Decoded{42, 1});
}

TEST_CASE("tag 0 and a failing random source are refused without output", "[node_tag]") {
  const std::array<uint8_t, kSessionIdRandomSize> sr{};
  const std::array<uint8_t, kKeyNameRandomSize> kr{};
  auto s = encode_session_id(kInvalidTag, 5, sr);
  CHECK(s.error == EncodeError::InvalidTag);
  CHECK(s.bytes == std::array<uint8_t, kSessionIdSize>{});
  CHECK(encode_key_name(kInvalidTag, 5, kr).error == EncodeError::InvalidTag);
  CHECK(encode_session_id(kInvalidTag, 5, edgepin::tls::openssl_random).error ==
        EncodeError::InvalidTag);
  CHECK(encode_key_name(kInvalidTag, 5, edgepin::tls::openssl_random).error ==
        EncodeError::InvalidTag);

  RandomSource failing = [](std::span<uint8_t>) { return false; };
  auto f = encode_session_id(9, 5, failing);
  CHECK(f.error == EncodeError::RandomFailed);
  CHECK(f.bytes == std::array<uint8_t, kSessionIdSize>{});
  auto g = encode_key_name(9, 5, failing);
  CHECK(g.error == EncodeError::RandomFailed);
  CHECK(g.bytes == std::array<uint8_t, kKeyNameSize>{});
  CHECK(encode_key_name(9, 5, RandomSource{}).error == EncodeError::RandomFailed);
  CHECK(to_string(EncodeError::RandomFailed) == "random_failed");
  CHECK(to_string(EncodeError::InvalidTag) == "invalid_tag");
}

TEST_CASE("a value whose header says tag 0 is not a tag", "[node_tag]") {
  // Build a well-formed key name for tag 1, then rewrite it as tag 0 with a
  // correct check: the decoder must still refuse it.
  const std::array<uint8_t, kKeyNameRandomSize> kr{1, 2, 3, 4};
  auto name = encode_key_name(1, 0, kr);
  REQUIRE(name.ok());
  auto bytes = name.bytes;
  bytes[3] = 0;
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < 12; ++i) {
    c ^= bytes[i];
    for (int j = 0; j < 8; ++j) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
  }
  c = ~c;
  for (size_t i = 0; i < 4; ++i) bytes[12 + i] = static_cast<uint8_t>(c >> (24 - 8 * i));
  CHECK_FALSE(decode_key_name(bytes));
}

TEST_CASE("random input is almost never taken for a tag", "[node_tag]") {
  // 2^-48 (key name) and 2^-80 (session ID) per input: with 2e5 inputs the
  // chance of any hit is far below 1e-9, so a hit means a broken check.
  std::mt19937_64 rng(4);
  constexpr int kInputs = 200000;
  int hits = 0;
  std::array<uint8_t, 64> buf{};
  for (int i = 0; i < kInputs; ++i) {
    for (auto& b : buf) b = static_cast<uint8_t>(rng());
    hits += decode_session_id(std::span(buf).first(kSessionIdSize)).has_value();
    hits += decode_key_name(std::span(buf).first(kKeyNameSize)).has_value();
    hits += decode_ticket(buf).has_value();
    // The harder case: our magic and format byte in front of random bytes,
    // so only the CRC stands between garbage and a tag.
    buf[0] = kMagic;
    buf[1] = 0x11;
    hits += decode_session_id(std::span(buf).first(kSessionIdSize)).has_value();
    buf[1] = 0x12;
    hits += decode_key_name(std::span(buf).first(kKeyNameSize)).has_value();
    hits += decode_ticket(buf).has_value();
  }
  CHECK(hits == 0);
}

TEST_CASE("every 1- and 2-bit corruption gives no tag, never another tag", "[node_tag]") {
  auto random = seeded(5);
  for (Tag tag : {Tag{1}, Tag{0x8001}, Tag{65535}}) {
    auto sid = encode_session_id(tag, 0x01020304u, random);
    auto name = encode_key_name(tag, 0x01020304u, random);
    REQUIRE(sid.ok());
    REQUIRE(name.ok());

    auto check_flips = [](auto bytes, auto decode) {
      const size_t bits = bytes.size() * 8;
      size_t accepted = 0;
      for (size_t a = 0; a < bits; ++a) {
        auto once = bytes;
        once[a / 8] ^= static_cast<uint8_t>(1u << (a % 8));
        accepted += decode(once).has_value();
        for (size_t b = a + 1; b < bits; ++b) {
          auto twice = once;
          twice[b / 8] ^= static_cast<uint8_t>(1u << (b % 8));
          accepted += decode(twice).has_value();
        }
      }
      return accepted;
    };
    CHECK(check_flips(sid.bytes, [](const auto& b) { return decode_session_id(b); }) == 0);
    CHECK(check_flips(name.bytes, [](const auto& b) { return decode_key_name(b); }) == 0);
  }
}

TEST_CASE("wrong sizes, wrong kinds and other layouts give no tag", "[node_tag]") {
  auto random = seeded(6);
  auto sid = encode_session_id(77, 3, random);
  auto name = encode_key_name(77, 3, random);
  REQUIRE(sid.ok());
  REQUIRE(name.ok());
  const std::vector<uint8_t> s = to_vector(sid.bytes);
  const std::vector<uint8_t> k = to_vector(name.bytes);

  CHECK_FALSE(decode_session_id({}));
  CHECK_FALSE(decode_key_name({}));
  CHECK_FALSE(decode_ticket({}));
  for (size_t n = 0; n < s.size(); ++n) CHECK_FALSE(decode_session_id(std::span(s).first(n)));
  for (size_t n = 0; n < k.size(); ++n) {
    CHECK_FALSE(decode_key_name(std::span(k).first(n)));
    CHECK_FALSE(decode_ticket(std::span(k).first(n)));
  }
  // Oversized: a session ID is at most 32 bytes on the wire, a key name is
  // exactly 16; neither gains a tag from extra bytes.
  auto s_long = s;
  s_long.push_back(0);
  CHECK_FALSE(decode_session_id(s_long));
  auto k_long = k;
  k_long.push_back(0);
  CHECK_FALSE(decode_key_name(k_long));
  CHECK(decode_ticket(k_long) == Decoded{77, 3});

  // Kinds never mix: a key name is not a session ID prefix and vice versa.
  std::vector<uint8_t> name_then_zeros = k;
  name_then_zeros.resize(kSessionIdSize, 0);
  CHECK_FALSE(decode_session_id(name_then_zeros));
  CHECK_FALSE(decode_key_name(std::span(s).first(kKeyNameSize)));
  CHECK_FALSE(decode_ticket(s));

  // A session ID moved off its alignment (e.g. a parser off by one).
  std::vector<uint8_t> shifted(s.begin() + 1, s.end());
  shifted.push_back(0);
  CHECK_FALSE(decode_session_id(shifted));

  // Typical foreign values: all zeros, all ones, OpenSSL-style random IDs.
  CHECK_FALSE(decode_session_id(std::vector<uint8_t>(32, 0)));
  CHECK_FALSE(decode_session_id(std::vector<uint8_t>(32, 0xFF)));
  CHECK_FALSE(decode_key_name(std::vector<uint8_t>(16, 0)));
  CHECK_FALSE(decode_key_name(std::vector<uint8_t>(16, 0xFF)));

  // A future format version must not be read with today's layout.
  auto future = k;
  future[1] = 0x22;
  CHECK_FALSE(decode_key_name(future));
}

TEST_CASE("the seed corpus decodes as its names say", "[node_tag]") {
  // What each seed is, as the lb would read it: a session ID, or a ticket
  // (which also covers a bare key name).
  struct Expect {
    std::optional<Decoded> session_id;
    std::optional<Decoded> ticket;
  };
  const std::map<std::string, Expect> expected = {
      {"session_id_tag1_epoch0", {Decoded{1, 0}, std::nullopt}},
      {"session_id_tag65535_epoch_max", {Decoded{65535, 0xFFFFFFFFu}, std::nullopt}},
      {"key_name_tag3_epoch7", {std::nullopt, Decoded{3, 7}}},
      {"ticket_key_name_then_sealed_session", {std::nullopt, Decoded{3, 7}}},
      {"psk_identity_tag258", {std::nullopt, Decoded{258, 42}}},
      {"session_id_tag0_forged", {}},
      {"key_name_tag0_forged", {}},
      {"session_id_future_version", {}},
      {"key_name_as_session_id_kind", {}},
      {"session_id_bad_crc", {}},
      {"session_id_31_bytes", {}},
      {"session_id_33_bytes", {}},
      {"key_name_15_bytes", {}},
      {"zeros_32", {}},
      {"ones_16", {}},
      {"empty", {}},
      {"openssl_style_random_32", {}},
      {"encode_fields_tag1", {}},
      {"encode_fields_tag0", {}},
  };
  const std::filesystem::path dir =
      std::filesystem::path(EDGEPIN_SOURCE_DIR) / "tests/fuzz/corpus/node_tag";
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    INFO("corpus file " << name);
    std::ifstream f(entry.path(), std::ios::binary);
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)),
                                     std::istreambuf_iterator<char>());
    // Inputs a fuzzing campaign kept are named by their SHA-1 and have no
    // expectation: decoding them twice must agree (and not crash).
    if (name.size() == 40 && name.find_first_not_of("0123456789abcdef") == name.npos) {
      CHECK(decode_session_id(bytes) == decode_session_id(bytes));
      CHECK(decode_ticket(bytes) == decode_ticket(bytes));
      continue;
    }
    auto it = expected.find(name);
    REQUIRE(it != expected.end());  // a new seed needs its expectation here
    CHECK(decode_session_id(bytes) == it->second.session_id);
    CHECK(decode_ticket(bytes) == it->second.ticket);
    ++files;
  }
  CHECK(files == expected.size());
}
