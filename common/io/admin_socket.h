#pragma once
// A Unix-socket command server for runtime administration, in the style of
// HAProxy's stats socket, shared by both binaries (each supplies its own
// command handler):
//   - one command per line (LF, an optional CR before it is dropped), at
//     most `max_line` bytes; a longer line is answered with an error and the
//     connection is closed, since what follows cannot be trusted to start a
//     command;
//   - any number of commands per connection, pipelined or not; answers come
//     back in order, each ending with an empty line, so a script reads until
//     the blank line (`echo "show info" | socat - UNIX:/run/edgepin/lb.sock`
//     works too: the connection closes after the last answer);
//   - `quit` closes the connection; an empty line gets an empty answer;
//   - a connection idle for `idle_timeout` is closed; at most `max_clients`
//     connections at once; a client that does not read its answers stops
//     being read once `max_pending_output` bytes wait for it.
// The socket file: a stale one (nobody accepts on it) is replaced; a live one
// (another process accepts on it) makes start() fail rather than steal it;
// anything else at the path is left alone and start() fails. The socket is
// bound under a temporary name, given its mode, then renamed into place, so
// the path never exists with looser permissions (HAProxy does the same). It
// is removed on stop() if it is still ours.
#include <sys/time.h>
#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "event_loop.h"
#include "event_ptr.h"

namespace edgepin {

inline constexpr size_t kAdminDefaultMaxLine = 4096;
inline constexpr size_t kAdminDefaultMaxClients = 32;
inline constexpr size_t kAdminDefaultMaxPendingOutput = 1024 * 1024;
inline constexpr timeval kAdminDefaultIdleTimeout{60, 0};

class AdminSocket {
 public:
  // Answers one command line (without its line ending; never "quit" and
  // never empty). The answer is text lines; trailing newlines are trimmed
  // and the server adds the final empty line, so the answer itself must not
  // contain an empty line. Runs on the socket's event loop thread.
  using Handler = std::function<std::string(std::string_view line)>;

  struct Options {
    std::filesystem::path path;
    mode_t mode = 0660;
    size_t max_line = kAdminDefaultMaxLine;
    timeval idle_timeout = kAdminDefaultIdleTimeout;
    size_t max_clients = kAdminDefaultMaxClients;
    size_t max_pending_output = kAdminDefaultMaxPendingOutput;
  };

  // Serves on an event loop thread of its own, named `thread_name`.
  AdminSocket(Options options, Handler handler, std::string thread_name = "admin-socket");
  // Serves on `base`, driven by the caller. start() and stop() must then run
  // on the thread that drives `base`, or while nothing drives it.
  AdminSocket(event_base* base, Options options, Handler handler);
  // Stops (see stop()).
  ~AdminSocket();
  AdminSocket(const AdminSocket&) = delete;
  AdminSocket& operator=(const AdminSocket&) = delete;

  // Creates the socket file and starts serving. Returns an empty string, or
  // the reason it did not start ("admin socket /run/x.sock: another process
  // is listening there"); nothing is left behind then.
  std::string start();
  // Closes every connection and the listener and removes the socket file if
  // it is still the one start() made. Idempotent.
  void stop();

  const std::filesystem::path& path() const { return options_.path; }

 private:
  struct Connection;
  static void accept_cb(evconnlistener*, evutil_socket_t fd, sockaddr*, int, void* arg);
  static void read_cb(bufferevent* bev, void* arg);
  static void write_cb(bufferevent* bev, void* arg);
  static void event_cb(bufferevent* bev, short what, void* arg);

  void on_accept(evutil_socket_t fd);
  // Answers the complete lines in `c`'s input (all of it after EOF).
  // Returns false when `c` was closed (and destroyed).
  bool process(Connection& c);
  void answer(Connection& c, std::string text);
  // Stops reading and closes once the output is flushed. Returns false when
  // that was at once (`c` is destroyed).
  bool close_after_flush(Connection& c);
  void close(Connection& c);

  Options options_;
  Handler handler_;
  std::unique_ptr<EventLoopThread> own_loop_;  // null when serving on the caller's base
  event_base* base_;
  ListenerPtr listener_;
  std::unordered_map<Connection*, std::unique_ptr<Connection>> connections_;
  bool bound_ = false;  // the socket file at path() is ours
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

// Helpers both binaries' command sets share.
namespace admin {
// The words of a command line, split on spaces and tabs.
std::vector<std::string_view> words_of(std::string_view line);
// A client's word echoed in an error: quoted, printable ASCII only, bounded
// (a command line may hold anything).
std::string quoted(std::string_view word);
// "error: <what>", the first word every failed command answers with.
std::string error(std::string_view what);
}  // namespace admin

}  // namespace edgepin
