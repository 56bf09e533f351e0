#pragma once
// One line per event. Targets: stderr (default) or syslog(3); formats: text
// or JSON lines. Thread-safe: each line is formatted into a local buffer and
// written with a single write(2) (stderr) or syslog(3) call, so lines from
// different worker threads never interleave.
#include <string>
#include <string_view>

namespace edgepin::log {

enum class Level : int { Debug = 0, Info = 1, Warning = 2, Error = 3 };
enum class Format : int { Text = 0, Json = 1 };
enum class Target : int { Stderr = 0, Syslog = 1 };

void set_level(Level level);
void set_format(Format format);
// The program name written in every line ("edgepin-lb", "edgepin-node-proxy");
// also the syslog ident.
void set_program(std::string_view name);
// Sends the lines to syslog(3) with `facility` (a LOG_* facility value),
// ident = the program name, pid included. Calls openlog() once here so the
// socket is opened before any worker thread logs.
void use_syslog(int facility);
// Back to stderr (closes the syslog connection if one was open).
void use_stderr();
Level level();
Target target();

void write(Level level, std::string_view message);

inline void debug(std::string_view m) { write(Level::Debug, m); }
inline void info(std::string_view m) { write(Level::Info, m); }
inline void warning(std::string_view m) { write(Level::Warning, m); }
inline void error(std::string_view m) { write(Level::Error, m); }

// Escapes a string for a JSON string body (no surrounding quotes).
std::string json_escape(std::string_view s);

// "debug", "info", "warning", "error".
const char* to_string(Level l);
// The syslog(3) priority of a level (LOG_DEBUG .. LOG_ERR).
int syslog_priority(Level l);

// One formatted line, without the trailing newline. Pure (for tests):
//   text:  TIME PROGRAM LEVEL: MESSAGE
//   json:  {"time":TIME,"program":PROGRAM,"level":LEVEL,"msg":MESSAGE}
// For syslog, which stamps time and ident itself, `time` and `program` are
// left out when `for_syslog` is set: "LEVEL: MESSAGE" or the JSON object
// with "level" and "msg" only.
std::string format_line(Format format, std::string_view time, std::string_view program, Level level,
                        std::string_view message, bool for_syslog = false);

}  // namespace edgepin::log
