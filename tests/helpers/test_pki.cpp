#include "tests/helpers/test_pki.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <memory>
#include <stdexcept>

namespace edgepin::test {
namespace {

using X509ExtensionPtr = std::unique_ptr<X509_EXTENSION, CDeleter<X509_EXTENSION_free>>;

[[noreturn]] void throw_openssl(const std::string& what) {
  unsigned long e = ERR_get_error();
  char buf[256] = "no OpenSSL error queued";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  throw std::runtime_error(what + ": " + buf);
}

// A FILE* that is always closed; fclose errors mean a short write.
struct FileCloser {
  void operator()(FILE* f) const noexcept { std::fclose(f); }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

FilePtr open_for_write(const std::filesystem::path& path, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw std::runtime_error("cannot create " + path.string());
  // The mode given to open() only applies to a new file.
  if (::fchmod(fd, mode) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot chmod " + path.string());
  }
  FILE* f = ::fdopen(fd, "w");
  if (!f) {
    ::close(fd);
    throw std::runtime_error("cannot open " + path.string());
  }
  return FilePtr(f);
}

void write_certs(const std::filesystem::path& path, std::initializer_list<X509*> certs) {
  FilePtr f = open_for_write(path, 0644);
  for (X509* c : certs)
    if (PEM_write_X509(f.get(), c) != 1) throw_openssl("PEM_write_X509 " + path.string());
}

void add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext) throw_openssl("extension " + std::string(OBJ_nid2sn(nid)) + "=" + value);
  if (X509_add_ext(cert, ext.get(), -1) != 1) throw_openssl("X509_add_ext");
}

// An unsigned certificate for `key` named by `issuer` (nullptr: by itself,
// for a self-signed CA); extensions and the signature are added after.
X509Ptr make_cert(EVP_PKEY* key, const std::string& cn, uint64_t serial, int days, X509* issuer) {
  X509Ptr cert(X509_new());
  if (!cert) throw_openssl("X509_new");
  X509_set_version(cert.get(), X509_VERSION_3);
  if (ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert.get()), serial) != 1)
    throw_openssl("serial");
  // Back-dated an hour so a peer's small clock skew does not matter.
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400L * days);
  if (X509_set_pubkey(cert.get(), key) != 1) throw_openssl("X509_set_pubkey");
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("Edgepin tests"), -1, -1, 0);
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1)
    throw_openssl("subject CN " + cn);
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
  return cert;
}

void sign(X509* cert, EVP_PKEY* key) {
  if (X509_sign(cert, key, EVP_sha256()) <= 0) throw_openssl("X509_sign");
}

}  // namespace

EvpPkeyPtr generate_key(KeyType type) {
  EvpPkeyPtr key(type == KeyType::Rsa2048 ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256"));
  if (!key) throw_openssl("key generation");
  return key;
}

void write_private_key(const std::filesystem::path& path, EVP_PKEY* key) {
  FilePtr f = open_for_write(path, 0600);
  if (PEM_write_PrivateKey(f.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    throw_openssl("PEM_write_PrivateKey " + path.string());
}

TestPki::TestPki(std::filesystem::path dir, KeyType ca_key_type, std::string ca_name)
    : dir_(std::move(dir)), ca_cert_path_(dir_ / "ca.pem"), ca_key_path_(dir_ / "ca.key") {
  ca_key_ = generate_key(ca_key_type);
  ca_cert_ = make_cert(ca_key_.get(), ca_name, 1, 365, nullptr);
  add_ext(ca_cert_.get(), ca_cert_.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  add_ext(ca_cert_.get(), ca_cert_.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  add_ext(ca_cert_.get(), ca_cert_.get(), NID_subject_key_identifier, "hash");
  sign(ca_cert_.get(), ca_key_.get());
  write_certs(ca_cert_path_, {ca_cert_.get()});
  write_private_key(ca_key_path_, ca_key_.get());
}

TestPki TestPki::open(std::filesystem::path dir, const std::filesystem::path& ca_cert,
                      const std::filesystem::path& ca_key) {
  TestPki pki;
  pki.dir_ = std::move(dir);
  pki.ca_cert_path_ = ca_cert;
  pki.ca_key_path_ = ca_key;
  {
    FilePtr f(std::fopen(ca_cert.c_str(), "r"));
    if (!f) throw std::runtime_error("cannot read " + ca_cert.string());
    pki.ca_cert_.reset(PEM_read_X509(f.get(), nullptr, nullptr, nullptr));
    if (!pki.ca_cert_) throw_openssl("PEM_read_X509 " + ca_cert.string());
  }
  {
    FilePtr f(std::fopen(ca_key.c_str(), "r"));
    if (!f) throw std::runtime_error("cannot read " + ca_key.string());
    pki.ca_key_.reset(PEM_read_PrivateKey(f.get(), nullptr, nullptr, nullptr));
    if (!pki.ca_key_) throw_openssl("PEM_read_PrivateKey " + ca_key.string());
  }
  if (X509_check_private_key(pki.ca_cert_.get(), pki.ca_key_.get()) != 1)
    throw_openssl(ca_key.string() + " is not the key of " + ca_cert.string());
  return pki;
}

PemFiles TestPki::issue(const std::string& name, const CertSpec& spec) {
  EvpPkeyPtr key = generate_key(spec.key_type);
  X509Ptr cert = make_cert(key.get(), spec.common_name, spec.serial ? *spec.serial : next_serial_++,
                           spec.valid_days, ca_cert_.get());
  add_ext(cert.get(), ca_cert_.get(), NID_basic_constraints, "critical,CA:FALSE");
  // RSA key exchange (TLS 1.2 RSA suites) needs keyEncipherment; ECDSA only signs.
  add_ext(cert.get(), ca_cert_.get(), NID_key_usage,
          spec.key_type == KeyType::Rsa2048 ? "critical,digitalSignature,keyEncipherment"
                                            : "critical,digitalSignature");
  std::string eku;
  if (spec.server_auth) eku = "serverAuth";
  if (spec.client_auth) eku += eku.empty() ? "clientAuth" : ",clientAuth";
  if (!eku.empty()) add_ext(cert.get(), ca_cert_.get(), NID_ext_key_usage, eku);
  std::string san;
  for (const auto& d : spec.dns_names) san += (san.empty() ? "" : ",") + ("DNS:" + d);
  for (const auto& ip : spec.ip_addresses) san += (san.empty() ? "" : ",") + ("IP:" + ip);
  if (!san.empty()) add_ext(cert.get(), ca_cert_.get(), NID_subject_alt_name, san);
  add_ext(cert.get(), ca_cert_.get(), NID_subject_key_identifier, "hash");
  add_ext(cert.get(), ca_cert_.get(), NID_authority_key_identifier, "keyid:always");
  sign(cert.get(), ca_key_.get());

  PemFiles files{dir_ / (name + ".pem"), dir_ / (name + ".key"), dir_ / (name + "-chain.pem")};
  write_certs(files.cert, {cert.get()});
  write_certs(files.chain, {cert.get(), ca_cert_.get()});
  write_private_key(files.key, key.get());
  return files;
}

}  // namespace edgepin::test
