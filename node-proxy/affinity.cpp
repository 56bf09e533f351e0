#include "affinity.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>

namespace edgepin::nodeproxy::affinity {

const char* to_string(Outcome o) {
  switch (o) {
#define X(name, str)  \
  case Outcome::name: \
    return str;
    EDGEPIN_AFFINITY_OUTCOMES(X)
#undef X
  }
  return "?";
}

namespace {

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
constexpr std::string_view kMacLabel = "edgepin-affinity-v1";
// Nodes' clocks may disagree a little: a cookie "from the future" by less
// than this is accepted.
constexpr int64_t kMaxClockSkewSeconds = 300;

// base64url without padding (RFC 4648 section 5): cookie-safe, no quoting.
std::string b64url_encode(std::span<const uint8_t> in) {
  std::string out;
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = in[i] << 16 | in[i + 1] << 8 | in[i + 2];
    for (int s = 18; s >= 0; s -= 6) out += kB64[(v >> s) & 63];
  }
  size_t rest = in.size() - i;
  if (rest == 1) {
    uint32_t v = in[i] << 16;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
  } else if (rest == 2) {
    uint32_t v = in[i] << 16 | in[i + 1] << 8;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
  }
  return out;
}

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

// Decodes exactly kRawBytes; false for any other length or a foreign
// character (including padding, which encode() never writes).
bool b64url_decode_raw(std::string_view in, std::array<uint8_t, kRawBytes>& out) {
  constexpr size_t kChars = (kRawBytes * 8 + 5) / 6;
  if (in.size() != kChars) return false;
  uint32_t acc = 0;
  int bits = 0;
  size_t n = 0;
  for (char c : in) {
    int v = b64_value(c);
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (n < kRawBytes) out[n++] = static_cast<uint8_t>(acc >> bits);
    }
  }
  // Leftover bits must be zero, so each value has exactly one encoding.
  return n == kRawBytes && (acc & ((1u << bits) - 1)) == 0;
}

void put_u16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

CookieCodec::CookieCodec(std::span<const uint8_t> key, std::string cluster_name)
    : key_(key.begin(), key.end()), cluster_name_(std::move(cluster_name)) {}

std::vector<uint8_t> CookieCodec::mac(std::span<const uint8_t> signed_bytes) const {
  std::vector<uint8_t> msg(kMacLabel.begin(), kMacLabel.end());
  msg.push_back(0);
  msg.insert(msg.end(), cluster_name_.begin(), cluster_name_.end());
  msg.push_back(0);
  msg.insert(msg.end(), signed_bytes.begin(), signed_bytes.end());
  std::array<uint8_t, EVP_MAX_MD_SIZE> out{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()), msg.data(), msg.size(), out.data(),
       &len);
  return {out.begin(), out.begin() + kMacBytes};
}

std::string CookieCodec::encode(uint16_t tag, uint32_t issued_at) const {
  std::array<uint8_t, kRawBytes> raw{};
  raw[0] = kCookieVersion;
  put_u16(&raw[1], tag);
  put_u32(&raw[3], issued_at);
  auto m = mac({raw.data(), 7});
  std::copy(m.begin(), m.end(), raw.begin() + 7);
  return b64url_encode(raw);
}

std::optional<CookieCodec::Decoded> CookieCodec::decode(
    std::string_view value, uint32_t now, std::optional<std::chrono::seconds> max_age) const {
  std::array<uint8_t, kRawBytes> raw{};
  if (!b64url_decode_raw(value, raw) || raw[0] != kCookieVersion) return std::nullopt;
  auto m = mac({raw.data(), 7});
  if (CRYPTO_memcmp(m.data(), raw.data() + 7, kMacBytes) != 0) return std::nullopt;
  Decoded d{static_cast<uint16_t>(raw[1] << 8 | raw[2]),
            static_cast<uint32_t>(raw[3]) << 24 | static_cast<uint32_t>(raw[4]) << 16 |
                static_cast<uint32_t>(raw[5]) << 8 | raw[6]};
  int64_t age = static_cast<int64_t>(now) - static_cast<int64_t>(d.issued_at);
  if (max_age && (age < -kMaxClockSkewSeconds || age > max_age->count())) {
    // Too old, or from the future beyond a clock skew of five minutes.
    return std::nullopt;
  }
  return d;
}

std::optional<std::string_view> find_cookie(const http1::FieldList& fields, std::string_view name) {
  for (const http1::Field& f : fields) {
    if (!http1::iequals(f.name, "cookie")) continue;
    std::string_view rest = f.value;
    while (!rest.empty()) {
      size_t semi = rest.find(';');
      std::string_view pair = trim(rest.substr(0, semi));
      rest = semi == std::string_view::npos ? std::string_view{} : rest.substr(semi + 1);
      size_t eq = pair.find('=');
      if (eq == std::string_view::npos) continue;
      if (trim(pair.substr(0, eq)) != name) continue;  // cookie names are case-sensitive
      std::string_view value = trim(pair.substr(eq + 1));
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
        value = value.substr(1, value.size() - 2);
      return value;
    }
  }
  return std::nullopt;
}

std::optional<std::string_view> jvm_route(std::string_view session_id) {
  size_t dot = session_id.rfind('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 >= session_id.size())
    return std::nullopt;
  return session_id.substr(dot + 1);
}

bool response_sets_cookie(const http1::FieldList& fields, std::string_view session_cookie) {
  for (const http1::Field& f : fields) {
    if (!http1::iequals(f.name, "set-cookie")) continue;
    std::string_view pair = trim(f.value);
    pair = pair.substr(0, pair.find(';'));
    size_t eq = pair.find('=');
    if (eq == std::string_view::npos || trim(pair.substr(0, eq)) != session_cookie) continue;
    std::string_view value = trim(pair.substr(eq + 1));
    if (!value.empty() && value != "\"\"") return true;
  }
  return false;
}

std::string set_cookie_value(const config::AffinityConfig& cfg, std::string_view value,
                             bool over_tls) {
  std::string out = cfg.cookie_name + "=" + std::string(value) + "; Path=" + cfg.path;
  if (!cfg.domain.empty()) out += "; Domain=" + cfg.domain;
  if (cfg.max_age) out += "; Max-Age=" + std::to_string(cfg.max_age->count());
  bool secure = cfg.secure == config::CookieSecure::Always ||
                (cfg.secure == config::CookieSecure::Auto && over_tls);
  if (secure) out += "; Secure";
  if (cfg.http_only) out += "; HttpOnly";
  switch (cfg.same_site) {
    case config::SameSite::Lax:
      out += "; SameSite=Lax";
      break;
    case config::SameSite::Strict:
      out += "; SameSite=Strict";
      break;
    case config::SameSite::None:
      out += "; SameSite=None";
      break;
  }
  return out;
}

}  // namespace edgepin::nodeproxy::affinity
