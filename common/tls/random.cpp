#include "random.h"

#include <openssl/rand.h>

#include <climits>

namespace edgepin::tls {

bool openssl_random(std::span<uint8_t> out) {
  if (out.size() > static_cast<size_t>(INT_MAX)) return false;
  return RAND_bytes(out.data(), static_cast<int>(out.size())) == 1;
}

}  // namespace edgepin::tls
