#pragma once
// The TLS of the peer link (docs/stickiness.md, "The peer link"): mutual
// authentication between the node-proxies of one cluster, built once at
// start and shared read-only by every worker thread.
//
// Both ends present the node's peer certificate (node-proxy.json
// peer.cert_file/key_file) and verify the other end against the cluster CA
// (cluster.json cluster.peer.ca_file), TLS 1.3 only:
//   - server (the peer listener): a client must send a certificate that
//     verifies against the CA AND names a node of cluster.json (DNS
//     subjectAltName or subject CN equal to the node name, no wildcard);
//     anything else fails the handshake (the handshake layer logs and counts
//     it). The node a connection comes from is read back with node_of().
//   - client (the pools towards each peer): the server's certificate must
//     verify against the CA and name exactly the node we meant to reach, so
//     a node cannot answer for another one.
// No session resumption on either side: peer connections are long-lived and
// pooled, and a ticket arriving on an idle pooled connection would look like
// a stray byte (UpstreamPool closes those).
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "config_cluster.h"
#include "config_node_proxy.h"
#include "ssl_ptr.h"

namespace edgepin::nodeproxy {

class PeerTls {
 public:
  // Builds both contexts. Throws TlsSetupError (node-proxy/tls_context.h)
  // when OpenSSL refuses the certificate, key or CA file.
  static std::unique_ptr<PeerTls> create(const config::ClusterConfig& cluster,
                                         const config::PeerConfig& peer);
  ~PeerTls();
  PeerTls(const PeerTls&) = delete;
  PeerTls& operator=(const PeerTls&) = delete;

  // A server SSL for one connection accepted on the peer listener; nullptr
  // if OpenSSL cannot allocate one.
  SslPtr new_server_ssl() const;
  // A client SSL that only completes its handshake with a server whose
  // certificate names `node`; nullptr if OpenSSL cannot allocate one.
  SslPtr new_client_ssl(std::string_view node) const;

  // The cluster node the verified peer certificate of `ssl` names (after a
  // successful handshake); empty if none does.
  std::string node_of(const SSL* ssl) const;
  // The node of cluster.json `cert` names (CN or DNS SAN), or empty.
  std::string node_named_by(X509* cert) const;
  // Reload: the nodes of `cluster` are the ones the peer listener accepts
  // from now on (a node added to cluster.json can relay to us at once, a
  // removed one is refused). Any thread.
  void set_nodes(const config::ClusterConfig& cluster);

  SSL_CTX* server_context() const { return server_.get(); }
  SSL_CTX* client_context() const { return client_.get(); }

 private:
  PeerTls() = default;
  // SSL_CTX_set_verify callback of the server context: on top of the CA
  // chain, the client's leaf certificate must name a node.
  static int verify_client(int preverify_ok, X509_STORE_CTX* store);

  mutable std::mutex names_mu_;  // handshakes read node_names_ on every worker
  std::vector<std::string> node_names_;
  SslCtxPtr server_;
  SslCtxPtr client_;
};

}  // namespace edgepin::nodeproxy
