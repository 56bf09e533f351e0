#include "tls_context.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <span>

#include "log.h"

namespace edgepin::nodeproxy {
namespace {

using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, CDeleter<GENERAL_NAMES_free>>;

// Ticket keys kept beyond those the grace period needs: the current key
// and one being retired while the timer catches up.
constexpr size_t kExtraTicketKeys = 2;

[[noreturn]] void fail(std::string_view what) {
  throw TlsSetupError(std::string(what) + ": " + openssl_errors());
}

int to_openssl_version(config::TlsVersion v) {
  return v == config::TlsVersion::V1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
}

// Keys are never encrypted (the config loader refuses such keys); this
// keeps OpenSSL from prompting on a terminal if one slips through.
int refuse_passphrase(char*, int, int, void*) { return 0; }

// The names a certificate is for: its DNS subjectAltNames and its subject
// CN (HAProxy indexes both; clients that find a SAN ignore the CN, so a CN
// that is not also a SAN only matters for old certificates).
std::vector<std::string> certificate_names(X509* cert) {
  std::vector<std::string> names;
  GeneralNamesPtr sans(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  if (sans) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans.get()); ++i) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans.get(), i);
      if (gn->type != GEN_DNS) continue;
      const ASN1_STRING* s = gn->d.dNSName;
      names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                         static_cast<size_t>(ASN1_STRING_length(s)));
    }
  }
  const X509_NAME* subject = X509_get_subject_name(cert);
  for (int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1); i >= 0;
       i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) {
    const ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
    names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                       static_cast<size_t>(ASN1_STRING_length(s)));
  }
  return names;
}

bool contains(const std::vector<uint16_t>& ids, uint16_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

}  // namespace

std::unique_ptr<TlsContext> TlsContext::create(const config::TlsConfig& config, nodetag::Tag tag,
                                               std::string_view node_name,
                                               std::shared_ptr<tagging::TicketKeyRing> ring) {
  if (config.certificates.empty()) throw TlsSetupError("tls: no certificate configured");
  if (config.default_certificate >= config.certificates.size())
    throw TlsSetupError("tls: default certificate index out of range");
  ERR_clear_error();

  std::unique_ptr<TlsContext> self(new TlsContext());
  self->tickets_enabled_ = config.tickets.enabled;
  self->tls13_enabled_ = config.max_version == config::TlsVersion::V1_3;
  self->session_id_context_ = std::string(kSessionIdContextPrefix) + std::string(node_name);
  self->session_id_context_.resize(
      std::min<size_t>(self->session_id_context_.size(), SSL_MAX_SID_CTX_LENGTH));
  for (const std::string& p : config.alpn) {
    if (p.empty() || p.size() > 255)
      throw TlsSetupError("tls: ALPN protocol \"" + p + "\" must be 1..255 bytes");
    self->alpn_wire_.push_back(static_cast<uint8_t>(p.size()));
    self->alpn_wire_.insert(self->alpn_wire_.end(), p.begin(), p.end());
  }

  if (ring) {
    if (ring->tag() != tag) throw TlsSetupError("tls: ticket key ring belongs to another node tag");
    self->ring_ = std::move(ring);
  } else {
    tagging::TicketKeyRingOptions options;
    options.rotate_interval = config.tickets.rotate;
    options.grace_period = config.tickets.grace;
    const auto needed =
        static_cast<size_t>(config.tickets.grace / config.tickets.rotate) + kExtraTicketKeys;
    options.max_keys = std::min(needed, tagging::kMaxTicketKeys);
    self->ring_ = tagging::TicketKeyRing::create(tag, options, tagging::Clock::now());
    if (!self->ring_)
      throw TlsSetupError("tls: cannot create the ticket key ring (tag, intervals or RAND)");
  }
  if (config.tickets.enabled && config.tickets.grace < config.session_cache.timeout) {
    // A ticket lives as long as a session (SSL_CTX_set_timeout); a key
    // retired sooner makes clients holding its tickets do full handshakes.
    log::warning("tls: ticket grace period (" + std::to_string(config.tickets.grace.count()) +
                 " s) is shorter than the session timeout (" +
                 std::to_string(config.session_cache.timeout.count()) +
                 " s): tickets expire early after a key rotation");
  }

  self->front_.reset(SSL_CTX_new(TLS_server_method()));
  if (!self->front_) fail("tls: SSL_CTX_new");
  self->apply_settings(self->front_.get(), config, tag, "tls (front context)");
  SSL_CTX_set_client_hello_cb(self->front_.get(), on_client_hello, self.get());

  // The suites the client may use in TLS 1.2, grouped by key type (TLS 1.3
  // suites authenticate with any key: NID_auth_any).
  STACK_OF(SSL_CIPHER)* ciphers = SSL_CTX_get_ciphers(self->front_.get());
  for (int i = 0; i < sk_SSL_CIPHER_num(ciphers); ++i) {
    const SSL_CIPHER* c = sk_SSL_CIPHER_value(ciphers, i);
    const auto id = static_cast<uint16_t>(SSL_CIPHER_get_protocol_id(c));
    const int auth = SSL_CIPHER_get_auth_nid(c);
    if (auth == NID_auth_rsa) self->rsa_suites_.push_back(id);
    if (auth == NID_auth_ecdsa) self->ecdsa_suites_.push_back(id);
  }

  for (size_t i = 0; i < config.certificates.size(); ++i)
    self->load_certificate(config.certificates[i], config, tag, i == config.default_certificate);
  self->index_.set_default(config.default_certificate);
  return self;
}

