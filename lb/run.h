#pragma once
// Runs edgepin-lb in the foreground until SIGTERM or SIGINT. Returns the
// process exit code.
#include <filesystem>

#include "common/config_cluster.h"
#include "common/config_lb.h"

namespace edgepin::lb {

int run(const std::filesystem::path& config_dir, const config::ClusterConfig& cluster, const config::LbConfig& lb);

}  // namespace edgepin::lb
