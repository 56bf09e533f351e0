#pragma once
// A worker thread of the lb: its own event_base, its own SO_REUSEPORT
// listener for every frontend address, and the sessions it accepted, which
// never leave it. Counters are per worker and summed on read.
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "counter.h"
#include "event_loop.h"
#include "frontend.h"
#include "pipe_pool.h"
#include "server_queue.h"

namespace edgepin::lb {

class Session;
struct SessionInfo;

// One worker's counters for one frontend. Totals over frontends and workers
// are summed on read (lb/stats), so every outcome has exactly one counter.
// accepted == active + the sum of ends, at any quiet moment.
struct FrontendCounters {
  Counter accepted;
  Counter active;
  Counter bytes_in;   // client -> server, of ended sessions
  Counter bytes_out;  // server -> client, of ended sessions
  std::array<Counter, kEndCount> ends;
  std::array<Counter, kRouteReasonCount> routes;
};

struct WorkerCounters {
  explicit WorkerCounters(size_t frontends) : frontends(frontends) {}
  FrontendCounters& of(const Frontend& f) { return frontends[f.index]; }

  Counter connect_retries;
  Counter redispatches;
  // Times this worker stopped accepting because the global maxconn was
  // reached (clients then wait in the kernel's listen backlog).
  Counter maxconn_pauses;
  std::array<Counter, tls::kHelloErrorCount> inspect_errors;
  std::vector<FrontendCounters> frontends;  // by Frontend::index; never resized
};

// Limits every worker enforces together. A worker takes a slot in `active`
// before it starts a session and gives it back when the session is over,
// so `active` never exceeds `maxconn`.
struct GlobalLimits {
  uint64_t maxconn = 0;  // 0: no limit
  std::atomic<uint64_t> active{0};
};

// The frontends a worker serves. Each pointer shares ownership of the
// configuration snapshot it belongs to (lb/runtime.h), so a session that
// holds its frontend keeps that snapshot's router and balancer alive.
using FrontendList = std::vector<std::shared_ptr<const Frontend>>;

class Worker {
 public:
  // `frontend_slots`: how many per-frontend counter sets to allocate (the
  // highest Frontend::index plus one, over every reload).
  Worker(int index, size_t frontend_slots, GlobalLimits& limits);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Listening sockets, in two steps so that a reload either opens every new
  // socket or changes nothing. prepare() opens (disabled) a socket for each
  // (frontend name, address) of `frontends` this worker does not listen on
  // yet; returns an empty string or the first error. commit() switches to
  // `frontends`: unchanged sockets stay open and serve the new frontend
  // object, prepared ones start accepting, the others close (established
  // sessions are not touched). abort_prepared() drops prepared sockets.
  // Run on this worker's loop thread (post them), or before start().
  std::string prepare(const FrontendList& frontends);
  void commit(const FrontendList& frontends);
  void abort_prepared();
  void start() { loop_.start(); }
  // Stops accepting; established sessions go on (graceful stop).
  void stop_accepting();
  // Ends every session now. Must run on this worker's loop thread (post it).
  void shutdown_now();

  int index() const { return index_; }
  event_base* base() const { return loop_.base(); }
  WorkerCounters& counters() { return counters_; }
  const WorkerCounters& counters() const { return counters_; }
  GlobalLimits& limits() { return limits_; }
  // Number of sessions this worker holds (for a graceful stop).
  size_t session_count() const { return session_count_.load(std::memory_order_relaxed); }
  // Up to `limit` of this worker's sessions (`show sessions`). Must run on
  // this worker's loop thread (post it).
  std::vector<SessionInfo> describe_sessions(size_t limit) const;
  EventLoopThread& loop() { return loop_; }
  // The pipes its sessions' relays splice through (this thread only).
  PipePool& pipes() { return pipes_; }

  // Called by a session when it is over: the worker destroys it.
  void release(Session* s);

  // The queue of sessions waiting for a server slot (server_maxconn).
  ServerQueue& server_queue() { return server_queue_; }

 private:
  struct Binding {
    Worker* worker;
    std::shared_ptr<const Frontend> frontend;
    SocketAddress address;
    ListenerPtr listener;
  };
  static void accept_cb(evconnlistener*, evutil_socket_t fd, sockaddr* addr, int len, void* arg);
  // A client the kernel handed over after another worker took the last
  // slot: kept unread until a slot frees, which is what the listen backlog
  // would have given it. Owns the socket.
  class HeldClient {
   public:
    HeldClient(std::shared_ptr<const Frontend> frontend, evutil_socket_t fd, const sockaddr* addr,
               int len);
    HeldClient(HeldClient&& other) noexcept;
    HeldClient& operator=(HeldClient&&) = delete;
    ~HeldClient();
    const std::shared_ptr<const Frontend>& frontend() const { return frontend_; }
    const sockaddr* addr() const { return reinterpret_cast<const sockaddr*>(&addr_); }
    int len() const { return len_; }
    evutil_socket_t release_fd() { return std::exchange(fd_, -1); }

   private:
    std::shared_ptr<const Frontend> frontend_;
    evutil_socket_t fd_;
    sockaddr_storage addr_{};
    int len_;
  };

  static void resume_cb(evutil_socket_t, short, void* arg);
  void on_accept(const std::shared_ptr<const Frontend>& frontend, evutil_socket_t fd,
                 const sockaddr* addr, int len);
  // Takes a slot of the global maxconn; false if none is free.
  bool reserve_slot();
  // Starts a session for a client that holds a slot (given back on failure).
  void start_session(const std::shared_ptr<const Frontend>& frontend, evutil_socket_t fd,
                     const sockaddr* addr, int len);
  void pause_listeners();
  // Serves held clients and re-enables the listeners if slots are free;
  // otherwise checks again later.
  void try_resume();

  int index_;
  GlobalLimits& limits_;
  EventLoopThread loop_;
  // Both declared before sessions_, whose destructors use them.
  ServerQueue server_queue_;
  PipePool pipes_;  // relays give their pipes back when destroyed
  std::vector<std::unique_ptr<Binding>> bindings_;
  std::vector<std::unique_ptr<Binding>> prepared_;  // opened by prepare(), not accepting yet
  // The frontend (and so the snapshot) each session started with, released
  // after the session is destroyed.
  std::unordered_map<Session*, std::shared_ptr<const Frontend>> pins_;
  std::unordered_map<Session*, std::unique_ptr<Session>> sessions_;
  std::atomic<size_t> session_count_{0};
  WorkerCounters counters_;
  EventPtr resume_timer_;        // re-enables listeners paused by maxconn
  std::deque<HeldClient> held_;  // oldest first; at most one per pause
  std::chrono::steady_clock::time_point last_pause_log_{};
  bool paused_ = false;
  bool accepting_ = true;
};

}  // namespace edgepin::lb
