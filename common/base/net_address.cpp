#include "net_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace edgepin {
namespace {

constexpr size_t kV4Bytes = 4;
constexpr size_t kV6Bytes = 16;
constexpr uint8_t kV4Bits = 32;
constexpr uint8_t kV6Bits = 128;
// Longest literal inet_pton could accept, plus the terminating NUL: no
// valid input is cut by the copy into a C string.
constexpr size_t kMaxLiteral = INET6_ADDRSTRLEN;

void set_error(std::string* error, std::string message) {
  if (error) *error = std::move(message);
}

// Parses a decimal without sign or leading '+'; false on anything else or
// overflow of `max`.
bool parse_decimal(std::string_view text, uint32_t max, uint32_t& out) {
  if (text.empty() || text.size() > 10) return false;
  if (!std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  uint64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || value > max) return false;
  out = static_cast<uint32_t>(value);
  return true;
}

}  // namespace

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  if (text.empty() || text.size() >= kMaxLiteral) return std::nullopt;
  char buf[kMaxLiteral];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  IpAddress ip;
  if (text.find(':') == std::string_view::npos) {
    if (inet_pton(AF_INET, buf, ip.bytes_.data()) != 1) return std::nullopt;
    ip.family_ = Family::V4;
  } else {
    if (inet_pton(AF_INET6, buf, ip.bytes_.data()) != 1) return std::nullopt;
    ip.family_ = Family::V6;
  }
  return ip;
}

IpAddress IpAddress::from_v4(std::span<const uint8_t, 4> bytes) {
  IpAddress ip;
  std::copy(bytes.begin(), bytes.end(), ip.bytes_.begin());
  return ip;
}

IpAddress IpAddress::from_v6(std::span<const uint8_t, 16> bytes) {
  IpAddress ip;
  ip.family_ = Family::V6;
  std::copy(bytes.begin(), bytes.end(), ip.bytes_.begin());
  return ip;
}

IpAddress IpAddress::any_v6() {
  IpAddress ip;
  ip.family_ = Family::V6;
  return ip;
}

IpAddress IpAddress::loopback_v4() {
  IpAddress ip;
  ip.bytes_[0] = 127;
  ip.bytes_[3] = 1;
  return ip;
}

IpAddress IpAddress::loopback_v6() {
  IpAddress ip = any_v6();
  ip.bytes_[15] = 1;
  return ip;
}

int IpAddress::address_family() const { return is_v4() ? AF_INET : AF_INET6; }

std::span<const uint8_t> IpAddress::bytes() const {
  return {bytes_.data(), is_v4() ? kV4Bytes : kV6Bytes};
}

bool IpAddress::is_unspecified() const {
  auto b = bytes();
  return std::all_of(b.begin(), b.end(), [](uint8_t x) { return x == 0; });
}

bool IpAddress::is_multicast() const {
  return is_v4() ? (bytes_[0] & 0xF0) == 0xE0 : bytes_[0] == 0xFF;
}

bool IpAddress::is_v4_mapped() const {
  if (is_v4()) return false;
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  return std::equal(std::begin(kPrefix), std::end(kPrefix), bytes_.begin());
}

IpAddress IpAddress::unmapped() const {
  if (!is_v4_mapped()) return *this;
  IpAddress v4;
  std::copy(bytes_.begin() + 12, bytes_.begin() + 16, v4.bytes_.begin());
  return v4;
}

std::string IpAddress::to_string() const {
  char buf[INET6_ADDRSTRLEN];
  if (!inet_ntop(address_family(), bytes_.data(), buf, sizeof buf)) return "?";
  return buf;
}

std::optional<SocketAddress> SocketAddress::parse(std::string_view text, ParseOptions options,
                                                  std::string* error) {
  const std::string expected = options.allow_wildcard ? "expected IPv4:PORT, [IPv6]:PORT or *:PORT"
                                                      : "expected IPv4:PORT or [IPv6]:PORT";
  std::string_view host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      set_error(error, "bad address \"" + std::string(text) + "\": " + expected);
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
    if (host.find(':') == std::string_view::npos) {
      // "[1.2.3.4]:80" is not a form anyone documents; refuse it.
      set_error(error, "bad address \"" + std::string(text) + "\": " + expected);
      return std::nullopt;
    }
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) {
      // No port, or an IPv6 literal without brackets: "::1:80" is ambiguous.
      set_error(error, "bad address \"" + std::string(text) + "\": " + expected);
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }

  IpAddress ip;
  if (host == "*" && options.allow_wildcard) {
    ip = IpAddress::any_v4();
  } else if (auto parsed = IpAddress::parse(host)) {
    ip = *parsed;
  } else {
    set_error(error, "bad address \"" + std::string(text) + "\": " + expected);
    return std::nullopt;
  }

  uint32_t port = 0;
  if (!parse_decimal(port_text, UINT32_MAX, port)) {
    set_error(error,
              "bad port \"" + std::string(port_text) + "\" in \"" + std::string(text) + "\"");
    return std::nullopt;
  }
  const uint32_t min_port = options.allow_port_zero ? 0 : 1;
  if (port < min_port || port > UINT16_MAX) {
    set_error(error, "port " + std::to_string(port) + " out of range " + std::to_string(min_port) +
                         "..65535");
    return std::nullopt;
  }
  return SocketAddress(ip, static_cast<uint16_t>(port));
}

