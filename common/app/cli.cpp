#include "cli.h"

#include <event2/event.h>
#include <getopt.h>
#include <openssl/crypto.h>

#include <vector>

#include "config.h"
#include "edgepin/version.h"

namespace edgepin::cli {
namespace {

// Option codes: each long option has a short letter too.
enum : int {
  kShortConfigDir = 'C',
  kShortCheck = 'c',
  kShortNode = 'n',
  kShortVersion = 'v',
  kShortHelp = 'h'
};

std::string hint(const Program& program) {
  return "try '" + std::string(program.name) + " --help'";
}

}  // namespace

std::string version_line(const Program& program) {
  return std::string(program.name) + " " + kVersion + " (" + OpenSSL_version(OPENSSL_VERSION) +
         ", libevent " + event_get_version() + ")";
}

std::string usage(const Program& program) {
  const std::string name(program.name);
  std::string text = "Usage: " + name + " [--config-dir DIR]" +
                     (program.needs_node ? " --node NAME" : "") + " [--check]\n" + "       " +
                     name + " --version | --help\n\n" + std::string(program.description) + "\n\n" +
                     "Options:\n"
                     "  -C, --config-dir DIR  configuration directory (default " +
                     std::string(config::kDefaultConfigDir) + ")\n";
  if (program.needs_node) {
    text += "  -n, --node NAME       the node this process serves, as named in cluster.json\n";
  }
  text +=
      "  -c, --check           validate the configuration, print a summary and exit\n"
      "  -v, --version         print the version and exit\n"
      "  -h, --help            print this help and exit\n\n"
      "Exit status: 0 ok, 1 configuration error, 64 usage error.\n";
  return text;
}

ParseResult parse_command_line(const Program& program, int argc, char* const argv[],
                               std::ostream& out, std::ostream& err) {
  ParseResult result;
  result.options.config_dir = std::string(config::kDefaultConfigDir);
  const std::string name(program.name);

  std::vector<option> longopts = {
      {"config-dir", required_argument, nullptr, kShortConfigDir},
      {"check", no_argument, nullptr, kShortCheck},
      {"version", no_argument, nullptr, kShortVersion},
      {"help", no_argument, nullptr, kShortHelp},
  };
  // '+': stop at the first non-option, so a stray argument is reported
  // instead of being permuted away; ':': report a missing argument as ':'.
  std::string shortopts = "+:C:cvh";
  if (program.needs_node) {
    longopts.push_back({"node", required_argument, nullptr, kShortNode});
    shortopts += "n:";
  }
  longopts.push_back({nullptr, 0, nullptr, 0});

  auto usage_error = [&](const std::string& message) {
    err << name << ": " << message << "; " << hint(program) << "\n";
    result.exit = true;
    result.exit_code = kExitUsage;
    return result;
  };

  bool help = false, version = false;
  optind = 0;  // glibc: 0 re-initialises getopt, so parsing can run again
  opterr = 0;  // our own messages, one line each
  int opt;
  while ((opt = getopt_long(argc, argv, shortopts.c_str(), longopts.data(), nullptr)) != -1) {
    switch (opt) {
      case kShortConfigDir:
        if (optarg[0] == '\0') return usage_error("--config-dir needs a non-empty directory");
        result.options.config_dir = optarg;
        break;
      case kShortCheck:
        result.options.check = true;
        break;
      case kShortNode:
        if (optarg[0] == '\0') return usage_error("--node needs a non-empty name");
        result.options.node = optarg;
        break;
      case kShortVersion:
        version = true;
        break;
      case kShortHelp:
        help = true;
        break;
      case ':':
        // optind has moved past the option that lacks its argument.
        return usage_error("option " + std::string(argv[optind - 1]) + " needs an argument");
      default: {
        std::string which =
            optopt ? std::string("-") + static_cast<char>(optopt) : std::string(argv[optind - 1]);
        return usage_error("unknown option " + which);
      }
    }
  }
  if (help) {
    out << usage(program);
    result.exit = true;
    return result;
  }
  if (version) {
    out << version_line(program) << "\n";
    result.exit = true;
    return result;
  }
  if (optind < argc) return usage_error("unexpected argument '" + std::string(argv[optind]) + "'");
  if (program.needs_node && result.options.node.empty()) {
    return usage_error("--node NAME is required");
  }
  return result;
}

int report_check(const Program& program, const std::string& summary,
                 const std::vector<std::string>& warnings, std::ostream& out, std::ostream& err) {
  for (const auto& w : warnings) err << program.name << ": warning: " << w << "\n";
  out << program.name << ": configuration valid: " << summary << "\n";
  return kExitOk;
}

void report_error(const Program& program, const std::exception& error, std::ostream& err) {
  std::string line = error.what();
  for (char& c : line) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  err << program.name << ": " << line << "\n";
}

}  // namespace edgepin::cli
