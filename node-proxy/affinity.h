#pragma once
// L7 affinity: which node owns a request's application session, and the
// cookie that records it (docs/stickiness.md, "L7 affinity in the
// node-proxy"). Pure functions over parsed headers: no sockets, no clocks
// (callers pass `now`).
//
// cookie mode: the owner is written in an affinity cookie when the local
//   Tomcat starts a session. Its value is
//     base64url( version(1)=1 | tag(2) | issued_at(4, unix s) | mac(16) )
//   with mac = HMAC-SHA256(cluster key, "edgepin-affinity-v1" | cluster
//   name | version | tag | issued_at), truncated to 16 bytes. The MAC stops
//   a client from naming an arbitrary node or tampering with the value; a
//   client that copies a genuine cookie of node N only pins itself to N,
//   which visiting N would do anyway. issued_at lets a node refuse cookies
//   older than the configured max age.
// jvmroute mode: the owner is the ".<jvmRoute>" suffix of the session
//   cookie (Tomcat's Engine jvmRoute), matched to the node names.
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config_cluster.h"
#include "http1.h"

namespace edgepin::nodeproxy::affinity {

inline constexpr uint8_t kCookieVersion = 1;
inline constexpr size_t kMacBytes = 16;
inline constexpr size_t kRawBytes = 1 + 2 + 4 + kMacBytes;  // 23 bytes → 31 base64url chars

// Why a request is served where it is: one counter each (stats, logs).
#define EDGEPIN_AFFINITY_OUTCOMES(X)                                                 \
  X(Local, "local")                /* owned by this node */                          \
  X(Relay, "relayed_out")          /* owned by another node that is up */            \
  X(NoCookie, "no_cookie")         /* no affinity data: new user or session */       \
  X(BadMac, "bad_mac")             /* cookie present but forged, stale or garbled */ \
  X(UnknownOwner, "unknown_owner") /* names no node of the cluster */                \
  X(OwnerDown, "owner_down")       /* owner's peer link is down: served here */      \
  X(Relayed, "relayed_in")         /* arrived over the peer link: never relayed */   \
  X(Disabled, "disabled")          /* affinity mode none */

enum class Outcome : uint8_t {
#define X(name, str) name,
  EDGEPIN_AFFINITY_OUTCOMES(X)
#undef X
};
inline constexpr size_t kOutcomeCount = 0
#define X(name, str) +1
    EDGEPIN_AFFINITY_OUTCOMES(X)
#undef X
    ;
const char* to_string(Outcome o);

class CookieCodec {
 public:
  // `key`: the cluster MAC key (32..64 bytes); `cluster_name` binds cookies
  // to one cluster.
  CookieCodec(std::span<const uint8_t> key, std::string cluster_name);

  // The cookie value naming node `tag`, issued at `now` (unix seconds).
  std::string encode(uint16_t tag, uint32_t issued_at) const;
  struct Decoded {
    uint16_t tag;
    uint32_t issued_at;
  };
  // The tag and issue time if `value` is a cookie this cluster made and,
  // when max_age is set, it is not older than max_age at `now`; nullopt for
  // anything else (wrong length or alphabet, version, MAC, age).
  std::optional<Decoded> decode(std::string_view value, uint32_t now,
                                std::optional<std::chrono::seconds> max_age) const;

 private:
  std::vector<uint8_t> mac(std::span<const uint8_t> signed_bytes) const;
  std::vector<uint8_t> key_;
  std::string cluster_name_;
};

// The value of cookie `name` in a request's Cookie header fields (RFC 6265
// cookie-string: "a=b; c=d"); the first one wins, as browsers send the most
// specific path first. nullopt when absent.
std::optional<std::string_view> find_cookie(const http1::FieldList& fields, std::string_view name);

// The jvmRoute of a Tomcat session ID "<id>.<route>", or nullopt.
std::optional<std::string_view> jvm_route(std::string_view session_id);

// True if the response starts or replaces a session: a Set-Cookie for
// `session_cookie` with a non-empty value.
bool response_sets_cookie(const http1::FieldList& response_fields, std::string_view session_cookie);

// The Set-Cookie field value that records `value` in cookie `cfg.cookie_name`
// with the configured attributes (Path, Domain, Max-Age, Secure per mode
// and `over_tls`, HttpOnly, SameSite).
std::string set_cookie_value(const config::AffinityConfig& cfg, std::string_view value,
                             bool over_tls);

struct Decision {
  Outcome outcome = Outcome::Local;
  const config::Node* owner = nullptr;  // Relay: where to send it
  // Add an affinity cookie naming this node to the response if it starts a
  // session (cookie mode, and the request had no valid cookie for us).
  bool issue_cookie = false;
};

struct Request {
  const http1::FieldList* fields = nullptr;
  bool relayed_in = false;  // came over the peer link
  uint32_t now = 0;         // unix seconds
};

// Decides who serves a request. `peer_up(node)` says whether the peer link
// to that node is healthy.
template <typename PeerUp>
Decision decide(const config::ClusterConfig& cluster, const config::Node& self,
                const CookieCodec* codec, const Request& req, PeerUp&& peer_up);

}  // namespace edgepin::nodeproxy::affinity

#include "affinity_decide.inl"
