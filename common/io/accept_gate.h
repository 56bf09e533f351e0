#pragma once
// One connection limit for both binaries (lb `maxconn`, node-proxy
// `limits.max_connections` and the peer listener's own limit), with
// HAProxy's semantics:
//   - A slot is reserved atomically (compare-and-swap) before a connection
//     starts, so `active` never exceeds `max`, however many workers race
//     for the last slot.
//   - At the limit a worker stops accepting (its listeners are disabled),
//     so further clients wait in the kernel's listen backlog instead of
//     being refused; when a slot frees the worker accepts again and they
//     are served, oldest first.
//   - Each worker has its own SO_REUSEPORT sockets, so the kernel can hand
//     a worker a client just after another worker took the last slot. Such
//     a client is held, unread, and started as soon as a slot frees: what
//     the backlog would have done for it.
//   - Every pause is counted; the log line about it is written at most once
//     a second for the whole limit (all workers), with the count.
// A ConnectionLimit is shared by the workers; each worker has one
// AcceptGate per limit, used only on its loop thread.
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>

#include "counter.h"
#include "event_ptr.h"
#include "log_throttle.h"

namespace edgepin {

class ConnectionLimit {
 public:
  // `name` is the limit as the operator knows it ("maxconn"), for log
  // lines. `max` 0: no limit (slots are still counted).
  ConnectionLimit(std::string name, uint64_t max) : name_(std::move(name)), max_(max) {}
  ConnectionLimit(const ConnectionLimit&) = delete;
  ConnectionLimit& operator=(const ConnectionLimit&) = delete;

  // Takes a slot; false if all `max` are taken. Any thread.
  bool try_acquire();
  // Gives a slot back. Any thread.
  void release() { active_.fetch_sub(1, std::memory_order_relaxed); }

  const std::string& name() const { return name_; }
  uint64_t max() const { return max_; }
  uint64_t active() const { return active_.load(std::memory_order_relaxed); }
  bool full() const { return max_ && active() >= max_; }
  // Pauses over every worker, for the stats.
  uint64_t pauses() const { return pauses_.get(); }
  LogThrottle& pause_log() { return pause_log_; }
  void count_pause() { pauses_.add(); }

 private:
  const std::string name_;
  const uint64_t max_;
  std::atomic<uint64_t> active_{0};
  Counter pauses_;
  LogThrottle pause_log_;
};

class AcceptGate {
 public:
  // Enables (true) or disables (false) every listener this gate guards.
  using SetListening = std::function<void(bool)>;
  // Starts a client that now holds a slot (from a held client).
  using Start = std::function<void(evutil_socket_t fd, const sockaddr* addr, int len)>;

  // `who` names the worker in log lines ("worker 2"); `pauses` is the
  // worker's counter of pauses (the stats sum it over workers).
  AcceptGate(event_base* base, ConnectionLimit& limit, std::string who, Counter& pauses,
             SetListening set_listening);
  ~AcceptGate();  // closes held clients
  AcceptGate(const AcceptGate&) = delete;
  AcceptGate& operator=(const AcceptGate&) = delete;

  // For a client just accepted. True: it holds a slot; start it and call
  // release() when it ends (the listeners pause if that was the last slot).
  // False: no slot; pass it to hold().
  bool admit();
  // Keeps a client that got no slot unread (the gate owns `fd` from now on)
  // and pauses; `start` runs when a slot is reserved for it.
  void hold(evutil_socket_t fd, const sockaddr* addr, int len, Start start);
  // A connection admitted by this gate ended: its slot is given back and a
  // paused gate looks for work on the next loop turn (not from inside the
  // caller's callback, since starting clients may end connections).
  void release();
  // Stops for good (graceful stop): held clients are closed, as a closed
  // listener's backlog would be, and nothing resumes.
  void close();

  bool paused() const { return paused_; }
  size_t held() const { return held_.size(); }

 private:
  struct HeldClient {
    evutil_socket_t fd;
    sockaddr_storage addr;
    int len;
    Start start;
  };
  static void resume_cb(evutil_socket_t, short, void* arg);
  void pause();
  // Starts held clients while slots are free, then accepts again if any is
  // left; otherwise looks again shortly (other workers free slots too,
  // without telling this one).
  void try_resume();

  event_base* base_;
  ConnectionLimit& limit_;
  const std::string who_;
  SetListening set_listening_;
  EventPtr resume_timer_;
  std::deque<HeldClient> held_;  // oldest first
  Counter& pauses_;
  bool paused_ = false;
  bool closed_ = false;
};

}  // namespace edgepin
