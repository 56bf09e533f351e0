// edgepin-lb: the edge balancer. It peeks at TLS ClientHellos, never
// decrypts, and relays each connection to a node (docs/architecture.md,
// "The lb data path").
#include <exception>
#include <iostream>

#include "cli.h"
#include "config.h"
#include "log.h"
#include "log_setup.h"
#include "run.h"

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
  const cli::ParseResult cmd = cli::parse_command_line(kProgram, argc, argv, std::cout, std::cerr);
  if (cmd.exit) return cmd.exit_code;
  log::set_program(kProgram.name);

  config::LbConfigSet cfg;
  try {
    cfg = config::load_lb(cmd.options.config_dir);
  } catch (const std::exception& e) {
    cli::report_error(kProgram, e, std::cerr);
    return cli::kExitConfigError;
  }
  if (cmd.options.check) {
    return cli::report_check(kProgram, config::summary(cfg), cfg.warnings, std::cout, std::cerr);
  }

  // The configured format and target from the first line on.
  log::apply(cfg.lb.log);
  for (const auto& w : cfg.warnings) log::warning(w);
  log::info("configuration valid: " + config::summary(cfg));
  return lb::run(cfg.dir, cfg.cluster, cfg.lb);
}
