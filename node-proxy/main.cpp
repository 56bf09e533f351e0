// edgepin-node-proxy: runs beside each Tomcat, terminates TLS with the
// node's certificates and forwards HTTP/1.1 to Tomcat (docs/architecture.md,
// "The node-proxy data path").
#include <exception>
#include <iostream>

#include "cli.h"
#include "config.h"
#include "log.h"
#include "log_setup.h"
#include "run.h"

namespace {

constexpr edgepin::cli::Program kProgram{
    .name = "edgepin-node-proxy",
    .description =
        "Edgepin's node proxy: terminates TLS for one node of cluster.json and\n"
        "forwards HTTP/1.1 to its Tomcat, relaying to the owning node when needed.",
    .needs_node = true,
};

}  // namespace

int main(int argc, char** argv) {
  using namespace edgepin;
  const cli::ParseResult cmd = cli::parse_command_line(kProgram, argc, argv, std::cout, std::cerr);
  if (cmd.exit) return cmd.exit_code;
  log::set_program(kProgram.name);

  config::NodeConfigSet cfg;
  try {
    cfg = config::load_node_proxy(cmd.options.config_dir, cmd.options.node);
  } catch (const std::exception& e) {
    cli::report_error(kProgram, e, std::cerr);
    return cli::kExitConfigError;
  }
  if (cmd.options.check) {
    return cli::report_check(kProgram, config::summary(cfg), cfg.warnings, std::cout, std::cerr);
  }

  // The configured format and target from the first line on.
  log::apply(cfg.proxy.log);
  for (const auto& w : cfg.warnings) log::warning(w);
  log::info("configuration valid: " + config::summary(cfg));
  return nodeproxy::run(cfg);
}
