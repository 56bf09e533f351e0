#include "lb/worker.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "common/listener.h"
#include "common/log.h"
#include "lb/session.h"

namespace edgepin::lb {

namespace {
// How often a worker paused by maxconn looks whether it may accept again
// (sessions ending on other workers free capacity too).
constexpr timeval kResumeCheck{0, 50 * 1000};
constexpr int kBacklog = 1024;
// How often queued sessions look for a slot freed on another worker.
constexpr timeval kQueuePoll{0, 20 * 1000};
}  // namespace

Worker::Worker(int index, const std::vector<Frontend>& frontends, GlobalLimits& limits)
    : index_(index),
      frontends_(frontends),
      limits_(limits),
      loop_("lb-worker-" + std::to_string(index)),
      counters_(frontends.size()) {
  resume_timer_.reset(evtimer_new(loop_.base(), resume_cb, this));
  queue_timer_.reset(evtimer_new(loop_.base(), queue_cb, this));
}

Worker::~Worker() {
  loop_.stop();
  sessions_.clear();
  bindings_.clear();
}

std::string Worker::bind() {
  for (const Frontend& f : frontends_) {
    for (const SocketAddress& addr : f.binds) {
      auto b = std::make_unique<Binding>();
      b->worker = this;
      b->frontend = &f;
      sockaddr_storage ss{};
      socklen_t len = addr.toSockaddr(ss);
      auto r = listen_reuseport(loop_.base(), reinterpret_cast<sockaddr*>(&ss), len, kBacklog, accept_cb, b.get());
      if (!r.listener) return "frontend " + f.name + ": " + r.error;
      b->listener = std::move(r.listener);
      bindings_.push_back(std::move(b));
    }
  }
  return {};
}

void Worker::accept_cb(evconnlistener*, evutil_socket_t fd, sockaddr* addr, int len, void* arg) {
  auto* b = static_cast<Binding*>(arg);
  b->worker->on_accept(*b->frontend, fd, addr, len);
}

void Worker::on_accept(const Frontend& frontend, evutil_socket_t fd, const sockaddr* addr, int len) {
  FrontendCounters& fc = counters_.of(frontend);
  fc.accepted.add();
  if (limits_.maxconn && limits_.active.load(std::memory_order_relaxed) >= limits_.maxconn) {
    // Over the limit: stop accepting on this worker so new clients wait in
    // the kernel's backlog (as HAProxy does) and drop this one.
    fc.ends[static_cast<size_t>(End::MaxConn)].add();
    log::warning("frontend " + frontend.name + ": maxconn " + std::to_string(limits_.maxconn) +
                 " reached, pausing accept");
    ::close(fd);
    pause_listeners();
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto client = SocketAddress::fromSockaddr(addr, static_cast<socklen_t>(len));
  sockaddr_storage local_ss{};
  socklen_t local_len = sizeof local_ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&local_ss), &local_len);
  auto local = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&local_ss), local_len);
  if (!client || !local) {
    fc.ends[static_cast<size_t>(End::ClientError)].add();
    ::close(fd);
    return;
  }
  limits_.active.fetch_add(1, std::memory_order_relaxed);
  fc.active.add();
  auto s = std::make_unique<Session>(*this, frontend, fd, *client, *local);
  Session* raw = s.get();
  sessions_.emplace(raw, std::move(s));
  session_count_.store(sessions_.size(), std::memory_order_relaxed);
  raw->start();
}

void Worker::release(Session* s) {
  auto it = sessions_.find(s);
  if (it == sessions_.end()) return;
  std::unique_ptr<Session> owned = std::move(it->second);
  sessions_.erase(it);
  limits_.active.fetch_sub(1, std::memory_order_relaxed);
  counters_.of(s->frontend()).active.sub();
  session_count_.store(sessions_.size(), std::memory_order_relaxed);
  // Destroyed outside the map: its destructor frees a server slot, which
  // may start (and even end) a queued session, re-entering release().
  owned.reset();
}

std::vector<SessionInfo> Worker::describe_sessions(size_t limit) const {
  std::vector<SessionInfo> out;
  for (const auto& [s, _] : sessions_) {
    if (out.size() >= limit) break;
    out.push_back(s->info());
  }
  return out;
}

void Worker::enqueue(Session* s) {
  s->server()->queued.fetch_add(1, std::memory_order_relaxed);
  queue_.push_back(s);
  if (!evtimer_pending(queue_timer_.get(), nullptr)) evtimer_add(queue_timer_.get(), &kQueuePoll);
}

void Worker::dequeue(Session* s) {
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (*it == s) {
      s->server()->queued.fetch_sub(1, std::memory_order_relaxed);
      queue_.erase(it);
      return;
    }
  }
}

void Worker::slot_freed(ServerState* server) {
  // Oldest first; retry_slot() dequeues the session when it gets the slot.
  for (Session* s : queue_) {
    if (s->server() == server) {
      s->retry_slot();
      return;
    }
  }
}

void Worker::queue_cb(evutil_socket_t, short, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  // Copy: a session that gets its slot leaves the queue.
  std::vector<Session*> waiting(w->queue_.begin(), w->queue_.end());
  for (Session* s : waiting) s->retry_slot();
  if (!w->queue_.empty()) evtimer_add(w->queue_timer_.get(), &kQueuePoll);
}

void Worker::pause_listeners() {
  if (paused_) return;
  paused_ = true;
  for (auto& b : bindings_) evconnlistener_disable(b->listener.get());
  evtimer_add(resume_timer_.get(), &kResumeCheck);
}

void Worker::resume_cb(evutil_socket_t, short, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  if (!w->accepting_) return;
  if (w->limits_.active.load(std::memory_order_relaxed) < w->limits_.maxconn) {
    w->paused_ = false;
    for (auto& b : w->bindings_) evconnlistener_enable(b->listener.get());
    return;
  }
  evtimer_add(w->resume_timer_.get(), &kResumeCheck);
}

void Worker::stop_accepting() {
  loop_.post([this] {
    accepting_ = false;
    // Closing the sockets (not just disabling them) lets the kernel refuse
    // new clients at once instead of queueing them on a dead listener.
    bindings_.clear();
  });
}

void Worker::shutdown_now() {
  accepting_ = false;
  bindings_.clear();
  evtimer_del(resume_timer_.get());
  // abort() releases the session, which erases it from the map.
  std::vector<Session*> all;
  for (auto& [p, _] : sessions_) all.push_back(p);
  for (Session* s : all) s->abort(End::Shutdown);
}

}  // namespace edgepin::lb
