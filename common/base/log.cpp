#include "log.h"

#include <syslog.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace edgepin::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::Info)};
std::atomic<int> g_format{static_cast<int>(Format::Text)};
std::atomic<int> g_target{static_cast<int>(Target::Stderr)};
std::mutex g_program_mutex;
std::string g_program = "edgepin";
// openlog() keeps the ident pointer, not a copy: it must stay valid and
// unchanged while syslog is in use.
std::string g_syslog_ident;

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

const char* to_string(Level l) {
  switch (l) {
    case Level::Debug:
      return "debug";
    case Level::Info:
      return "info";
    case Level::Warning:
      return "warning";
    case Level::Error:
      return "error";
  }
  return "?";
}

int syslog_priority(Level l) {
  switch (l) {
    case Level::Debug:
      return LOG_DEBUG;
    case Level::Info:
      return LOG_INFO;
    case Level::Warning:
      return LOG_WARNING;
    case Level::Error:
      return LOG_ERR;
  }
  return LOG_ERR;
}

void set_level(Level level) { g_level.store(static_cast<int>(level)); }
void set_format(Format format) { g_format.store(static_cast<int>(format)); }
void set_program(std::string_view name) {
  std::lock_guard lock(g_program_mutex);
  g_program = std::string(name);
}
Level level() { return static_cast<Level>(g_level.load()); }
Target target() { return static_cast<Target>(g_target.load()); }

void use_syslog(int facility) {
  std::lock_guard lock(g_program_mutex);
  if (g_target.load() == static_cast<int>(Target::Syslog)) closelog();
  g_syslog_ident = g_program;
  // LOG_NDELAY: connect now, while single-threaded and before any chroot or
  // privilege change could hide /dev/log.
  openlog(g_syslog_ident.c_str(), LOG_PID | LOG_NDELAY, facility);
  g_target.store(static_cast<int>(Target::Syslog));
}

void use_stderr() {
  std::lock_guard lock(g_program_mutex);
  if (g_target.exchange(static_cast<int>(Target::Stderr)) == static_cast<int>(Target::Syslog))
    closelog();
}

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
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

std::string format_line(Format format, std::string_view time, std::string_view program, Level level,
                        std::string_view message, bool for_syslog) {
  std::string line;
  line.reserve(message.size() + 80);
  if (format == Format::Json) {
    line += '{';
    if (!for_syslog) {
      line += "\"time\":\"";
      line += json_escape(time);
      line += "\",\"program\":\"";
      line += json_escape(program);
      line += "\",";
    }
    line += "\"level\":\"";
    line += to_string(level);
    line += "\",\"msg\":\"";
    line += json_escape(message);
    line += "\"}";
    return line;
  }
  if (!for_syslog) {
    line += time;
    line += ' ';
    line += program;
    line += ' ';
  }
  line += to_string(level);
  line += ": ";
  line += message;
  return line;
}

void write(Level lvl, std::string_view message) {
  if (static_cast<int>(lvl) < g_level.load()) return;
  const auto format = static_cast<Format>(g_format.load());
  if (target() == Target::Syslog) {
    // syslog(3) is thread-safe and sends one datagram per call.
    const std::string line = format_line(format, {}, {}, lvl, message, true);
    syslog(syslog_priority(lvl), "%s", line.c_str());
    return;
  }
  std::string program;
  {
    std::lock_guard lock(g_program_mutex);
    program = g_program;
  }
  std::string line = format_line(format, timestamp(), program, lvl, message);
  line += '\n';
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
