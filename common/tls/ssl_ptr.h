#pragma once
// Owning handles for OpenSSL objects. Every SSL/SSL_CTX/X509/EVP_PKEY/BIO in
// Edgepin lives in one of these so that no error path can leak or double-free
// a handle (libevent's le-proxy sample shows how easily that happens by hand).
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

namespace edgepin {

template <auto Fn>
struct CDeleter {
  template <typename T>
  void operator()(T* p) const noexcept {
    if (p) Fn(p);
  }
};

using SslCtxPtr = std::unique_ptr<SSL_CTX, CDeleter<SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, CDeleter<SSL_free>>;
using SslSessionPtr = std::unique_ptr<SSL_SESSION, CDeleter<SSL_SESSION_free>>;
using X509Ptr = std::unique_ptr<X509, CDeleter<X509_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, CDeleter<EVP_PKEY_free>>;
using EvpCipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CDeleter<EVP_CIPHER_CTX_free>>;
using EvpMacCtxPtr = std::unique_ptr<EVP_MAC_CTX, CDeleter<EVP_MAC_CTX_free>>;
using EvpMacPtr = std::unique_ptr<EVP_MAC, CDeleter<EVP_MAC_free>>;
using BioPtr = std::unique_ptr<BIO, CDeleter<BIO_free_all>>;

// "reason 1; reason 2" from this thread's OpenSSL error queue, which it
// empties: the detail of a failed setup call for an error message.
inline std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

}  // namespace edgepin
