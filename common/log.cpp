#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace edgepin::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::Info)};
std::atomic<int> g_format{static_cast<int>(Format::Text)};
std::mutex g_program_mutex;
std::string g_program = "edgepin";

const char* level_name(Level l) {
  switch (l) {
    case Level::Debug: return "debug";
    case Level::Info: return "info";
    case Level::Warning: return "warning";
    case Level::Error: return "error";
  }
  return "?";
}

std::string timestamp() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900,
                t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                static_cast<int>(ts.tv_nsec / 1000000));
  return buf;
}

}  // namespace

void set_level(Level level) { g_level.store(static_cast<int>(level)); }
void set_format(Format format) { g_format.store(static_cast<int>(format)); }
void set_program(std::string_view name) {
  std::lock_guard lock(g_program_mutex);
  g_program = std::string(name);
}
Level level() { return static_cast<Level>(g_level.load()); }

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

void write(Level lvl, std::string_view message) {
  if (static_cast<int>(lvl) < g_level.load()) return;
  std::string program;
  {
    std::lock_guard lock(g_program_mutex);
    program = g_program;
  }
  std::string line;
  line.reserve(message.size() + 64);
  if (static_cast<Format>(g_format.load()) == Format::Json) {
    line += "{\"time\":\"" + timestamp() + "\",\"program\":\"" + json_escape(program) +
            "\",\"level\":\"" + level_name(lvl) + "\",\"msg\":\"" + json_escape(message) + "\"}\n";
  } else {
    line += timestamp();
    line += ' ';
    line += program;
    line += ' ';
    line += level_name(lvl);
    line += ": ";
    line += message;
    line += '\n';
  }
  // One write per line keeps lines from concurrent threads whole.
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace edgepin::log
