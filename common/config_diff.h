#pragma once
// What changed between the running configuration and a newly loaded one,
// for SIGHUP reloads: one human-readable item per change, split into what
// a reload applies and what only a restart applies (the process keeps the
// running value and says so). Pure: no I/O, unit-tested.
#include <string>
#include <vector>

#include "common/config.h"

namespace edgepin::config {

struct ConfigDiff {
  std::vector<std::string> applied;       // "server node4 added", "server node1 weight 100 -> 50"
  std::vector<std::string> needs_restart;  // "threads 2 -> 4 (restart to apply)"

  bool empty() const { return applied.empty() && needs_restart.empty(); }
  // "no changes", or the items joined by ", " (restart-only ones last).
  std::string summary() const;
};

// Diffs two lb configurations. Servers are identified by node name and
// frontends by frontend name, so a renamed node is one removal plus one
// addition.
ConfigDiff diffLb(const LbConfigSet& from, const LbConfigSet& to);

// Diffs two node-proxy configurations of the same node. A reload applies
// the TLS settings and certificates, header policy, timeouts, header/body
// limits, logging and the shutdown grace; the rest needs a restart. Certificates are
// compared by path only: a renewal usually rewrites the same files, so the
// node-proxy re-reads every certificate on each reload whatever this says.
ConfigDiff diffNodeProxy(const NodeConfigSet& from, const NodeConfigSet& to);

}  // namespace edgepin::config
