#pragma once
// The lb's admin socket commands (common/admin_socket serves them). HAProxy
// operators will recognise them:
//   help
//   show info [json]       version, uptime, pid, threads, connections
//   show stat [json]       frontends, servers, stick table (lb/stats)
//   show table [json]      stick table entries: kind, key (hex), server,
//                          time left
//   clear table            empties the stick table
//   set server NAME state ready|drain|maint
//                          ready: takes new clients; drain: keeps the
//                          clients bound to it (node tag, stick table) but
//                          gets no new ones; maint: gets nothing new
//   show sessions [json]   counts per worker, frontend and server, then one
//                          line per session (asked of each worker thread)
// Every answer is text without empty lines (the socket adds the one that
// ends it); a refused command answers one line starting with "error: ".
#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "stats.h"

namespace edgepin::lb {

class Runtime;

// Caps on what one answer lists.
inline constexpr size_t kShowTableLimit = 10000;
inline constexpr size_t kShowSessionsLimit = 10000;  // per worker
// How long `show sessions` waits for a worker thread to describe its sessions.
inline constexpr std::chrono::milliseconds kWorkerAnswerTimeout{2000};

class AdminCommands {
 public:
  // `runtime` must outlive this object, and its workers must exist while
  // handle() runs (stop the admin socket before the runtime).
  AdminCommands(const Runtime& runtime, ProcessInfo process);

  // Answers one command line; see above. Thread-safe with respect to the
  // workers (it reads shared state and posts to worker threads).
  std::string handle(std::string_view line);

 private:
  std::string show_info(bool json) const;
  std::string show_stat(bool json) const;
  std::string show_table(bool json) const;
  std::string clear_table() const;
  std::string set_server(std::string_view name, std::string_view state) const;
  std::string show_sessions(bool json) const;

  const Runtime& runtime_;
  ProcessInfo process_;
};

}  // namespace edgepin::lb
