#include "worker.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "listener.h"
#include "log.h"
#include "session.h"

namespace edgepin::lb {

namespace {
// How often a worker paused by maxconn looks whether it may accept again
// (sessions ending on other workers free capacity too).
constexpr timeval kResumeCheck{0, 50 * 1000};
constexpr int kBacklog = 1024;
// Pipes for the relays' splice(2): one per direction with bytes in flight,
// so the limit only matters under many concurrent transfers (then relays
// copy). 256 KiB pipes: a splice moves up to that much per call.
constexpr size_t kMaxPipes = 1024;
constexpr size_t kMaxIdlePipes = 64;
constexpr size_t kPipeBytes = 256 * 1024;
}  // namespace

Worker::Worker(int index, size_t frontend_slots, GlobalLimits& limits)
    : index_(index),
      limits_(limits),
      loop_("lb-worker-" + std::to_string(index)),
      server_queue_(loop_.base()),
      pipes_(kMaxPipes, kMaxIdlePipes, kPipeBytes),
      counters_(frontend_slots) {
  resume_timer_.reset(evtimer_new(loop_.base(), resume_cb, this));
}

Worker::~Worker() {
  loop_.stop();
  sessions_.clear();
  bindings_.clear();
}

std::string Worker::prepare(const FrontendList& frontends) {
  auto have = [this](const std::string& name, const SocketAddress& addr) {
    for (const auto* list : {&bindings_, &prepared_})
      for (const auto& b : *list)
        if (b->frontend->name == name && b->address == addr) return true;
    return false;
  };
  for (const auto& f : frontends) {
    for (const SocketAddress& addr : f->binds) {
      if (have(f->name, addr)) continue;
      auto b = std::make_unique<Binding>();
      b->worker = this;
      b->frontend = f;
      b->address = addr;
      sockaddr_storage ss{};
      socklen_t len = addr.to_sockaddr(ss);
      auto r = listen_reuseport(loop_.base(), reinterpret_cast<sockaddr*>(&ss), len, kBacklog,
                                accept_cb, b.get());
      if (!r.listener) return "frontend " + f->name + ": " + r.error;
      // Not accepting before commit(): on the loop thread no callback can
      // run between the creation and this.
      evconnlistener_disable(r.listener.get());
      b->listener = std::move(r.listener);
      prepared_.push_back(std::move(b));
    }
  }
  return {};
}

void Worker::commit(const FrontendList& frontends) {
  auto find = [&frontends](const Binding& b) -> std::shared_ptr<const Frontend> {
    for (const auto& f : frontends)
      if (f->name == b.frontend->name)
        for (const SocketAddress& addr : f->binds)
          if (addr == b.address) return f;
    return nullptr;
  };
  std::vector<std::unique_ptr<Binding>> next;
  // A kept socket is never closed and reopened: that would drop the SYNs
  // in its backlog.
  for (auto& b : bindings_) {
    if (auto f = find(*b)) {
      b->frontend = std::move(f);
      next.push_back(std::move(b));
    }
  }
  for (auto& b : prepared_) {
    auto f = find(*b);
    if (!f || !accepting_) continue;
    b->frontend = std::move(f);
    if (!paused_) evconnlistener_enable(b->listener.get());
    next.push_back(std::move(b));
  }
  prepared_.clear();
  // Removed bindings close here; their held clients keep their frontend.
  bindings_ = std::move(next);
}

void Worker::abort_prepared() { prepared_.clear(); }

void Worker::accept_cb(evconnlistener*, evutil_socket_t fd, sockaddr* addr, int len, void* arg) {
  auto* b = static_cast<Binding*>(arg);
  b->worker->on_accept(b->frontend, fd, addr, len);
}

Worker::HeldClient::HeldClient(std::shared_ptr<const Frontend> frontend, evutil_socket_t fd,
                               const sockaddr* addr, int len)
    : frontend_(std::move(frontend)), fd_(fd), len_(std::min(len, static_cast<int>(sizeof addr_))) {
  std::memcpy(&addr_, addr, static_cast<size_t>(len_));
}

Worker::HeldClient::HeldClient(HeldClient&& other) noexcept
    : frontend_(std::move(other.frontend_)),
      fd_(std::exchange(other.fd_, -1)),
      addr_(other.addr_),
      len_(other.len_) {}

Worker::HeldClient::~HeldClient() {
  if (fd_ >= 0) ::close(fd_);
}

bool Worker::reserve_slot() {
  if (!limits_.maxconn) {
    limits_.active.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  // Compare-and-swap, not add-then-check: two workers racing for the last
  // slot must not both get it.
  uint64_t cur = limits_.active.load(std::memory_order_relaxed);
  do {
    if (cur >= limits_.maxconn) return false;
  } while (!limits_.active.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed));
  return true;
}

void Worker::on_accept(const std::shared_ptr<const Frontend>& frontend, evutil_socket_t fd,
                       const sockaddr* addr, int len) {
  if (!reserve_slot()) {
    // This worker paused as soon as it took the last slot itself, so a
    // client gets here only when another worker took it first (each worker
    // has its own SO_REUSEPORT socket). Like HAProxy, excess clients are
    // not refused: this one waits, unread, as it would in the backlog.
    held_.emplace_back(frontend, fd, addr, len);
    pause_listeners();
    return;
  }
  start_session(frontend, fd, addr, len);
  // That was the last slot: leave the next clients in the kernel's backlog
  // rather than accepting them (libevent stops its accept loop at once).
  if (limits_.maxconn && limits_.active.load(std::memory_order_relaxed) >= limits_.maxconn)
    pause_listeners();
}

void Worker::start_session(const std::shared_ptr<const Frontend>& pinned, evutil_socket_t fd,
                           const sockaddr* addr, int len) {
  const Frontend& frontend = *pinned;
  FrontendCounters& fc = counters_.of(frontend);
  fc.accepted.add();
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto client = SocketAddress::from_sockaddr(addr, static_cast<socklen_t>(len));
  sockaddr_storage local_ss{};
  socklen_t local_len = sizeof local_ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&local_ss), &local_len);
  auto local = SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&local_ss), local_len);
  if (!client || !local) {
    fc.ends[static_cast<size_t>(End::ClientError)].add();
    limits_.active.fetch_sub(1, std::memory_order_relaxed);
    ::close(fd);
    return;
  }
  fc.active.add();
  auto s = std::make_unique<Session>(*this, frontend, fd, *client, *local);
  Session* raw = s.get();
  sessions_.emplace(raw, std::move(s));
  pins_.emplace(raw, pinned);
  session_count_.store(sessions_.size(), std::memory_order_relaxed);
  raw->start();
}

