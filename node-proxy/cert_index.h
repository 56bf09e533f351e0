#pragma once
// Which certificate answers a ClientHello (HAProxy's `crt` lists, Envoy's
// filter chain match on server names):
//   1. the SNI is matched against the certificates' names (subject CN and
//      DNS subjectAltNames): an exact name first, then a wildcard
//      "*.example.com" (one leftmost label, RFC 6125 6.4.3), then the
//      default certificate;
//   2. among the certificates of the first level that matched, the key type
//      the client can verify wins, ECDSA before RSA (smaller, faster
//      handshakes for the clients that support it), then the configuration
//      order. A level with no usable certificate falls through to the next.
//
// Pure: no OpenSSL handles, no sockets. The node-proxy's TLS context
// (node-proxy/tls_context.*) feeds it from its ClientHello callback with the
// extension bodies parsed by the functions below.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace edgepin::nodeproxy {

// --- wire constants (RFC 6066 3, RFC 8446 4.2.3, RFC 5246 7.4.1.4.1) ---

inline constexpr uint8_t kSniHostNameType = 0;
// RFC 1035 2.3.4: 253 characters of text (255 on the wire).
inline constexpr size_t kMaxHostNameLength = 253;
inline constexpr size_t kMaxLabelLength = 63;
// A TLS 1.2 SignatureAndHashAlgorithm is (hash, signature); TLS 1.3 kept the
// same code points for the ECDSA and PKCS#1 schemes it inherited.
inline constexpr uint8_t kSigRsa = 0x01;
inline constexpr uint8_t kSigEcdsa = 0x03;
inline constexpr uint8_t kHashMd5 = 0x01;     // lowest hash code TLS 1.2 defines
inline constexpr uint8_t kHashSha512 = 0x06;  // highest
// TLS 1.3 RSASSA-PSS schemes for keys in rsaEncryption certificates
// (rsa_pss_rsae_sha256..sha512). The rsa_pss_pss_* schemes need an
// RSASSA-PSS key, which the node-proxy does not load.
inline constexpr uint16_t kSigRsaPssRsaeSha256 = 0x0804;
inline constexpr uint16_t kSigRsaPssRsaeSha512 = 0x0806;
inline constexpr uint16_t kTls13Version = 0x0304;

enum class KeyKind : uint8_t { Rsa, Ecdsa };
constexpr std::string_view to_string(KeyKind k) { return k == KeyKind::Rsa ? "RSA" : "ECDSA"; }

// The certificate key types a client can verify, from its ClientHello.
struct ClientCapabilities {
  bool rsa = false;
  bool ecdsa = false;
};

// What a signature_algorithms extension says the client verifies.
struct SignatureSupport {
  bool rsa = false;    // a PKCS#1 or rsa_pss_rsae scheme
  bool ecdsa = false;  // an ECDSA scheme
};

// Reads the host_name of a server_name extension body (RFC 6066 3):
// u16 list length, then entries (u8 type, u16 length, name). Returns the
// first host_name entry as sent (not lowercased); std::nullopt if the body
// is malformed (a length overruns or the list does not end exactly at the
// body's end), holds no host_name entry, or the name is empty.
std::optional<std::string_view> parse_server_name(std::span<const uint8_t> extension);

// Reads a signature_algorithms extension body: u16 length (even, non-zero),
// then 2-byte schemes. Returns which key types appear; std::nullopt if the
// body is malformed.
std::optional<SignatureSupport> parse_signature_algorithms(std::span<const uint8_t> extension);

// Reads a ClientHello supported_versions extension body: u8 length (even),
// then 2-byte versions. Returns true if TLS 1.3 is offered; false if not or
// if the body is malformed (a malformed extension is OpenSSL's to reject).
bool offers_tls13(std::span<const uint8_t> extension);

// Lowercases `name` and removes one trailing dot ("Example.COM." →
// "example.com"). Returns std::nullopt unless the result is a DNS name of
// letters, digits, '-' and '.', with labels of 1..63 characters and at most
// 253 characters in all. With `allow_wildcard`, "*." may start the name
// (a wildcard over one label); it is kept in the result.
std::optional<std::string> normalize_dns_name(std::string_view name, bool allow_wildcard);

class CertificateIndex {
 public:
  enum class Match : uint8_t { Exact, Wildcard, Default };
  struct Selection {
    size_t id = 0;
    Match match = Match::Default;
  };

  // Adds certificate `id` (the caller's index, e.g. into its list of
  // contexts) with key type `kind` and the names it was issued for (CN and
  // DNS SANs as written in the certificate). Names that are not DNS names
  // (a CN like "Edgepin CA", IP addresses) are skipped. Returns the
  // normalized names indexed, possibly none (the certificate can then only
  // serve as the default).
  std::vector<std::string> add(size_t id, KeyKind kind, std::span<const std::string> names);

  // Makes `id` (added before) the default. Certificates whose name set
  // equals the default's are its alternatives of other key types (an RSA
  // and an ECDSA certificate for one site). The first certificate added is
  // the default until this is called.
  void set_default(size_t id);

  // Picks the certificate for a ClientHello with server name `sni` (empty:
  // none sent; any case; a trailing dot is ignored) from a client with
  // `caps`. Returns the exact or wildcard match of a usable key type if
  // there is one, else the default group's certificate of a usable key
  // type, else the default certificate itself (the handshake will then fail
  // on the client's side of the negotiation, not here). Requires at least
  // one certificate added.
  Selection select(std::string_view sni, ClientCapabilities caps) const;

  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    size_t id = 0;
    KeyKind kind = KeyKind::Rsa;
    std::vector<std::string> names;  // normalized, sorted, unique
  };
  // Returns the first usable certificate of `candidates` (indexes into
  // entries_), ECDSA preferred; std::nullopt if none is usable.
  std::optional<size_t> pick(const std::vector<size_t>& candidates, ClientCapabilities caps) const;

  std::vector<Entry> entries_;
  std::unordered_map<std::string, std::vector<size_t>> exact_;
  // Keyed by the part after "*.": "*.example.com" is stored as "example.com".
  std::unordered_map<std::string, std::vector<size_t>> wildcard_;
  std::vector<size_t> default_group_;  // default first, then its alternatives
};

constexpr std::string_view to_string(CertificateIndex::Match m) {
  switch (m) {
    case CertificateIndex::Match::Exact:
      return "exact";
    case CertificateIndex::Match::Wildcard:
      return "wildcard";
    case CertificateIndex::Match::Default:
      return "default";
  }
  return "?";
}

}  // namespace edgepin::nodeproxy
