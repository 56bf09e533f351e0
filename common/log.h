#pragma once
// One line per event on stderr (default) or as JSON lines. Thread-safe: each
// line is formatted into a local buffer and written with a single write(2),
// so lines from different worker threads never interleave.
#include <string>
#include <string_view>

namespace edgepin::log {

enum class Level : int { Debug = 0, Info = 1, Warning = 2, Error = 3 };
enum class Format : int { Text = 0, Json = 1 };

void set_level(Level level);
void set_format(Format format);
// The program name written in every line ("edgepin-lb", "edgepin-node-proxy").
void set_program(std::string_view name);
Level level();

void write(Level level, std::string_view message);

inline void debug(std::string_view m) { write(Level::Debug, m); }
inline void info(std::string_view m) { write(Level::Info, m); }
inline void warning(std::string_view m) { write(Level::Warning, m); }
inline void error(std::string_view m) { write(Level::Error, m); }

// Escapes a string for a JSON string body (no surrounding quotes).
std::string json_escape(std::string_view s);

}  // namespace edgepin::log
