#pragma once
// Pipes for splice(2), lent to relays while they have bytes in flight.
//
// A relay that moves bytes socket -> pipe -> socket needs a pipe only while
// bytes are in it: an idle connection holds none, so thousands of idle
// clients do not cost two descriptors more each (HAProxy's pipe pool works
// the same way). A pool serves one event loop (one thread, no locking); it
// keeps up to `max_idle` empty pipes for reuse and lends at most
// `max_in_use` at once, after which relays read and write the sockets
// directly instead (slower, never an error).
#include <cstddef>
#include <memory>
#include <vector>

namespace edgepin {

// Both ends of one non-blocking pipe; closes them when destroyed.
struct Pipe {
  Pipe(int rd, int wr, size_t capacity) : rd(rd), wr(wr), capacity(capacity) {}
  ~Pipe();
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;

  const int rd;           // read end: splice from it to a socket
  const int wr;           // write end: splice into it from a socket
  const size_t capacity;  // F_GETPIPE_SZ after the resize
  size_t bytes = 0;       // in the pipe now, as counted by its user
};

class PipePool {
 public:
  // `pipe_bytes`: the size asked for with F_SETPIPE_SZ (the kernel's default
  // stays when that is refused, e.g. above /proc/sys/fs/pipe-max-size).
  PipePool(size_t max_in_use, size_t max_idle, size_t pipe_bytes);
  PipePool(const PipePool&) = delete;
  PipePool& operator=(const PipePool&) = delete;

  // An empty pipe, or null when `max_in_use` are lent or pipe2() fails.
  // Every pipe got must be given back with put().
  std::unique_ptr<Pipe> get();
  // Takes a pipe back. One that still holds bytes (its relay ended early)
  // is closed: nobody could tell its bytes from the next user's.
  void put(std::unique_ptr<Pipe> p);

  size_t in_use() const { return in_use_; }
  size_t idle() const { return idle_.size(); }
  // get() calls that found no pipe (limit reached or pipe2() failed).
  size_t refusals() const { return refusals_; }

 private:
  size_t max_in_use_;
  size_t max_idle_;
  size_t pipe_bytes_;
  size_t in_use_ = 0;
  size_t refusals_ = 0;
  std::vector<std::unique_ptr<Pipe>> idle_;
};

}  // namespace edgepin
