#pragma once
// A throwaway PKI for tests, made in-process with OpenSSL (no `openssl`
// command): one CA and any number of leaf certificates signed by it, written
// as PEM files into a directory. Private keys are written with mode 0600
// (the node-proxy refuses keys readable by others).
//
//   TempDir dir;
//   TestPki pki(dir.path());
//   CertSpec spec;
//   spec.common_name = "edgepin.test";
//   spec.dns_names = {"edgepin.test"};
//   spec.ip_addresses = {"127.0.0.1"};
//   PemFiles web = pki.issue("web", spec);  // web.cert, web.key, web.chain
//   // pki.ca_cert() is the CA to trust.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ssl_ptr.h"

namespace edgepin::test {

enum class KeyType { EcdsaP256, Rsa2048 };

struct CertSpec {
  std::string common_name = "localhost";
  std::vector<std::string> dns_names = {"localhost"};  // subjectAltName DNS entries
  std::vector<std::string> ip_addresses;               // subjectAltName IP entries (v4 or v6)
  bool server_auth = true;                             // extendedKeyUsage serverAuth
  bool client_auth = false;                            // extendedKeyUsage clientAuth
  KeyType key_type = KeyType::EcdsaP256;
  int valid_days = 30;
  std::optional<uint64_t> serial;  // default: the CA's next serial (2, 3, ...)
};

struct PemFiles {
  std::filesystem::path cert;   // the leaf certificate alone
  std::filesystem::path key;    // its private key (PKCS#8, mode 0600)
  std::filesystem::path chain;  // leaf then CA certificate
};

class TestPki {
 public:
  // Creates the CA ("<dir>/ca.pem", "<dir>/ca.key"). `dir` must exist.
  // Throws std::runtime_error on any OpenSSL or file error.
  explicit TestPki(std::filesystem::path dir, KeyType ca_key_type = KeyType::EcdsaP256,
                   std::string ca_name = "Edgepin Test CA");

  // An existing CA (for example the cluster CA deploy/make-pki.sh made),
  // issuing into `dir`. Throws std::runtime_error if either file cannot be
  // read or the key does not match the certificate.
  static TestPki open(std::filesystem::path dir, const std::filesystem::path& ca_cert,
                      const std::filesystem::path& ca_key);

  // Issues a leaf signed by the CA and writes "<dir>/<name>.pem",
  // "<name>.key" and "<name>-chain.pem". Throws std::runtime_error on error.
  PemFiles issue(const std::string& name, const CertSpec& spec);

  const std::filesystem::path& dir() const { return dir_; }
  const std::filesystem::path& ca_cert() const { return ca_cert_path_; }
  const std::filesystem::path& ca_key() const { return ca_key_path_; }

 private:
  std::filesystem::path dir_;
  std::filesystem::path ca_cert_path_;
  std::filesystem::path ca_key_path_;
  X509Ptr ca_cert_;
  EvpPkeyPtr ca_key_;
  TestPki() = default;

  uint64_t next_serial_ = 2;
};

// Generates a private key of that type. Throws std::runtime_error.
EvpPkeyPtr generate_key(KeyType type);

// Writes a private key as PEM with mode 0600 (also when the file existed).
void write_private_key(const std::filesystem::path& path, EVP_PKEY* key);

}  // namespace edgepin::test
