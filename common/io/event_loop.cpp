#include "event_loop.h"

#include <event2/thread.h>
#include <pthread.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string_view>

#include "log.h"

namespace edgepin {

namespace {

// The running loops, for most_lagging_loop(). A loop is listed from
// start() until stop() (which unlists it before joining), so a listed
// pointer is always valid under the mutex.
std::mutex g_loops_mu;
std::vector<const EventLoopThread*> g_loops;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

#ifdef EDGEPIN_TEST_HOOKS
// Test builds only (tests/ha/test_systemd.py): EDGEPIN_TEST_STALL_LOOP=
// NAME:AFTER_MS:FOR_MS makes the loop named NAME block in a callback for
// FOR_MS, AFTER_MS after it starts, as a worker stuck in a deadlock would.
// Not compiled into release builds (-DEDGEPIN_TESTS=OFF, which the package
// uses), so no environment can stall a production daemon.
struct StallHook {
  std::chrono::milliseconds after{0};
  std::chrono::milliseconds stall{0};
};

std::optional<StallHook> stall_hook_for(const std::string& name) {
  const char* spec = std::getenv("EDGEPIN_TEST_STALL_LOOP");
  if (spec == nullptr) return std::nullopt;
  std::string_view s(spec);
  const size_t a = s.find(':');
  const size_t b = a == std::string_view::npos ? a : s.find(':', a + 1);
  if (b == std::string_view::npos || s.substr(0, a) != name) return std::nullopt;
  const long after = std::strtol(std::string(s.substr(a + 1, b - a - 1)).c_str(), nullptr, 10);
  const long stall = std::strtol(std::string(s.substr(b + 1)).c_str(), nullptr, 10);
  if (after < 0 || stall <= 0) return std::nullopt;
  return StallHook{std::chrono::milliseconds(after), std::chrono::milliseconds(stall)};
}

void stall_cb(evutil_socket_t, short, void* arg) {
  auto* hook = static_cast<StallHook*>(arg);
  std::this_thread::sleep_for(hook->stall);
  delete hook;
}

void arm_stall_hook(event_base* base, const std::string& name) {
  std::optional<StallHook> hook = stall_hook_for(name);
  if (!hook) return;
  log::warning("test hook: event loop " + name + " will stall for " +
               std::to_string(hook->stall.count()) + " ms in " +
               std::to_string(hook->after.count()) + " ms (EDGEPIN_TEST_STALL_LOOP)");
  const timeval tv{static_cast<time_t>(hook->after.count() / 1000),
                   static_cast<suseconds_t>((hook->after.count() % 1000) * 1000)};
  auto* arg = new StallHook(*hook);
  if (event_base_once(base, -1, EV_TIMEOUT, stall_cb, arg, &tv) != 0) delete arg;
}
#endif

}  // namespace

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
  beat_.reset(event_new(base_.get(), -1, EV_PERSIST, beat_cb, this));
}

EventLoopThread::~EventLoopThread() { stop(); }

void EventLoopThread::start() {
  // The heartbeat starts fresh with the thread: a loop started late is not
  // behind yet.
  last_beat_ns_.store(now_ns(), std::memory_order_relaxed);
  const timeval period{
      0, static_cast<suseconds_t>(std::chrono::microseconds(kHeartbeatPeriod).count())};
  event_add(beat_.get(), &period);
#ifdef EDGEPIN_TEST_HOOKS
  arm_stall_hook(base_.get(), name_);
#endif
  {
    std::lock_guard lock(g_loops_mu);
    g_loops.push_back(this);
  }
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

void EventLoopThread::beat_cb(evutil_socket_t, short, void* arg) {
  static_cast<EventLoopThread*>(arg)->beat();
}

void EventLoopThread::beat() { last_beat_ns_.store(now_ns(), std::memory_order_relaxed); }

std::chrono::steady_clock::time_point EventLoopThread::last_beat() const {
  return std::chrono::steady_clock::time_point(
      std::chrono::nanoseconds(last_beat_ns_.load(std::memory_order_relaxed)));
}

std::optional<LoopLag> most_lagging_loop(std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(g_loops_mu);
  std::optional<LoopLag> worst;
  for (const EventLoopThread* loop : g_loops) {
    const auto behind = now - loop->last_beat();
    if (!worst || behind > worst->behind) worst = LoopLag{loop->name(), behind};
  }
  return worst;
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
    // Unlisted first: a loop on its way out is not stalled, and the
    // registry must never point at a loop being destroyed.
    std::lock_guard lock(g_loops_mu);
    g_loops.erase(std::remove(g_loops.begin(), g_loops.end(), this), g_loops.end());
  }
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  // The activation stays queued until the loop runs, however late the
  // thread gets there; with the loop running it wakes it now.
  event_active(wake_.get(), EV_READ, 0);
  thread_.join();
  event_del(beat_.get());
  std::lock_guard lock(mutex_);
  stopping_ = false;  // start() may run the loop again
}

}  // namespace edgepin
