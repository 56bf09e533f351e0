#pragma once
// Runs edgepin-node-proxy in the foreground until SIGTERM or SIGINT:
//   SIGTERM, SIGINT  graceful stop (health turns 503, listeners close,
//                    connections get a grace period, then are closed);
//   SIGHUP           logged: configuration reload is not supported yet;
//   SIGPIPE          ignored (a write to a closed peer is an error return).
#include <chrono>

#include "common/config.h"

namespace edgepin::nodeproxy {

// How long SIGTERM lets established connections finish.
inline constexpr std::chrono::seconds kStopGrace{10};

// Returns the process exit code: 0 after a signalled stop, 1 if the
// listeners or the TLS setup failed at start.
int run(const config::NodeConfigSet& config);

}  // namespace edgepin::nodeproxy
