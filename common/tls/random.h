#pragma once
// The CSPRNG behind node-tagged session IDs and ticket key names. It lives
// in the tls library so that the wire codecs (wire/node_tag.h) stay free of
// OpenSSL and take their randomness as a parameter.
#include <cstdint>
#include <span>

namespace edgepin::tls {

// Fills `out` from OpenSSL's default CSPRNG (RAND_bytes); false when it
// fails or `out` is larger than RAND_bytes accepts. Thread-safe.
bool openssl_random(std::span<uint8_t> out);

}  // namespace edgepin::tls
