#include "peer_tls.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "tls_context.h"

namespace edgepin::nodeproxy {
namespace {

// A node name must match exactly: no wildcard may stand for a node, and the
// subject CN counts even when the certificate also has DNS subjectAltNames
// (make-pki.sh writes both; an operator's CA may write only one).
constexpr unsigned int kHostFlags =
    X509_CHECK_FLAG_NO_WILDCARDS | X509_CHECK_FLAG_ALWAYS_CHECK_SUBJECT;

[[noreturn]] void fail(const std::string& what) {
  throw TlsSetupError("peer link: " + what + ": " + openssl_errors());
}

int refuse_passphrase(char*, int, int, void*) { return 0; }

// What both ends share: TLS 1.3 only, the node's identity, the cluster CA,
// no resumption.
SslCtxPtr make_context(const SSL_METHOD* method, const config::ClusterConfig& cluster,
                       const config::PeerConfig& peer) {
  SslCtxPtr ctx(SSL_CTX_new(method));
  if (!ctx) fail("SSL_CTX_new");
  SSL_CTX_set_default_passwd_cb(ctx.get(), refuse_passphrase);
  if (SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION) != 1)
    fail("cannot restrict to TLS 1.3");
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), peer.cert_file.c_str()) != 1)
    fail("certificate " + peer.cert_file.string());
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), peer.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    fail("private key " + peer.key_file.string());
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    fail("private key does not match " + peer.cert_file.string());
  if (SSL_CTX_load_verify_locations(ctx.get(), cluster.peer_ca_file.c_str(), nullptr) != 1)
    fail("CA file " + cluster.peer_ca_file.string());
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
  return ctx;
}

}  // namespace

std::unique_ptr<PeerTls> PeerTls::create(const config::ClusterConfig& cluster,
                                         const config::PeerConfig& peer) {
  std::unique_ptr<PeerTls> t(new PeerTls());
  for (const config::Node& n : cluster.nodes) t->node_names_.push_back(n.name);

  t->server_ = make_context(TLS_server_method(), cluster, peer);
  // TLS 1.3 servers send tickets after the handshake unless told not to.
  SSL_CTX_set_num_tickets(t->server_.get(), 0);
  SSL_CTX_set_app_data(t->server_.get(), t.get());
  SSL_CTX_set_verify(t->server_.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                     verify_client);
  static constexpr unsigned char kSidContext[] = "edgepin-peer";
  SSL_CTX_set_session_id_context(t->server_.get(), kSidContext, sizeof kSidContext - 1);

  t->client_ = make_context(TLS_client_method(), cluster, peer);
  SSL_CTX_set_verify(t->client_.get(), SSL_VERIFY_PEER, nullptr);
  return t;
}

PeerTls::~PeerTls() = default;

SslPtr PeerTls::new_server_ssl() const { return SslPtr(SSL_new(server_.get())); }

SslPtr PeerTls::new_client_ssl(std::string_view node) const {
  SslPtr ssl(SSL_new(client_.get()));
  if (!ssl) return nullptr;
  const std::string name(node);
  SSL_set_hostflags(ssl.get(), kHostFlags);
  // SSL_set1_host makes the chain verification also check the name; the
  // SNI only helps a reader of a packet capture.
  if (SSL_set1_host(ssl.get(), name.c_str()) != 1 ||
      SSL_set_tlsext_host_name(ssl.get(), name.c_str()) != 1) {
    ERR_clear_error();
    return nullptr;
  }
  return ssl;
}

void PeerTls::set_nodes(const config::ClusterConfig& cluster) {
  std::vector<std::string> names;
  for (const config::Node& n : cluster.nodes) names.push_back(n.name);
  std::lock_guard lock(names_mu_);
  node_names_ = std::move(names);
}

std::string PeerTls::node_named_by(X509* cert) const {
  if (!cert) return {};
  std::lock_guard lock(names_mu_);
  for (const std::string& n : node_names_) {
    if (X509_check_host(cert, n.data(), n.size(), kHostFlags, nullptr) == 1) return n;
  }
  ERR_clear_error();
  return {};
}

std::string PeerTls::node_of(const SSL* ssl) const {
  if (SSL_get_verify_result(ssl) != X509_V_OK) return {};
  return node_named_by(SSL_get0_peer_certificate(ssl));
}

int PeerTls::verify_client(int preverify_ok, X509_STORE_CTX* store) {
  if (!preverify_ok) return 0;  // the CA chain failed: OpenSSL set the reason
  if (X509_STORE_CTX_get_error_depth(store) != 0) return 1;
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  const auto* self =
      ssl ? static_cast<const PeerTls*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl))) : nullptr;
  if (self && !self->node_named_by(X509_STORE_CTX_get_current_cert(store)).empty()) return 1;
  // Signed by the cluster CA but naming no node (an old node's or another
  // service's certificate): refused, with a reason the log can show.
  X509_STORE_CTX_set_error(store, X509_V_ERR_HOSTNAME_MISMATCH);
  return 0;
}

}  // namespace edgepin::nodeproxy
