#pragma once
// Files that configuration refers to: path resolution ({node}, relative to
// the config directory), readability, private-key modes, the cluster MAC key,
// and certificate/key pairs checked with OpenSSL the way the node-proxy will
// load them, so that `--check` catches what start-up would trip over.
//
// Only the node-proxy loader calls the key and certificate checks: the lb
// never opens a key or a certificate (the balancer holds none:
// docs/configuration.md, "Who reads what").
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config_reader.h"

namespace edgepin::config {

// Reads a whole regular file of at most `max_bytes`. Returns its contents;
// on failure std::nullopt with `error` set to "no such file", "permission
// denied", "not a regular file", "larger than N bytes" or the strerror text.
std::optional<std::string> read_small_file(const std::filesystem::path& path, size_t max_bytes,
                                           std::string& error);

// The placeholder a per-node path may contain ("pki/peer/{node}.crt").
inline constexpr std::string_view kNodePlaceholder = "{node}";

// Turns the string at `at` into a path: "{node}" replaced by `node` (when
// `node` is empty, placeholders are left alone), relative paths taken
// relative to `dir`. Throws at `at` for an empty path and for any other
// "{...}" placeholder.
std::filesystem::path resolve_path(const JsonValue& at, const std::filesystem::path& dir,
                                   std::string_view node);
// The same for a path text that is not at `at` (a default value).
std::filesystem::path resolve_path_text(const JsonValue& at, std::string_view text,
                                        const std::filesystem::path& dir, std::string_view node);

// Throws at `at` "<reason>: <path>" unless `path` is a regular file this
// process can open for reading.
void require_readable_file(const JsonValue& at, const std::filesystem::path& path);

// Throws at `at` if the file at `path` is readable by group or others: a
// private key or MAC key must be readable by its owner only.
void require_private_mode(const JsonValue& at, const std::filesystem::path& path);

// Key bytes that are wiped (OPENSSL_cleanse) when released.
class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(std::vector<uint8_t> bytes) : bytes_(std::move(bytes)) {}
  SecretBytes(const SecretBytes& other) : bytes_(other.bytes_) {}
  SecretBytes(SecretBytes&& other) noexcept : bytes_(std::move(other.bytes_)) {}
  SecretBytes& operator=(const SecretBytes& other);
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  ~SecretBytes();

  const std::vector<uint8_t>& bytes() const { return bytes_; }
  bool empty() const { return bytes_.empty(); }
  size_t size() const { return bytes_.size(); }

 private:
  void wipe() noexcept;
  std::vector<uint8_t> bytes_;
};

inline constexpr size_t kMinClusterKeyBytes = 32;
inline constexpr size_t kMaxClusterKeyBytes = 64;

// Reads a MAC key written as hex (`openssl rand -hex 32`; surrounding
// whitespace ignored). Requires a readable, private (owner-only) file of
// kMinClusterKeyBytes..kMaxClusterKeyBytes bytes. Throws at `at` otherwise.
SecretBytes read_hex_key_file(const JsonValue& at, const std::filesystem::path& path);

// A certificate chain file and the file holding its private key (the same
// path when the key is inside the PEM file).
struct CertificateFile {
  std::filesystem::path cert_file;
  std::filesystem::path key_file;
  bool operator==(const CertificateFile&) const = default;
};

// Expands one HAProxy-style `crt` entry: a PEM file, or a directory whose
// regular, non-hidden files are loaded in name order (files ending in .key,
// .ocsp, .issuer or .sctl are skipped as companions). Each certificate's
// key is looked for in the file itself, then in "<file>.key", then in
// "<file minus extension>.key". Returns the pairs found. Throws at `at` for
// an unreadable path, an empty directory, a file without a certificate, a
// missing, encrypted, mismatched or group/other-readable private key.
// Appends one warning per certificate that is expired or not yet valid.
std::vector<CertificateFile> load_certificate_entry(const JsonValue& at,
                                                    const std::filesystem::path& path,
                                                    std::vector<std::string>& warnings);

// Where the peer-link identity of one node comes from.
struct PeerIdentityFiles {
  const JsonValue& ca_at;
  std::filesystem::path ca_file;
  const JsonValue& cert_at;
  std::filesystem::path cert_file;
  const JsonValue& key_at;
  std::filesystem::path key_file;
};

// Checks the mutual-TLS identity of node `node`: the CA file holds at least
// one certificate; the certificate verifies against it (chain, validity
// period), allows TLS client and server use, and names the node exactly
// (CN or DNS SAN, no wildcard); the key is private and matches. Throws at
// the JsonValue of the file at fault.
void check_peer_identity(const PeerIdentityFiles& files, std::string_view node);

}  // namespace edgepin::config
