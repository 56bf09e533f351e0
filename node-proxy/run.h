#pragma once
// Runs edgepin-node-proxy in the foreground (common/base/signal_loop.h):
//   SIGHUP           reloads the configuration directory: certificates
//                    re-read, header policy, timeouts and limits for new
//                    connections; an invalid config is logged and the
//                    running one kept;
//   SIGTERM, SIGINT  graceful stop (health turns 503, listeners close, idle
//                    keep-alive connections close, busy ones get
//                    shutdown_grace_ms to finish), exit 0; a second one
//                    ends the grace period at once;
//   SIGPIPE          ignored (a write to a closed peer is an error return).
#include "config.h"

namespace edgepin::nodeproxy {

// Returns the process exit code: 0 after a signalled stop, 1 if the
// listeners or the TLS setup failed at start.
int run(const config::NodeConfigSet& config);

}  // namespace edgepin::nodeproxy
