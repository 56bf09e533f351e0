#pragma once
// The node-proxy's admin socket commands (common/admin_socket serves them),
// the node-side counterpart of lb/admin.*:
//   help
//   show info [json]        node, version, uptime, pid, workers, state,
//                           Tomcat, connections, requests
//   show stat [json]        every counter of the stats page
//   show sessions [json]    open client connections, per worker and total
//   set node state ready|drain
//                           drain: the health endpoint answers 503, so the
//                           lb sends no new clients here; connections
//                           already open (and their keep-alive requests)
//                           are served as before. ready: back to normal.
// Every answer is text without empty lines (the socket adds the one that
// ends it); a refused command answers one line starting with "error: ".
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

namespace edgepin::nodeproxy {

class Runtime;

class AdminCommands {
 public:
  // `runtime` must outlive this object (stop the admin socket first).
  AdminCommands(Runtime& runtime, pid_t pid);

  // Answers one command line; see above. Runs on the admin socket's thread
  // and only reads atomics, so it is safe beside the workers.
  std::string handle(std::string_view line);

 private:
  std::string show_info(bool json) const;
  std::string show_stat(bool json) const;
  std::string show_sessions(bool json) const;
  std::string set_state(std::string_view state);

  Runtime& runtime_;
  pid_t pid_;
};

}  // namespace edgepin::nodeproxy
