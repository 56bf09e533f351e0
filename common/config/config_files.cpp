#include "config_files.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "ssl_ptr.h"

namespace edgepin::config {
namespace {

namespace fs = std::filesystem;

// A PEM bundle with a few certificates and a key is a few KiB; a CA bundle
// is a few hundred KiB. Anything past this is not a PEM file we want.
constexpr size_t kMaxPemFileBytes = 4 * 1024 * 1024;
constexpr size_t kMaxKeyFileBytes = 4096;

// Companion files that live beside certificates in a `crt` directory.
constexpr std::string_view kCompanionSuffixes[] = {".key", ".ocsp", ".issuer", ".sctl"};

using X509StorePtr = std::unique_ptr<X509_STORE, CDeleter<X509_STORE_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, CDeleter<X509_STORE_CTX_free>>;
struct X509StackDeleter {
  void operator()(STACK_OF(X509) * s) const noexcept { sk_X509_pop_free(s, X509_free); }
};
using X509StackPtr = std::unique_ptr<STACK_OF(X509), X509StackDeleter>;

std::string display(const fs::path& p) { return p.string(); }

std::string errno_reason(int err) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return "no such file";
    case EACCES:
    case EPERM:
      return "permission denied";
    default:
      return std::strerror(err);
  }
}

// What a PEM file holds. `key_encrypted` is set when a key was found but
// needs a passphrase, which a daemon cannot type.
struct PemContents {
  std::vector<X509Ptr> certificates;
  EvpPkeyPtr key;
  bool key_encrypted = false;
};

int refuse_passphrase(char*, int, int, void* userdata) {
  *static_cast<bool*>(userdata) = true;
  return -1;
}

PemContents read_pem(const std::string& data) {
  PemContents out;
  {
    BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
    if (bio) {
      // PEM_read_bio_X509 skips blocks of other types (the key), so this
      // collects every certificate wherever it sits in the file.
      while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
        out.certificates.emplace_back(cert);
      }
    }
  }
  {
    BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
    if (bio) {
      out.key.reset(
          PEM_read_bio_PrivateKey(bio.get(), nullptr, refuse_passphrase, &out.key_encrypted));
    }
  }
  // The loops above end on "no more PEM blocks", which OpenSSL records as an
  // error; it must not leak into the next OpenSSL call's diagnostics.
  ERR_clear_error();
  return out;
}

std::string read_or_fail(const JsonValue& at, const fs::path& path, size_t max_bytes) {
  std::string error;
  auto data = read_small_file(path, max_bytes, error);
  if (!data) at.fail(error + ": " + display(path));
  return *data;
}

std::string format_time(const ASN1_TIME* t) {
  std::tm tm{};
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return "?";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

void warn_validity(const JsonValue& at, const fs::path& file, X509* cert,
                   std::vector<std::string>& warnings) {
  const std::string where = at.file() + ": " + at.pointer() + ": certificate " + display(file);
  if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) {
    warnings.push_back(where + " expired on " + format_time(X509_get0_notAfter(cert)));
  } else if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0) {
    warnings.push_back(where + " is not valid before " + format_time(X509_get0_notBefore(cert)));
  }
}

bool is_companion_file(const fs::path& p) {
  const std::string name = p.filename().string();
  if (name.empty() || name.front() == '.') return true;
  return std::any_of(std::begin(kCompanionSuffixes), std::end(kCompanionSuffixes),
                     [&](std::string_view s) { return name.ends_with(s); });
}

