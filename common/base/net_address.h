#pragma once
// IP addresses, socket addresses and CIDR ranges as typed values, parsed once
// from configuration text so that listeners, relays and ACL checks never
// handle address strings. Only numeric literals are accepted: configuration
// must not depend on DNS at load time (HAProxy resolves once at start-up;
// we do not resolve at all, which keeps `--check` hermetic).
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace edgepin {

class IpAddress {
 public:
  enum class Family : uint8_t { V4, V6 };

  // 0.0.0.0.
  IpAddress() = default;

  // Parses a dotted-quad IPv4 or an RFC 4291 IPv6 literal (no brackets, no
  // zone index, no port). Returns std::nullopt for anything else.
  static std::optional<IpAddress> parse(std::string_view text);
  static IpAddress from_v4(std::span<const uint8_t, 4> bytes);
  static IpAddress from_v6(std::span<const uint8_t, 16> bytes);
  static IpAddress any_v4() { return IpAddress(); }
  static IpAddress any_v6();
  static IpAddress loopback_v4();  // 127.0.0.1
  static IpAddress loopback_v6();  // ::1

  Family family() const { return family_; }
  bool is_v4() const { return family_ == Family::V4; }
  // AF_INET or AF_INET6.
  int address_family() const;
  // 4 bytes for IPv4, 16 for IPv6, network order.
  std::span<const uint8_t> bytes() const;

  bool is_unspecified() const;
  bool is_multicast() const;
  // ::ffff:a.b.c.d, which a dual-stack socket reports for IPv4 peers.
  bool is_v4_mapped() const;
  // The IPv4 address inside a v4-mapped IPv6 address; *this otherwise.
  IpAddress unmapped() const;

  // Canonical text: "127.0.0.1", "::1" (RFC 5952 via inet_ntop).
  std::string to_string() const;

  bool operator==(const IpAddress&) const = default;

 private:
  Family family_ = Family::V4;
  std::array<uint8_t, 16> bytes_{};
};

class SocketAddress {
 public:
  SocketAddress() = default;
  SocketAddress(const IpAddress& ip, uint16_t port) : ip_(ip), port_(port) {}

  struct ParseOptions {
    // Accept "*:PORT" (all IPv4 addresses, like HAProxy's `bind *:443`).
    bool allow_wildcard = false;
    // Accept port 0 (the kernel picks one).
    bool allow_port_zero = false;
  };
  // Parses "IPv4:PORT", "[IPv6]:PORT" or, if allowed, "*:PORT". Returns
  // std::nullopt on any other text and, if `error` is given, stores there a
  // one-line reason ("port 70000 out of range 1..65535", ...).
  static std::optional<SocketAddress> parse(std::string_view text, ParseOptions options,
                                            std::string* error = nullptr);
  // Returns the address in a sockaddr_in/sockaddr_in6; std::nullopt for any
  // other family or a length too short for the family.
  static std::optional<SocketAddress> from_sockaddr(const sockaddr* sa, socklen_t len);

  const IpAddress& ip() const { return ip_; }
  uint16_t port() const { return port_; }

  // Fills `out` with a sockaddr_in or sockaddr_in6 and returns its length.
  socklen_t to_sockaddr(sockaddr_storage& out) const;

  // "127.0.0.1:443", "[::1]:443".
  std::string to_string() const;

  // True if binding both would collide: same port and the same address, or
  // one of them is the unspecified address of the same family. (An IPv6
  // wildcard listener is bound IPV6_V6ONLY, so it never covers IPv4.)
  bool overlaps(const SocketAddress& other) const;

  bool operator==(const SocketAddress&) const = default;

 private:
  IpAddress ip_;
  uint16_t port_ = 0;
};

class Cidr {
 public:
  Cidr() = default;

  // Parses "ADDRESS/PREFIX" or a bare address (a host route: /32 or /128).
  // Rejects a prefix beyond the family's width and set host bits
  // ("10.0.0.1/8"), which usually hide a typo. Returns std::nullopt and, if
  // `error` is given, a one-line reason.
  static std::optional<Cidr> parse(std::string_view text, std::string* error = nullptr);

  const IpAddress& network() const { return network_; }
  uint8_t prefix_length() const { return prefix_length_; }

  // True if `address` lies in the range. IPv4-mapped IPv6 addresses match
  // IPv4 ranges (a dual-stack listener reports IPv4 peers that way).
  bool contains(const IpAddress& address) const;

  // "127.0.0.0/8".
  std::string to_string() const;

  bool operator==(const Cidr&) const = default;

 private:
  IpAddress network_;
  uint8_t prefix_length_ = 0;
};

}  // namespace edgepin
