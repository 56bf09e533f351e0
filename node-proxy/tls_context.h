#pragma once
// The node-proxy's server-side TLS (OpenSSL 3), built once at start from
// config::TlsConfig and shared read-only by every worker thread.
//
// Layout (HAProxy's, one context per certificate):
//   - one SSL_CTX per configured certificate, each holding that certificate,
//     its chain and its key (the only place a private key lives);
//   - a certificate-less front SSL_CTX that every connection starts on. Its
//     ClientHello callback reads the SNI, the signature algorithms and the
//     cipher list, asks a CertificateIndex (node-proxy/cert_index.h) which
//     certificate answers, and moves the connection to that certificate's
//     context with SSL_set_SSL_CTX. RSA and ECDSA certificates for one name
//     thus live side by side, and each client gets one it can verify.
//
// Every context gets the same settings: versions, ciphers, groups, options
// (no renegotiation, server cipher preference, released buffers), ALPN, and
// node-tagged resumption (common/tls/session_tagging.h: tagged TLS 1.2 session
// IDs, tickets sealed under the node's rotating key ring). The front context
// is the "session context" of every connection, so there is one session
// cache and one ticket callback for all certificates; the tagging callbacks
// find their key ring through the switched context, which is why the ring
// is installed on all of them.
#include <openssl/ssl.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "cert_index.h"
#include "config_node_proxy.h"
#include "node_tag.h"
#include "session_tagging.h"
#include "ssl_ptr.h"

namespace edgepin::nodeproxy {

// A TLS setting or certificate OpenSSL refused at start-up. what() is one
// line naming the file or setting and OpenSSL's reason.
class TlsSetupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// session_id_context is at most 32 bytes (SSL_MAX_SID_CTX_LENGTH).
inline constexpr std::string_view kSessionIdContextPrefix = "edgepin:";

class TlsContext {
 public:
  struct CertificateInfo {
    std::filesystem::path cert_file;
    KeyKind kind = KeyKind::Rsa;
    std::vector<std::string> names;  // normalized names SNI is matched against
    bool is_default = false;
  };

  // Builds the contexts for node `tag` (named `node_name`, which also makes
  // the session ID context). `ring` seals and opens tickets; when null, a
  // ring is made from config.tickets (rotation interval and grace period).
  // Returns the context; throws TlsSetupError for a certificate, key,
  // cipher list, group list or version OpenSSL refuses, a key type other
  // than RSA or ECDSA, or a ring that cannot be made.
  static std::unique_ptr<TlsContext> create(const config::TlsConfig& config, nodetag::Tag tag,
                                            std::string_view node_name,
                                            std::shared_ptr<tagging::TicketKeyRing> ring = nullptr);

  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  ~TlsContext();

  // A server SSL for one accepted connection, on the front context. Returns
  // nullptr if OpenSSL cannot allocate one.
  SslPtr new_ssl() const;

  const std::vector<CertificateInfo>& certificates() const { return certificates_; }
  // The node's ticket keys (also used for session-ID tagging).
  const std::shared_ptr<tagging::TicketKeyRing>& ticket_keys() const { return ring_; }
  bool tickets_enabled() const { return tickets_enabled_; }
  // Sessions in the shared session cache right now.
  long cached_sessions() const;

  // Rotates the ticket keys when the current one is older than the
  // configured interval and drops keys past their grace period. Call it
  // from a timer: the timer's period is the resolution of both. Returns the
  // ring's outcome (NotDue when tickets are disabled).
  tagging::RotateOutcome maybe_rotate_tickets(tagging::Clock::time_point now);

  // The context new connections start on (tests inspect its settings).
  SSL_CTX* front_context() const { return front_.get(); }

 private:
  TlsContext() = default;

  // SSL_CTX_set_client_hello_cb: picks the certificate and switches the
  // connection to its context. Returns SSL_CLIENT_HELLO_SUCCESS, or
  // SSL_CLIENT_HELLO_ERROR with an internal_error alert if OpenSSL refuses
  // the switch.
  static int on_client_hello(SSL* ssl, int* alert, void* arg);
  // SSL_CTX_set_alpn_select_cb: the first of our protocols the client also
  // offers. A client that offers only protocols we do not speak gets a
  // no_application_protocol alert (RFC 7301 3.2).
  static int on_alpn(SSL* ssl, const unsigned char** out, unsigned char* outlen,
                     const unsigned char* in, unsigned int inlen, void* arg);

  ClientCapabilities capabilities_of(SSL* ssl) const;
  void apply_settings(SSL_CTX* ctx, const config::TlsConfig& config, nodetag::Tag tag,
                      std::string_view what);
  void load_certificate(const config::CertificateFile& file, const config::TlsConfig& config,
                        nodetag::Tag tag, bool is_default);

  SslCtxPtr front_;
  std::vector<SslCtxPtr> contexts_;  // one per certificate, index = certificate id
  std::vector<CertificateInfo> certificates_;
  CertificateIndex index_;
  std::vector<uint8_t> alpn_wire_;  // our protocols, RFC 7301 wire format
  std::string session_id_context_;
  std::shared_ptr<tagging::TicketKeyRing> ring_;
  bool tickets_enabled_ = true;
  bool tls13_enabled_ = true;
  // TLS 1.2 suites we allow, by the key type they authenticate with (their
  // 2-byte IDs): a TLS 1.2 client can use a certificate of a key type only
  // if it offers one of these.
  std::vector<uint16_t> rsa_suites_;
  std::vector<uint16_t> ecdsa_suites_;
};

}  // namespace edgepin::nodeproxy