// Loads one certificate file and finds its key (see loadCertificateEntry).
CertificateFile load_certificate_file(const JsonValue& at, const fs::path& file,
                                      std::vector<std::string>& warnings) {
  require_readable_file(at, file);
  PemContents pem = read_pem(read_or_fail(at, file, kMaxPemFileBytes));
  if (pem.certificates.empty()) at.fail(display(file) + ": no PEM certificate found");
  if (pem.key_encrypted) {
    at.fail(display(file) + ": private key is encrypted (a daemon cannot prompt for a passphrase)");
  }
  CertificateFile out{file, file};
  if (!pem.key) {
    std::vector<fs::path> candidates{fs::path(file.string() + ".key")};
    if (file.has_extension()) {
      fs::path stem_key = file;
      stem_key.replace_extension(".key");
      if (stem_key != candidates.front() && stem_key != file) candidates.push_back(stem_key);
    }
    for (const auto& candidate : candidates) {
      std::error_code ec;
      if (!fs::exists(candidate, ec)) continue;
      require_readable_file(at, candidate);
      PemContents key_pem = read_pem(read_or_fail(at, candidate, kMaxPemFileBytes));
      if (key_pem.key_encrypted) {
        at.fail(display(candidate) +
                ": private key is encrypted (a daemon cannot prompt for a passphrase)");
      }
      if (!key_pem.key) at.fail(display(candidate) + ": no PEM private key found");
      pem.key = std::move(key_pem.key);
      out.key_file = candidate;
      break;
    }
    if (!pem.key) {
      std::string looked = display(candidates.front());
      if (candidates.size() > 1) looked += " or " + display(candidates.back());
      at.fail(display(file) + ": no private key in the file, nor in " + looked);
    }
  }
  require_private_mode(at, out.key_file);
  if (X509_check_private_key(pem.certificates.front().get(), pem.key.get()) != 1) {
    ERR_clear_error();
    at.fail("private key " + display(out.key_file) + " does not match certificate " +
            display(file));
  }
  warn_validity(at, file, pem.certificates.front().get(), warnings);
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::optional<std::string> read_small_file(const fs::path& path, size_t max_bytes,
                                           std::string& error) {
  // O_NONBLOCK: opening a FIFO named by mistake must not hang --check.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    error = errno_reason(errno);
    return std::nullopt;
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    error = errno_reason(errno);
    return std::nullopt;
  }
  if (!S_ISREG(st.st_mode)) {
    error = "not a regular file";
    return std::nullopt;
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    error = "larger than " + std::to_string(max_bytes) + " bytes";
    return std::nullopt;
  }
  std::string out;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      error = errno_reason(errno);
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    // The file may grow between fstat and read.
    if (out.size() > max_bytes) {
      error = "larger than " + std::to_string(max_bytes) + " bytes";
      return std::nullopt;
    }
  }
  return out;
}

fs::path resolve_path(const JsonValue& at, const fs::path& dir, std::string_view node) {
  return resolve_path_text(at, at.as_string(1), dir, node);
}

fs::path resolve_path_text(const JsonValue& at, std::string_view text, const fs::path& dir,
                           std::string_view node) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    size_t open = text.find('{', i);
    if (open == std::string_view::npos) {
      out.append(text.substr(i));
      break;
    }
    out.append(text.substr(i, open - i));
    size_t close = text.find('}', open);
    if (close == std::string_view::npos) {
      out.append(text.substr(open));
      break;
    }
    std::string_view token = text.substr(open, close - open + 1);
    if (token != kNodePlaceholder) {
      at.fail("unknown placeholder \"" + std::string(token) + "\" (only " +
              std::string(kNodePlaceholder) + " is supported)");
    }
    out += node.empty() ? token : node;
    i = close + 1;
  }
  fs::path p(out);
  return p.is_absolute() ? p : dir / p;
}

void require_readable_file(const JsonValue& at, const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) at.fail(errno_reason(errno) + ": " + display(path));
  struct stat st {};
  int rc = ::fstat(fd, &st);
  int err = errno;
  ::close(fd);
  if (rc != 0) at.fail(errno_reason(err) + ": " + display(path));
  if (!S_ISREG(st.st_mode)) at.fail("not a regular file: " + display(path));
}

void require_private_mode(const JsonValue& at, const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) at.fail(errno_reason(errno) + ": " + display(path));
  if (st.st_mode & (S_IRGRP | S_IROTH)) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    at.fail("private key file " + display(path) + " is readable by group or others (mode " + mode +
            "; chmod 600 it)");
  }
}

SecretBytes& SecretBytes::operator=(const SecretBytes& other) {
  if (this != &other) {
    wipe();
    bytes_ = other.bytes_;
  }
  return *this;
}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    wipe();
    bytes_ = std::move(other.bytes_);
  }
  return *this;
}

SecretBytes::~SecretBytes() { wipe(); }

void SecretBytes::wipe() noexcept {
  if (!bytes_.empty()) OPENSSL_cleanse(bytes_.data(), bytes_.size());
  bytes_.clear();
}

