#pragma once
// One event_base driven by its own thread: Edgepin's unit of concurrency.
// Each worker owns one; connections never move between them. Other threads
// talk to a loop only through post(), which runs a task on the loop's
// thread (reloads, admin commands, shutdown).
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "event_ptr.h"

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
  // When the loop last ran its heartbeat timer (see most_lagging_loop).
  std::chrono::steady_clock::time_point last_beat() const;

  // Starts the thread; the loop runs until stop().
  void start();
  // Runs `task` on the loop thread, soon. Safe from any thread; tasks
  // posted from one thread run in order.
  void post(std::function<void()> task);
  // Breaks the loop and joins the thread; pending tasks are dropped. Call
  // from another thread (or from no loop at all). Works at any time after
  // start(), also before the thread has entered its loop; without start()
  // there is nothing to stop.
  void stop();

 private:
  static void wake_cb(evutil_socket_t, short, void* arg);
  static void beat_cb(evutil_socket_t, short, void* arg);
  void run_tasks();
  void beat();

  std::string name_;
  EventBasePtr base_;
  EventPtr wake_;
  EventPtr beat_;                         // the heartbeat timer
  std::atomic<int64_t> last_beat_ns_{0};  // steady_clock, written by the loop thread
  std::mutex mutex_;
  std::vector<std::function<void()>> tasks_;
  bool stopping_ = false;  // under mutex_: the loop must break when it wakes
  std::thread thread_;
};

// Liveness, for the systemd watchdog (common/app/service_notifier.h):
// every started loop runs a timer every kHeartbeatPeriod that records the
// time; a loop whose last beat is old is not turning (a callback that does
// not return, a deadlock). Cheap: four timer callbacks a second per thread.
inline constexpr std::chrono::milliseconds kHeartbeatPeriod{250};

struct LoopLag {
  std::string name;                            // the loop thread's name
  std::chrono::steady_clock::duration behind;  // since its last heartbeat
};
// Among the loops started and not stopped (in this process), the one whose
// last heartbeat is oldest at `now`; nullopt when none runs. Any thread.
std::optional<LoopLag> most_lagging_loop(std::chrono::steady_clock::time_point now);

// Runs `fn` on `loop`'s thread and returns a future of its result: how
// another thread (an admin command) reads state a loop owns. The promise is
// shared with the task, so a caller that gives up waiting leaves the task a
// valid promise; a loop stopped before the task ran breaks the promise
// (future::get throws std::future_error).
template <typename Fn>
std::future<std::invoke_result_t<Fn&>> ask(EventLoopThread& loop, Fn fn) {
  using Result = std::invoke_result_t<Fn&>;
  auto promise = std::make_shared<std::promise<Result>>();
  std::future<Result> answer = promise->get_future();
  loop.post([promise, fn = std::move(fn)]() mutable { promise->set_value(fn()); });
  return answer;
}

}  // namespace edgepin
