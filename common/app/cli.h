#pragma once
// The command line shared by edgepin-lb and edgepin-node-proxy:
//   -C, --config-dir DIR   the configuration directory (default /etc/edgepin)
//   -c, --check            validate the configuration, print a summary, exit
//   -n, --node NAME        which node this is (node-proxy only, required)
//   -v, --version          print the version and exit
//   -h, --help             print the usage and exit
// Exit codes: 0 ok, 1 configuration error, 64 usage error (EX_USAGE).
#include <exception>
#include <filesystem>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace edgepin::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitConfigError = 1;
// Until the servers are wired in, a run without --check stops here.
inline constexpr int kExitNotImplemented = 2;
inline constexpr int kExitUsage = 64;  // sysexits.h EX_USAGE

struct Program {
  std::string_view name;         // "edgepin-lb"
  std::string_view description;  // one line for --help
  bool needs_node = false;       // accepts and requires --node
};

struct Options {
  std::filesystem::path config_dir;
  std::string node;
  bool check = false;
};

struct ParseResult {
  // True when the program should exit now with exit_code (after --help,
  // --version or a usage error); false to go on with `options`.
  bool exit = false;
  int exit_code = kExitOk;
  Options options;
};

// Parses argv with getopt_long. --help and --version print to `out` and
// return exit with kExitOk; an unknown option, a missing argument, a stray
// argument or a missing --node print one line and a hint to `err` and
// return exit with kExitUsage. Otherwise returns the options. Not
// reentrant (getopt keeps global state); call it once per process, or from
// one thread at a time.
ParseResult parse_command_line(const Program& program, int argc, char* const argv[],
                               std::ostream& out, std::ostream& err);

// "edgepin-lb 0.1.0 (OpenSSL 3.0.x ..., libevent 2.1.12-stable)"
std::string version_line(const Program& program);

// The --help text, ending with a newline.
std::string usage(const Program& program);

// The end of --check on a valid configuration: prints each warning as
// "<program>: warning: <w>" to `err`, then "<program>: configuration valid:
// <summary>" to `out`. Returns kExitOk.
int report_check(const Program& program, const std::string& summary,
                 const std::vector<std::string>& warnings, std::ostream& out, std::ostream& err);

// Prints "<program>: <error.what()>" as one line to `err` (an error that
// spans lines is folded to one).
void report_error(const Program& program, const std::exception& error, std::ostream& err);

}  // namespace edgepin::cli
