#pragma once
// decide(): a template only so that the peer-health lookup inlines; the
// rules are documented in affinity.h.

namespace edgepin::nodeproxy::affinity {

template <typename PeerUp>
Decision decide(const config::ClusterConfig& cluster, const config::Node& self,
                const CookieCodec* codec, const Request& req, PeerUp&& peer_up) {
  Decision d;
  const auto& cfg = cluster.affinity;
  if (cfg.mode == config::AffinityMode::None) {
    d.outcome = Outcome::Disabled;
    return d;
  }
  if (req.relayed_in) {
    // One hop at most: whatever the cookie says, the owner is here now.
    d.outcome = Outcome::Relayed;
    return d;
  }
  const config::Node* owner = nullptr;
  if (cfg.mode == config::AffinityMode::Cookie) {
    d.issue_cookie = true;
    auto value = find_cookie(*req.fields, cfg.cookie_name);
    if (!value) {
      d.outcome = Outcome::NoCookie;
      return d;
    }
    auto decoded = codec ? codec->decode(*value, req.now, cfg.max_age) : std::nullopt;
    if (!decoded) {
      d.outcome = Outcome::BadMac;
      return d;
    }
    owner = cluster.find_tag(decoded->tag);
  } else {  // jvmroute
    auto session = find_cookie(*req.fields, cfg.session_cookie);
    auto route = session ? jvm_route(*session) : std::nullopt;
    if (!route) {
      d.outcome = Outcome::NoCookie;
      return d;
    }
    owner = cluster.find_node(*route);
  }
  if (!owner) {
    d.outcome = Outcome::UnknownOwner;
    return d;
  }
  if (owner->tag == self.tag) {
    d.outcome = Outcome::Local;
    d.issue_cookie = false;  // already ours and valid
    return d;
  }
  if (!peer_up(*owner)) {
    // Served here; in cookie mode the new session Tomcat starts moves the
    // cookie to this node.
    d.outcome = Outcome::OwnerDown;
    return d;
  }
  d.outcome = Outcome::Relay;
  d.owner = owner;
  d.issue_cookie = false;
  return d;
}

}  // namespace edgepin::nodeproxy::affinity