TlsContext::~TlsContext() = default;

void TlsContext::apply_settings(SSL_CTX* ctx, const config::TlsConfig& config, nodetag::Tag tag,
                                std::string_view what) {
  const std::string where(what);
  if (SSL_CTX_set_min_proto_version(ctx, to_openssl_version(config.min_version)) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, to_openssl_version(config.max_version)) != 1)
    fail(where + ": protocol versions");
  if (SSL_CTX_set_cipher_list(ctx, config.ciphers.c_str()) != 1)
    fail(where + ": ciphers \"" + config.ciphers + "\"");
  if (SSL_CTX_set_ciphersuites(ctx, config.ciphersuites.c_str()) != 1)
    fail(where + ": ciphersuites \"" + config.ciphersuites + "\"");
  if (!config.groups.empty() && SSL_CTX_set1_groups_list(ctx, config.groups.c_str()) != 1)
    fail(where + ": groups \"" + config.groups + "\"");
  // Built-in DH parameters matched to the certificate, for DHE suites an
  // operator may add to the cipher list.
  SSL_CTX_set_dh_auto(ctx, 1);

  uint64_t options = SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                     SSL_OP_PRIORITIZE_CHACHA | SSL_OP_NO_COMPRESSION;
  if (!config.tickets.enabled) options |= SSL_OP_NO_TICKET;
  SSL_CTX_set_options(ctx, options);
  // RELEASE_BUFFERS: an idle keep-alive connection holds no 34 KiB of
  // record buffers. ACCEPT_MOVING_WRITE_BUFFER: libevent may retry a write
  // from a buffer that moved.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_default_passwd_cb(ctx, refuse_passphrase);

  // Resumption: one cache (the front context's), node-tagged IDs and
  // tickets. The ID context must be equal on every context, or
  // SSL_set_SSL_CTX would leave a connection with the front's and a
  // session made on one certificate's context would not resume.
  if (SSL_CTX_set_session_id_context(
          ctx, reinterpret_cast<const unsigned char*>(session_id_context_.data()),
          static_cast<unsigned int>(session_id_context_.size())) != 1)
    fail(where + ": session ID context");
  SSL_CTX_set_session_cache_mode(
      ctx, config.session_cache.enabled ? SSL_SESS_CACHE_SERVER : SSL_SESS_CACHE_OFF);
  SSL_CTX_sess_set_cache_size(ctx, static_cast<long>(config.session_cache.size));
  // Also the lifetime of tickets (their lifetime hint).
  SSL_CTX_set_timeout(ctx, static_cast<long>(config.session_cache.timeout.count()));
  if (!config.tickets.enabled && !config.session_cache.enabled) {
    // TLS 1.3 would still send stateful tickets that nothing can resume.
    SSL_CTX_set_num_tickets(ctx, 0);
  }
  if (tagging::InstallError e = tagging::install_node_tagging(ctx, tag, ring_);
      e != tagging::InstallError::None)
    throw TlsSetupError(where + ": node-tagged resumption: " + std::string(tagging::to_string(e)));

  if (!alpn_wire_.empty()) SSL_CTX_set_alpn_select_cb(ctx, on_alpn, this);
}