void Worker::release(Session* s) {
  auto it = sessions_.find(s);
  if (it == sessions_.end()) return;
  std::unique_ptr<Session> owned = std::move(it->second);
  sessions_.erase(it);
  // Released after the session: its destructor still reads its frontend.
  std::shared_ptr<const Frontend> pin;
  if (auto p = pins_.find(s); p != pins_.end()) {
    pin = std::move(p->second);
    pins_.erase(p);
  }
  limits_.active.fetch_sub(1, std::memory_order_relaxed);
  counters_.of(s->frontend()).active.sub();
  session_count_.store(sessions_.size(), std::memory_order_relaxed);
  // Destroyed outside the map: its destructor frees a server slot, which
  // may start (and even end) a queued session, re-entering release().
  owned.reset();
  if (paused_ && accepting_) {
    // A slot is free: resume from the loop rather than from here, deep in
    // some session's callback (resuming may start sessions, which may end).
    static constexpr timeval kNow{0, 0};
    evtimer_del(resume_timer_.get());
    evtimer_add(resume_timer_.get(), &kNow);
  }
}

std::vector<SessionInfo> Worker::describe_sessions(size_t limit) const {
  std::vector<SessionInfo> out;
  for (const auto& [s, _] : sessions_) {
    if (out.size() >= limit) break;
    out.push_back(s->info());
  }
  return out;
}

void Worker::pause_listeners() {
  if (paused_) return;
  paused_ = true;
  counters_.maxconn_pauses.add();
  for (auto& b : bindings_) evconnlistener_disable(b->listener.get());
  // At most one line a second per worker: under sustained overload the
  // listeners pause and resume with every session that ends.
  const auto now = std::chrono::steady_clock::now();
  if (now - last_pause_log_ >= std::chrono::seconds(1)) {
    last_pause_log_ = now;
    log::warning("maxconn " + std::to_string(limits_.maxconn) + " reached: worker " +
                 std::to_string(index_) +
                 " stops accepting, new clients wait in the listen backlog (" +
                 std::to_string(counters_.maxconn_pauses.get()) + " pauses on this worker)");
  }
  evtimer_add(resume_timer_.get(), &kResumeCheck);
}

void Worker::resume_cb(evutil_socket_t, short, void* arg) {
  static_cast<Worker*>(arg)->try_resume();
}

void Worker::try_resume() {
  if (!accepting_ || !paused_) return;
  // Held clients first: the kernel handed them over before anything that
  // is still in the backlog.
  while (!held_.empty()) {
    if (!reserve_slot()) {
      evtimer_add(resume_timer_.get(), &kResumeCheck);
      return;
    }
    HeldClient h = std::move(held_.front());
    held_.pop_front();
    start_session(h.frontend(), h.release_fd(), h.addr(), h.len());
  }
  if (limits_.maxconn && limits_.active.load(std::memory_order_relaxed) >= limits_.maxconn) {
    // Slots are freed on other workers too, which do not tell this one.
    evtimer_add(resume_timer_.get(), &kResumeCheck);
    return;
  }
  paused_ = false;
  for (auto& b : bindings_) evconnlistener_enable(b->listener.get());
  log::debug("worker " + std::to_string(index_) + " accepts again (" +
             std::to_string(limits_.active.load(std::memory_order_relaxed)) + " of maxconn " +
             std::to_string(limits_.maxconn) + " in use)");
}

void Worker::stop_accepting() {
  loop_.post([this] {
    accepting_ = false;
    // Closing the sockets (not just disabling them) lets the kernel refuse
    // new clients at once instead of queueing them on a dead listener.
    // Held clients go the way of the backlog they stand for.
    bindings_.clear();
    prepared_.clear();
    held_.clear();
    evtimer_del(resume_timer_.get());
  });
}

void Worker::shutdown_now() {
  accepting_ = false;
  bindings_.clear();
  held_.clear();
  evtimer_del(resume_timer_.get());
  // abort() releases the session, which erases it from the map.
  std::vector<Session*> all;
  for (auto& [p, _] : sessions_) all.push_back(p);
  for (Session* s : all) s->abort(End::Shutdown);
}

}  // namespace edgepin::lb
