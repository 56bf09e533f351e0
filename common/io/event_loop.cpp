#include "event_loop.h"

#include <event2/thread.h>
#include <pthread.h>

#include <mutex>
#include <stdexcept>

namespace edgepin {

void enable_event_threads() {
  static std::once_flag once;
  std::call_once(once, [] { evthread_use_pthreads(); });
}

EventLoopThread::EventLoopThread(std::string name) : name_(std::move(name)) {
  enable_event_threads();
  base_.reset(event_base_new());
  if (!base_) throw std::runtime_error("event_base_new failed");
  // A persistent event with no fd, activated by post(); with threads
  // enabled, event_active() from another thread wakes the loop.
  wake_.reset(event_new(base_.get(), -1, EV_PERSIST, wake_cb, this));
  event_add(wake_.get(), nullptr);
}

EventLoopThread::~EventLoopThread() { stop(); }

void EventLoopThread::start() {
  thread_ = std::thread([this] {
    // Thread names show in top -H and gdb; Linux caps them at 15 bytes.
    pthread_setname_np(pthread_self(), name_.substr(0, 15).c_str());
    event_base_loop(base_.get(), EVLOOP_NO_EXIT_ON_EMPTY);
  });
}

void EventLoopThread::post(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    tasks_.push_back(std::move(task));
  }
  event_active(wake_.get(), EV_READ, 0);
}

void EventLoopThread::wake_cb(evutil_socket_t, short, void* arg) {
  static_cast<EventLoopThread*>(arg)->run_tasks();
}

void EventLoopThread::run_tasks() {
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      // Broken from inside the loop, so it cannot be lost: a loopbreak made
      // before the thread enters event_base_loop() is cleared on entry.
      tasks_.clear();
      event_base_loopbreak(base_.get());
      return;
    }
    batch.swap(tasks_);
  }
  for (auto& t : batch) t();
}

void EventLoopThread::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  // The activation stays queued until the loop runs, however late the
  // thread gets there; with the loop running it wakes it now.
  event_active(wake_.get(), EV_READ, 0);
  thread_.join();
  std::lock_guard lock(mutex_);
  stopping_ = false;  // start() may run the loop again
}

}  // namespace edgepin