SecretBytes read_hex_key_file(const JsonValue& at, const fs::path& path) {
  require_readable_file(at, path);
  require_private_mode(at, path);
  std::string text = read_or_fail(at, path, kMaxKeyFileBytes);
  auto is_space = [](char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; };
  size_t begin = 0, end = text.size();
  while (begin < end && is_space(text[begin])) ++begin;
  while (end > begin && is_space(text[end - 1])) --end;
  const std::string_view hex(text.data() + begin, end - begin);
  const std::string want = std::to_string(kMinClusterKeyBytes) + ".." +
                           std::to_string(kMaxClusterKeyBytes) +
                           " bytes written as hex, e.g. by `openssl rand -hex 32`";
  std::vector<uint8_t> bytes;
  bool is_hex = hex.size() % 2 == 0;
  for (size_t i = 0; is_hex && i < hex.size(); i += 2) {
    int hi = hex_value(hex[i]), lo = hex_value(hex[i + 1]);
    if (hi < 0 || lo < 0) {
      is_hex = false;
      break;
    }
    bytes.push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  SecretBytes key(std::move(bytes));
  OPENSSL_cleanse(text.data(), text.size());
  if (!is_hex) at.fail(display(path) + ": not a hex string (expected " + want + ")");
  if (key.size() < kMinClusterKeyBytes || key.size() > kMaxClusterKeyBytes) {
    at.fail(display(path) + ": key of " + std::to_string(key.size()) + " bytes (expected " + want +
            ")");
  }
  return key;
}

std::vector<CertificateFile> load_certificate_entry(const JsonValue& at, const fs::path& path,
                                                    std::vector<std::string>& warnings) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (status.type() == fs::file_type::not_found) at.fail("no such file: " + display(path));
  if (status.type() != fs::file_type::directory) {
    return {load_certificate_file(at, path, warnings)};
  }
  std::vector<fs::path> files;
  fs::directory_iterator it(path, ec);
  if (ec) at.fail(errno_reason(ec.value()) + ": " + display(path));
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) at.fail(errno_reason(ec.value()) + ": " + display(path));
    std::error_code type_ec;
    if (!it->is_regular_file(type_ec) || is_companion_file(it->path())) continue;
    files.push_back(it->path());
  }
  if (ec) at.fail(errno_reason(ec.value()) + ": " + display(path));
  if (files.empty()) at.fail(display(path) + ": no certificate files in directory");
  // Directory order is arbitrary; name order makes "the first certificate"
  // (the default one) the same on every host.
  std::sort(files.begin(), files.end());
  std::vector<CertificateFile> out;
  for (const auto& f : files) out.push_back(load_certificate_file(at, f, warnings));
  return out;
}

void check_peer_identity(const PeerIdentityFiles& f, std::string_view node) {
  require_readable_file(f.ca_at, f.ca_file);
  PemContents ca = read_pem(read_or_fail(f.ca_at, f.ca_file, kMaxPemFileBytes));
  if (ca.certificates.empty()) f.ca_at.fail(display(f.ca_file) + ": no PEM certificate found");

  require_readable_file(f.cert_at, f.cert_file);
  PemContents cert = read_pem(read_or_fail(f.cert_at, f.cert_file, kMaxPemFileBytes));
  if (cert.certificates.empty()) {
    f.cert_at.fail(display(f.cert_file) + ": no PEM certificate found");
  }
  X509* leaf = cert.certificates.front().get();

  require_readable_file(f.key_at, f.key_file);
  require_private_mode(f.key_at, f.key_file);
  PemContents key = read_pem(read_or_fail(f.key_at, f.key_file, kMaxPemFileBytes));
  if (key.key_encrypted) {
    f.key_at.fail(display(f.key_file) +
                  ": private key is encrypted (a daemon cannot prompt for a passphrase)");
  }
  if (!key.key) f.key_at.fail(display(f.key_file) + ": no PEM private key found");
  if (X509_check_private_key(leaf, key.key.get()) != 1) {
    ERR_clear_error();
    f.key_at.fail("private key " + display(f.key_file) + " does not match certificate " +
                  display(f.cert_file));
  }

  X509StorePtr store(X509_STORE_new());
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  X509StackPtr chain(sk_X509_new_null());
  if (!store || !ctx || !chain) throw std::bad_alloc();
  for (const auto& c : ca.certificates) {
    if (X509_STORE_add_cert(store.get(), c.get()) != 1) {
      ERR_clear_error();  // a duplicate in the bundle is harmless
    }
  }
  for (size_t i = 1; i < cert.certificates.size(); ++i) {
    if (!sk_X509_push(chain.get(), cert.certificates[i].get())) throw std::bad_alloc();
    X509_up_ref(cert.certificates[i].get());
  }
  if (X509_STORE_CTX_init(ctx.get(), store.get(), leaf, chain.get()) != 1) {
    throw std::bad_alloc();
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    f.cert_at.fail(display(f.cert_file) + ": does not verify against the cluster CA " +
                   display(f.ca_file) + ": " + X509_verify_cert_error_string(err));
  }
  // The same certificate serves both ends of the peer link.
  if (X509_check_purpose(leaf, X509_PURPOSE_SSL_CLIENT, 0) != 1) {
    f.cert_at.fail(display(f.cert_file) +
                   ": not valid for TLS client authentication (extendedKeyUsage clientAuth)");
  }
  if (X509_check_purpose(leaf, X509_PURPOSE_SSL_SERVER, 0) != 1) {
    f.cert_at.fail(display(f.cert_file) +
                   ": not valid for TLS server authentication (extendedKeyUsage serverAuth)");
  }
  // Peers tell each other apart by this name; a wildcard would let one
  // node's certificate pass for another's.
  if (X509_check_host(leaf, node.data(), node.size(), X509_CHECK_FLAG_NO_WILDCARDS, nullptr) != 1) {
    ERR_clear_error();
    f.cert_at.fail(display(f.cert_file) + ": certificate does not name node \"" +
                   std::string(node) + "\" (as CN or DNS subjectAltName)");
  }
}

}  // namespace edgepin::config
