#include "accept_gate.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "log.h"

namespace edgepin {
namespace {
// How often a paused gate looks whether slots were freed on other workers.
constexpr timeval kResumeCheck{0, 50 * 1000};
}  // namespace

bool ConnectionLimit::try_acquire() {
  if (!max_) {
    active_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  // Compare-and-swap, not add-then-check: two workers racing for the last
  // slot must not both get it, and a failed attempt must leave no trace.
  uint64_t cur = active_.load(std::memory_order_relaxed);
  do {
    if (cur >= max_) return false;
  } while (!active_.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed));
  return true;
}

AcceptGate::AcceptGate(event_base* base, ConnectionLimit& limit, std::string who, Counter& pauses,
                       SetListening set_listening)
    : base_(base),
      limit_(limit),
      who_(std::move(who)),
      set_listening_(std::move(set_listening)),
      pauses_(pauses) {
  resume_timer_.reset(evtimer_new(base_, resume_cb, this));
}

AcceptGate::~AcceptGate() {
  for (HeldClient& h : held_) ::close(h.fd);
}

bool AcceptGate::admit() {
  if (!limit_.try_acquire()) return false;
  // That was the last slot: leave the next clients in the kernel's backlog
  // rather than accepting them (libevent ends its accept loop at once).
  if (limit_.full()) pause();
  return true;
}

void AcceptGate::hold(evutil_socket_t fd, const sockaddr* addr, int len, Start start) {
  if (closed_) {
    ::close(fd);
    return;
  }
  HeldClient h{
      fd, {}, std::clamp(len, 0, static_cast<int>(sizeof(sockaddr_storage))), std::move(start)};
  std::memcpy(&h.addr, addr, static_cast<size_t>(h.len));
  held_.push_back(std::move(h));
  pause();
}

void AcceptGate::release() {
  limit_.release();
  if (paused_ && !closed_) {
    static constexpr timeval kNow{0, 0};
    evtimer_del(resume_timer_.get());
    evtimer_add(resume_timer_.get(), &kNow);
  }
}

void AcceptGate::close() {
  closed_ = true;
  evtimer_del(resume_timer_.get());
  for (HeldClient& h : held_) ::close(h.fd);
  held_.clear();
}

void AcceptGate::pause() {
  if (paused_ || closed_) return;
  paused_ = true;
  pauses_.add();
  limit_.count_pause();
  set_listening_(false);
  // Under sustained overload the listeners pause and resume with every
  // connection that ends: one line a second for the whole limit.
  if (const uint64_t n = limit_.pause_log().event()) {
    log::warning(limit_.name() + " " + std::to_string(limit_.max()) + " reached: " + who_ +
                 " stops accepting, new clients wait in the listen backlog (" + std::to_string(n) +
                 (n == 1 ? " pause" : " pauses") + " since the last line, " +
                 std::to_string(limit_.pauses()) + " in all)");
  }
  evtimer_add(resume_timer_.get(), &kResumeCheck);
}

void AcceptGate::resume_cb(evutil_socket_t, short, void* arg) {
  static_cast<AcceptGate*>(arg)->try_resume();
}

void AcceptGate::try_resume() {
  if (closed_ || !paused_) return;
  // Held clients first: the kernel handed them over before anything that
  // is still in the backlog.
  while (!held_.empty()) {
    if (!limit_.try_acquire()) {
      evtimer_add(resume_timer_.get(), &kResumeCheck);
      return;
    }
    HeldClient h = std::move(held_.front());
    held_.pop_front();
    h.start(h.fd, reinterpret_cast<const sockaddr*>(&h.addr), h.len);
    if (closed_) return;  // the start may have stopped the worker
  }
  if (limit_.full()) {
    evtimer_add(resume_timer_.get(), &kResumeCheck);
    return;
  }
  paused_ = false;
  set_listening_(true);
  log::debug(who_ + " accepts again (" + std::to_string(limit_.active()) + " of " + limit_.name() +
             " " + std::to_string(limit_.max()) + " in use)");
}

}  // namespace edgepin
