// edgepin-lb: the edge balancer. It peeks at TLS ClientHellos, never
// decrypts, and relays each connection to a node (DESIGN.md).
#include <exception>
#include <iostream>

#include "common/cli.h"
#include "common/config.h"
#include "common/log.h"
#include "common/log_setup.h"
#include "lb/run.h"

namespace {

constexpr edgepin::cli::Program kProgram{
    .name = "edgepin-lb",
    .description =
        "Edgepin's edge balancer: routes TLS and TCP connections to the nodes in\n"
        "cluster.json without decrypting them (it holds no keys).",
    .needs_node = false,
};

}  // namespace

int main(int argc, char** argv) {
  using namespace edgepin;
  const cli::ParseResult cmd = cli::parseCommandLine(kProgram, argc, argv, std::cout, std::cerr);
  if (cmd.exit) return cmd.exit_code;
  log::set_program(kProgram.name);

  config::LbConfigSet cfg;
  try {
    cfg = config::loadLb(cmd.options.config_dir);
  } catch (const std::exception& e) {
    cli::reportError(kProgram, e, std::cerr);
    return cli::kExitConfigError;
  }
  if (cmd.options.check) {
    return cli::reportCheck(kProgram, config::summary(cfg), cfg.warnings, std::cout, std::cerr);
  }

  // The configured format and target from the first line on.
  log::apply(cfg.lb.log);
  for (const auto& w : cfg.warnings) log::warning(w);
  log::info("configuration valid: " + config::summary(cfg));
  return lb::run(cfg.dir, cfg.cluster, cfg.lb);
}
