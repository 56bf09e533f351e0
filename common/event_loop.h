#pragma once
// One event_base driven by its own thread: Edgepin's unit of concurrency.
// Each worker owns one; connections never move between them. Other threads
// talk to a loop only through post(), which runs a task on the loop's
// thread (reloads, admin commands, shutdown).
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/event_ptr.h"

namespace edgepin {

// libevent's locking must be switched on before the first event_base is
// created if events are activated from other threads (post() does that).
// Idempotent; cheap after the first call.
void enable_event_threads();

class EventLoopThread {
 public:
  explicit EventLoopThread(std::string name);
  ~EventLoopThread();  // stops and joins
  EventLoopThread(const EventLoopThread&) = delete;
  EventLoopThread& operator=(const EventLoopThread&) = delete;

  event_base* base() const { return base_.get(); }
  const std::string& name() const { return name_; }

  // Starts the thread; the loop runs until stop().
  void start();
  // Runs `task` on the loop thread, soon. Safe from any thread; tasks
  // posted from one thread run in order.
  void post(std::function<void()> task);
  // Breaks the loop and joins the thread; pending tasks are dropped. Call
  // from another thread (or from no loop at all).
  void stop();

 private:
  static void wake_cb(evutil_socket_t, short, void* arg);
  void run_tasks();

  std::string name_;
  EventBasePtr base_;
  EventPtr wake_;
  std::mutex mutex_;
  std::vector<std::function<void()>> tasks_;
  std::thread thread_;
};

}  // namespace edgepin
