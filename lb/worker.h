#pragma once
// A worker thread of the lb: its own event_base, its own SO_REUSEPORT
// listener for every frontend address, and the sessions it accepted, which
// never leave it. Counters are per worker and summed on read.
#include <array>
#include <list>
#include <atomic>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/counter.h"
#include "common/event_loop.h"
#include "lb/frontend.h"

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
  std::array<Counter, tls::kHelloErrorCount> inspect_errors;
  std::vector<FrontendCounters> frontends;  // by Frontend::index; never resized
};

// Limits every worker enforces together.
struct GlobalLimits {
  uint64_t maxconn = 0;  // 0: no limit
  std::atomic<uint64_t> active{0};
};

class Worker {
 public:
  Worker(int index, const std::vector<Frontend>& frontends, GlobalLimits& limits);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Binds this worker's listeners; returns an empty string or the first error.
  std::string bind();
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

  // Called by a session when it is over: the worker destroys it.
  void release(Session* s);

  // Per-server wait queues (server maxconn). A queued session is woken when
  // a session of this worker frees a slot on its server, and by a periodic
  // check for slots freed on other workers.
  void enqueue(Session* s);
  void dequeue(Session* s);
  void slot_freed(ServerState* server);

 private:
  struct Binding {
    Worker* worker;
    const Frontend* frontend;
    ListenerPtr listener;
  };
  static void accept_cb(evconnlistener*, evutil_socket_t fd, sockaddr* addr, int len, void* arg);
  static void resume_cb(evutil_socket_t, short, void* arg);
  static void queue_cb(evutil_socket_t, short, void* arg);
  void on_accept(const Frontend& frontend, evutil_socket_t fd, const sockaddr* addr, int len);
  void pause_listeners();

  int index_;
  const std::vector<Frontend>& frontends_;
  GlobalLimits& limits_;
  EventLoopThread loop_;
  std::vector<std::unique_ptr<Binding>> bindings_;
  std::unordered_map<Session*, std::unique_ptr<Session>> sessions_;
  std::atomic<size_t> session_count_{0};
  WorkerCounters counters_;
  EventPtr resume_timer_;  // re-enables listeners paused by maxconn
  EventPtr queue_timer_;   // polls queued sessions while any wait
  std::list<Session*> queue_;  // FIFO over all servers, oldest first
  bool paused_ = false;
  bool accepting_ = true;
};

}  // namespace edgepin::lb
