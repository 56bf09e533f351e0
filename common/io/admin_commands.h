#pragma once
// The admin-socket command table both binaries fill (admin_socket.h
// carries the lines): a command is its fixed words ("show info"), its
// arguments and one line of help; the table matches a line, checks the
// arguments and answers the errors the same way in both binaries:
//   - no command's words match: "unknown command '<line>'; try 'help'";
//   - Args::JsonOption (an optional "json"): anything else after the words
//     is "unknown option '<x>' (only 'json')", more than one word an
//     unknown command;
//   - Args::Fixed (exactly `arg_count` words after the command's words,
//     as `usage` shows them): another count is "usage: <words> <usage>";
//     the handler checks the words themselves (and may answer usage()).
//   - "help" lists every command, in the order added, then "quit" (which
//     the admin socket itself handles).
// The longest matching words win ("set server" before "set").
#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace edgepin::admin {

class CommandTable {
 public:
  enum class Args { None, JsonOption, Fixed };
  // The words after the command's own; for JsonOption empty or {"json"}.
  using Handler = std::function<std::string(std::span<const std::string_view> args)>;

  // `words`: "show info"; `usage`: the arguments as help shows them ("[json]"
  // is added for JsonOption); `help`: one line.
  void add(std::string words, Args args, std::string usage, std::string help, Handler handler,
           size_t arg_count = 0);

  // The answer to one line (without its newline); empty for an empty line.
  std::string handle(std::string_view line) const;
  std::string help() const;
  // "usage: <words> <usage>" for the command with these words.
  std::string usage(std::string_view words) const;

 private:
  struct Command {
    std::vector<std::string> words;
    std::string text;  // "show info [json]"
    Args args;
    size_t arg_count;
    std::string help;
    Handler handler;
  };
  std::vector<Command> commands_;
};

}  // namespace edgepin::admin
