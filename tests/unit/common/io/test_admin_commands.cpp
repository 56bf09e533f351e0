#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "admin_commands.h"

using edgepin::admin::CommandTable;
using Args = CommandTable::Args;
using Words = std::span<const std::string_view>;

namespace {

// The table both binaries build, in miniature: what each handler was
// called with is recorded.
struct Fixture {
  CommandTable table;
  std::vector<std::string> calls;
  Fixture() {
    table.add("show info", Args::JsonOption, "", "version, uptime",
              [this](Words a) { return record("info", a); });
    table.add("show table", Args::JsonOption, "", "stick table entries",
              [this](Words a) { return record("table", a); });
    table.add("clear table", Args::None, "", "remove every entry",
              [this](Words a) { return record("clear", a); });
    table.add(
        "set server", Args::Fixed, "NAME state ready|drain|maint", "change a server's state",
        [this](Words a) { return a[1] == "state" ? record("set", a) : table.usage("set server"); },
        3);
  }
  std::string record(const std::string& what, Words a) {
    std::string c = what;
    for (auto w : a) c += " " + std::string(w);
    calls.push_back(c);
    return "ok " + c;
  }
};

}  // namespace

TEST_CASE("admin commands: words and arguments reach the handler", "[admin_commands]") {
  Fixture f;
  CHECK(f.table.handle("show info") == "ok info");
  CHECK(f.table.handle("show info json") == "ok info json");
  CHECK(f.table.handle("  show \t table  ") == "ok table");
  CHECK(f.table.handle("clear table") == "ok clear");
  CHECK(f.table.handle("set server node1 state drain") == "ok set node1 state drain");
  CHECK(f.table.handle("") == "");
  CHECK(f.calls.size() == 5);
}

TEST_CASE("admin commands: the same errors for both binaries", "[admin_commands]") {
  Fixture f;
  CHECK(f.table.handle("bogus") == "error: unknown command 'bogus'; try 'help'");
  CHECK(f.table.handle("show") == "error: unknown command 'show'; try 'help'");
  CHECK(f.table.handle("show nothing") == "error: unknown command 'show nothing'; try 'help'");
  CHECK(f.table.handle("show info xml") == "error: unknown option 'xml' (only 'json')");
  CHECK(f.table.handle("show info json more") ==
        "error: unknown command 'show info json more'; try 'help'");
  CHECK(f.table.handle("clear table now") ==
        "error: unknown command 'clear table now'; try 'help'");
  CHECK(f.table.handle("set server node1") ==
        "error: usage: set server NAME state ready|drain|maint");
  CHECK(f.table.handle("set server node1 weight 5") ==
        "error: usage: set server NAME state ready|drain|maint");
  CHECK(f.table.handle("show\x01 info") == "error: unknown command 'show? info'; try 'help'");
  CHECK(f.calls.empty());
}

TEST_CASE("admin commands: help lists every command in order, aligned, then quit",
          "[admin_commands]") {
  Fixture f;
  const std::string help = f.table.handle("help");
  CHECK(help.find("\n\n") == std::string::npos);
  CHECK(help.back() != '\n');  // the admin socket adds the empty line that ends an answer
  std::vector<std::string> lines;
  for (size_t at = 0; at <= help.size();) {
    size_t nl = help.find('\n', at);
    if (nl == std::string::npos) nl = help.size();
    lines.push_back(help.substr(at, nl - at));
    at = nl + 1;
  }
  const std::vector<std::pair<std::string, std::string>> want = {
      {"help", "this list"},
      {"show info [json]", "version, uptime"},
      {"show table [json]", "stick table entries"},
      {"clear table", "remove every entry"},
      {"set server NAME state ready|drain|maint", "change a server's state"},
      {"quit", "close this connection"}};
  REQUIRE(lines.size() == want.size());
  // The descriptions start in one column, 3 spaces after the longest syntax.
  const size_t column = std::string("set server NAME state ready|drain|maint").size() + 3;
  for (size_t i = 0; i < want.size(); ++i) {
    INFO(lines[i]);
    CHECK(lines[i].substr(0, want[i].first.size()) == want[i].first);
    CHECK(lines[i].find_first_not_of(' ', want[i].first.size()) == column);
    CHECK(lines[i].substr(column) == want[i].second);
  }
}
