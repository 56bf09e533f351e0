#pragma once
// Builds TLS handshake bytes field by field for parser tests. Every length
// that appears on the wire can be overridden, so a test can make exactly the
// malformation it wants (a session ID length past the end, an extension that
// overruns its block...). The defaults make a well-formed TLS 1.2/1.3
// ClientHello (or ServerHello) that a real server would accept in shape.
//
//   ClientHelloBuilder b;
//   b.sni("edgepin.test").alpn({"http/1.1"}).supported_versions({0x0304, 0x0303});
//   b.cipher_suites_length = 3;                 // odd: BadCipherSuitesLength
//   auto wire = b.records(100);                 // records of at most 100 bytes
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace edgepin::test {

using Bytes = std::vector<uint8_t>;

// Big-endian appenders.
void put_u8(Bytes& out, uint32_t v);
void put_u16(Bytes& out, uint32_t v);
void put_u24(Bytes& out, uint32_t v);
void put_u32(Bytes& out, uint32_t v);
void put_bytes(Bytes& out, std::span<const uint8_t> b);
Bytes to_bytes(std::string_view s);

// A handshake message: type, 24-bit length (body.size() unless overridden), body.
Bytes handshake_message(uint8_t type, std::span<const uint8_t> body,
                        std::optional<uint32_t> length_override = std::nullopt);

// Splits a payload into records of `content_type`. fragment_sizes are used in
// order, the last one repeating (e.g. {3} gives 3-byte records; {10, 16384}
// a 10-byte record then full ones). An empty payload gives no record.
Bytes make_records(uint8_t content_type, uint16_t record_version, std::span<const uint8_t> payload,
                   const std::vector<size_t>& fragment_sizes = {16384});
// One record whose length field says `length` whatever the payload size.
Bytes raw_record(uint8_t content_type, uint16_t record_version, uint32_t length,
                 std::span<const uint8_t> payload);

Bytes change_cipher_spec_record(uint16_t record_version = 0x0303);
Bytes alert_record(uint8_t level, uint8_t description, uint16_t record_version = 0x0303);

// Extension data encoders (the bytes inside one extension).
Bytes sni_extension_data(std::string_view host);
Bytes alpn_extension_data(const std::vector<std::string>& protocols);
Bytes client_versions_extension_data(const std::vector<uint16_t>& versions);
struct TestPskIdentity {
  Bytes identity;
  uint32_t obfuscated_ticket_age = 0;
};
// One 32-byte binder per identity unless binder_sizes says otherwise.
Bytes psk_extension_data(const std::vector<TestPskIdentity>& identities,
                         std::optional<std::vector<size_t>> binder_sizes = std::nullopt);

struct RawExtension {
  uint16_t type = 0;
  Bytes data;
  std::optional<uint16_t> length_override;  // written instead of data.size()
};

// Offsets (within the handshake message) of the length fields that the last
// message() call wrote: the ones tests corrupt or expect errors at.
struct HelloLayout {
  size_t legacy_version = 0;
  size_t session_id_length = 0;
  size_t cipher_suites_length = 0;
  size_t compression_length = 0;
  size_t extensions_length = 0;          // 0 when there is no block
  std::vector<size_t> extension_starts;  // each extension's type field
  size_t end = 0;                        // message size
};

class ClientHelloBuilder {
 public:
  ClientHelloBuilder();

  // Wire fields in wire order. std::nullopt lengths are computed.
  uint8_t handshake_type = 1;
  std::optional<uint32_t> handshake_length;
  uint16_t legacy_version = 0x0303;
  std::array<uint8_t, 32> random{};
  Bytes session_id;
  std::optional<uint8_t> session_id_length;
  std::vector<uint16_t> cipher_suites{0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F};
  std::optional<uint16_t> cipher_suites_length;
  Bytes compression_methods{0};
  std::optional<uint8_t> compression_length;
  bool extensions_block = true;  // false: the body ends after compression
  std::optional<uint16_t> extensions_length;
  std::vector<RawExtension> extensions;
  Bytes trailing;  // appended to the body after everything else

  ClientHelloBuilder& add_extension(uint16_t type, Bytes data);
  ClientHelloBuilder& sni(std::string_view host);
  ClientHelloBuilder& alpn(const std::vector<std::string>& protocols);
  ClientHelloBuilder& supported_versions(const std::vector<uint16_t>& versions);
  ClientHelloBuilder& supported_groups(const std::vector<uint16_t>& groups);
  ClientHelloBuilder& key_share_x25519();  // a (dummy) 32-byte X25519 share
  ClientHelloBuilder& session_ticket(Bytes ticket);
  ClientHelloBuilder& psk_modes(Bytes modes);
  ClientHelloBuilder& early_data();
  ClientHelloBuilder& pre_shared_key(const std::vector<TestPskIdentity>& identities);
  // What a current TLS 1.3 client sends: SNI, ALPN, groups, key share,
  // supported_versions {1.3, 1.2}, psk modes, a 32-byte session ID.
  ClientHelloBuilder& typical_tls13(std::string_view host = "edgepin.test");

  // The handshake message (header and body); fills *layout if given.
  Bytes message(HelloLayout* layout = nullptr) const;
  // The message in handshake records (see make_records).
  Bytes records(const std::vector<size_t>& fragment_sizes = {16384},
                uint16_t record_version = 0x0301) const;
};

class ServerHelloBuilder {
 public:
  ServerHelloBuilder();

  uint8_t handshake_type = 2;
  std::optional<uint32_t> handshake_length;
  uint16_t legacy_version = 0x0303;
  std::array<uint8_t, 32> random{};
  Bytes session_id;
  std::optional<uint8_t> session_id_length;
  uint16_t cipher_suite = 0xC02F;
  uint8_t compression_method = 0;
  bool extensions_block = true;
  std::optional<uint16_t> extensions_length;
  std::vector<RawExtension> extensions;
  Bytes trailing;

  ServerHelloBuilder& add_extension(uint16_t type, Bytes data);
  ServerHelloBuilder& selected_version(uint16_t version);  // supported_versions
  ServerHelloBuilder& session_ticket_ack();
  ServerHelloBuilder& alpn(std::string_view protocol);
  // Turns this into a HelloRetryRequest (TLS 1.3 random and version).
  ServerHelloBuilder& hello_retry_request();

  Bytes message(HelloLayout* layout = nullptr) const;
  Bytes records(const std::vector<size_t>& fragment_sizes = {16384},
                uint16_t record_version = 0x0303) const;
};

// A TLS 1.2 NewSessionTicket message.
Bytes new_session_ticket_message(uint32_t lifetime_hint, std::span<const uint8_t> ticket);

}  // namespace edgepin::test