std::optional<SocketAddress> SocketAddress::from_sockaddr(const sockaddr* sa, socklen_t len) {
  if (!sa) return std::nullopt;
  if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    sockaddr_in in{};
    std::memcpy(&in, sa, sizeof in);
    std::array<uint8_t, 4> b{};
    std::memcpy(b.data(), &in.sin_addr, b.size());
    return SocketAddress(IpAddress::from_v4(b), ntohs(in.sin_port));
  }
  if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    sockaddr_in6 in6{};
    std::memcpy(&in6, sa, sizeof in6);
    std::array<uint8_t, 16> b{};
    std::memcpy(b.data(), &in6.sin6_addr, b.size());
    return SocketAddress(IpAddress::from_v6(b), ntohs(in6.sin6_port));
  }
  return std::nullopt;
}

socklen_t SocketAddress::to_sockaddr(sockaddr_storage& out) const {
  std::memset(&out, 0, sizeof out);
  if (ip_.is_v4()) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(port_);
    std::memcpy(&in.sin_addr, ip_.bytes().data(), kV4Bytes);
    std::memcpy(&out, &in, sizeof in);
    return sizeof in;
  }
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(port_);
  std::memcpy(&in6.sin6_addr, ip_.bytes().data(), kV6Bytes);
  std::memcpy(&out, &in6, sizeof in6);
  return sizeof in6;
}

std::string SocketAddress::to_string() const {
  if (ip_.is_v4()) return ip_.to_string() + ":" + std::to_string(port_);
  // Not `"[" + ip_.to_string()`: GCC 12 at -O3 warns (-Wrestrict) inside
  // libstdc++'s operator+(const char*, string&&), a false positive.
  std::string s(1, '[');
  s += ip_.to_string();
  s += "]:";
  s += std::to_string(port_);
  return s;
}

bool SocketAddress::overlaps(const SocketAddress& other) const {
  if (port_ != other.port_ || ip_.family() != other.ip_.family()) return false;
  return ip_ == other.ip_ || ip_.is_unspecified() || other.ip_.is_unspecified();
}

std::optional<Cidr> Cidr::parse(std::string_view text, std::string* error) {
  size_t slash = text.find('/');
  std::string_view addr_text = text.substr(0, slash);
  auto ip = IpAddress::parse(addr_text);
  if (!ip) {
    set_error(error, "bad address \"" + std::string(addr_text) + "\" in CIDR \"" +
                         std::string(text) + "\"");
    return std::nullopt;
  }
  const uint8_t width = ip->is_v4() ? kV4Bits : kV6Bits;
  uint32_t prefix = width;
  if (slash != std::string_view::npos) {
    std::string_view prefix_text = text.substr(slash + 1);
    if (!parse_decimal(prefix_text, UINT32_MAX, prefix) || prefix > width) {
      set_error(error, "bad prefix length \"" + std::string(prefix_text) + "\" in CIDR \"" +
                           std::string(text) + "\" (0.." + std::to_string(width) + ")");
      return std::nullopt;
    }
  }
  Cidr cidr;
  cidr.network_ = *ip;
  cidr.prefix_length_ = static_cast<uint8_t>(prefix);
  // Zero the host bits and compare: a set host bit is refused rather than
  // silently widened or narrowed.
  std::array<uint8_t, kV6Bytes> bytes{};
  auto original = ip->bytes();
  std::copy(original.begin(), original.end(), bytes.begin());
  for (size_t i = 0; i < original.size(); ++i) {
    const size_t bit = i * 8;
    if (bit >= prefix) {
      bytes[i] = 0;
    } else if (bit + 8 > prefix) {
      bytes[i] &= static_cast<uint8_t>(0xFF << (8 - (prefix - bit)));
    }
  }
  const IpAddress masked = ip->is_v4()
                               ? IpAddress::from_v4(std::span<const uint8_t, 4>(bytes.data(), 4))
                               : IpAddress::from_v6(bytes);
  if (masked != *ip) {
    set_error(error, "host bits set in CIDR \"" + std::string(text) + "\" (did you mean \"" +
                         masked.to_string() + "/" + std::to_string(prefix) + "\"?)");
    return std::nullopt;
  }
  return cidr;
}

bool Cidr::contains(const IpAddress& address) const {
  const IpAddress a = address.unmapped();
  if (a.family() != network_.family()) return false;
  auto net = network_.bytes();
  auto b = a.bytes();
  size_t full = prefix_length_ / 8;
  if (!std::equal(net.begin(), net.begin() + static_cast<std::ptrdiff_t>(full), b.begin()))
    return false;
  unsigned rest = prefix_length_ % 8;
  if (rest == 0) return true;
  auto mask = static_cast<uint8_t>(0xFF << (8 - rest));
  return (net[full] & mask) == (b[full] & mask);
}

std::string Cidr::to_string() const {
  return network_.to_string() + "/" + std::to_string(prefix_length_);
}

}  // namespace edgepin