void TlsContext::load_certificate(const config::CertificateFile& file,
                                  const config::TlsConfig& config, nodetag::Tag tag,
                                  bool is_default) {
  const std::string cert_path = file.cert_file.string();
  const std::string key_path = file.key_file.string();
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) fail("tls: SSL_CTX_new");
  apply_settings(ctx.get(), config, tag, "tls certificate " + cert_path);
  // The chain file holds the leaf first, then intermediates; a bundled key
  // in the same file is skipped by the certificate reader.
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert_path.c_str()) != 1)
    fail("tls certificate " + cert_path);
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key_path.c_str(), SSL_FILETYPE_PEM) != 1)
    fail("tls key " + key_path);
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    fail("tls key " + key_path + " does not match " + cert_path);

  X509* cert = SSL_CTX_get0_certificate(ctx.get());
  EVP_PKEY* pub = cert ? X509_get0_pubkey(cert) : nullptr;
  if (pub == nullptr) fail("tls certificate " + cert_path + ": no public key");
  CertificateInfo info;
  info.cert_file = file.cert_file;
  info.is_default = is_default;
  switch (EVP_PKEY_get_base_id(pub)) {
    case EVP_PKEY_RSA:
      info.kind = KeyKind::Rsa;
      break;
    case EVP_PKEY_EC:
      info.kind = KeyKind::Ecdsa;
      break;
    default:
      throw TlsSetupError("tls certificate " + cert_path + ": key type " +
                          std::string(OBJ_nid2sn(EVP_PKEY_get_base_id(pub))) +
                          " is not supported (use RSA or ECDSA)");
  }
  const std::vector<std::string> raw_names = certificate_names(cert);
  info.names = index_.add(contexts_.size(), info.kind, raw_names);
  if (info.names.empty() && !is_default) {
    log::warning("tls certificate " + cert_path +
                 " names no DNS name: it can only be the default certificate");
  }
  contexts_.push_back(std::move(ctx));
  certificates_.push_back(std::move(info));
}

SslPtr TlsContext::new_ssl() const { return SslPtr(SSL_new(front_.get())); }

long TlsContext::cached_sessions() const { return SSL_CTX_sess_number(front_.get()); }

tagging::RotateOutcome TlsContext::maybe_rotate_tickets(tagging::Clock::time_point now) {
  if (!tickets_enabled_) return tagging::RotateOutcome::NotDue;
  return ring_->maybe_rotate(now);
}

ClientCapabilities TlsContext::capabilities_of(SSL* ssl) const {
  const unsigned char* data = nullptr;
  size_t len = 0;
  std::optional<SignatureSupport> sigalgs;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_signature_algorithms, &data, &len) == 1)
    sigalgs = parse_signature_algorithms({data, len});
  bool tls13 = false;
  if (tls13_enabled_ &&
      SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_versions, &data, &len) == 1)
    tls13 = offers_tls13({data, len});

  ClientCapabilities caps;
  if (tls13) {
    // TLS 1.3 suites name no key type: the signature schemes decide. A
    // TLS 1.3 ClientHello without them is refused by OpenSSL anyway.
    caps.rsa = sigalgs ? sigalgs->rsa : true;
    caps.ecdsa = sigalgs && sigalgs->ecdsa;
    return caps;
  }
  // TLS 1.2: a suite for the key type, and (when the client lists
  // signature algorithms) a scheme for it; without the extension RFC 5246
  // 7.4.1.4.1 lets the suite alone decide.
  const unsigned char* suites = nullptr;
  const size_t suites_len = SSL_client_hello_get0_ciphers(ssl, &suites);
  bool rsa_suite = false, ecdsa_suite = false;
  for (size_t at = 0; at + 2 <= suites_len; at += 2) {
    const auto id = static_cast<uint16_t>((suites[at] << 8) | suites[at + 1]);
    rsa_suite = rsa_suite || contains(rsa_suites_, id);
    ecdsa_suite = ecdsa_suite || contains(ecdsa_suites_, id);
  }
  caps.rsa = rsa_suite && (!sigalgs || sigalgs->rsa);
  caps.ecdsa = ecdsa_suite && (!sigalgs || sigalgs->ecdsa);
  return caps;
}

int TlsContext::on_client_hello(SSL* ssl, int* alert, void* arg) {
  const auto* self = static_cast<const TlsContext*>(arg);
  std::string_view sni;
  const unsigned char* data = nullptr;
  size_t len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &data, &len) == 1) {
    // A malformed extension selects the default here; OpenSSL rejects it
    // with decode_error when it parses the extension itself.
    if (auto name = parse_server_name({data, len})) sni = *name;
  }
  const CertificateIndex::Selection selection =
      self->index_.select(sni, self->capabilities_of(ssl));
  SSL_CTX* target = self->contexts_[selection.id].get();
  if (SSL_get_SSL_CTX(ssl) != target && SSL_set_SSL_CTX(ssl, target) != target) {
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

int TlsContext::on_alpn(SSL*, const unsigned char** out, unsigned char* outlen,
                        const unsigned char* in, unsigned int inlen, void* arg) {
  const auto* self = static_cast<const TlsContext*>(arg);
  unsigned char* selected = nullptr;
  unsigned char selected_len = 0;
  // Our list first: the server's preference order decides.
  if (SSL_select_next_proto(&selected, &selected_len, self->alpn_wire_.data(),
                            static_cast<unsigned int>(self->alpn_wire_.size()), in,
                            inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = selected;
  *outlen = selected_len;
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace edgepin::nodeproxy
