#pragma once
// Runs edgepin-lb in the foreground (common/base/signal_loop.h):
//   SIGHUP           reloads the configuration directory (an invalid one is
//                    logged and the running one kept);
//   SIGTERM, SIGINT  stops accepting, gives established connections
//                    shutdown_grace_ms to finish, closes the rest, exits 0;
//                    a second one ends the grace period at once.
// Returns the process exit code.
#include <filesystem>

#include "config_cluster.h"
#include "config_lb.h"

namespace edgepin::lb {

int run(const std::filesystem::path& config_dir, const config::ClusterConfig& cluster,
        const config::LbConfig& lb);

}  // namespace edgepin::lb
