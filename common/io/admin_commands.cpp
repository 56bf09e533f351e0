#include "admin_commands.h"

#include <algorithm>

#include "admin_socket.h"

namespace edgepin::admin {

void CommandTable::add(std::string words, Args args, std::string usage, std::string help,
                       Handler handler, size_t arg_count) {
  Command c;
  for (std::string_view w : words_of(words)) c.words.emplace_back(w);
  c.text = words;
  if (args == Args::JsonOption) usage = usage.empty() ? "[json]" : usage + " [json]";
  if (!usage.empty()) c.text += " " + usage;
  c.args = args;
  c.arg_count = args == Args::Fixed ? arg_count : 0;
  c.help = std::move(help);
  c.handler = std::move(handler);
  commands_.push_back(std::move(c));
}

std::string CommandTable::help() const {
  size_t width = std::string_view("help").size();
  for (const Command& c : commands_) width = std::max(width, c.text.size());
  width += 3;
  auto line = [width](std::string_view text, std::string_view help) {
    std::string l(text);
    l.append(width - text.size(), ' ');
    l += help;
    return l;
  };
  std::string out = line("help", "this list") + "\n";
  for (const Command& c : commands_) out += line(c.text, c.help) + "\n";
  out += line("quit", "close this connection");
  return out;
}

std::string CommandTable::usage(std::string_view words) const {
  for (const Command& c : commands_) {
    std::string joined;
    for (const auto& w : c.words) joined += (joined.empty() ? "" : " ") + w;
    if (joined == words) return error("usage: " + c.text);
  }
  return error("usage: " + std::string(words));
}

std::string CommandTable::handle(std::string_view line) const {
  const std::vector<std::string_view> w = words_of(line);
  if (w.empty()) return {};
  if (w.size() == 1 && w[0] == "help") return help();
  const Command* best = nullptr;
  for (const Command& c : commands_) {
    if (c.words.size() > w.size() || (best && best->words.size() >= c.words.size())) continue;
    if (std::equal(c.words.begin(), c.words.end(), w.begin())) best = &c;
  }
  const std::string unknown = error("unknown command " + quoted(line) + "; try 'help'");
  if (!best) return unknown;
  const std::span<const std::string_view> args(w.data() + best->words.size(),
                                               w.size() - best->words.size());
  switch (best->args) {
    case Args::None:
      if (!args.empty()) return unknown;
      break;
    case Args::JsonOption:
      if (args.size() > 1) return unknown;
      if (args.size() == 1 && args[0] != "json")
        return error("unknown option " + quoted(args[0]) + " (only 'json')");
      break;
    case Args::Fixed:
      if (args.size() != best->arg_count) return error("usage: " + best->text);
      break;
  }
  return best->handler(args);
}

}  // namespace edgepin::admin
