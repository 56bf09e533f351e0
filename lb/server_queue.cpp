#include "server_queue.h"

namespace edgepin::lb {

ServerQueue::ServerQueue(event_base* base) { poll_timer_.reset(evtimer_new(base, poll_cb, this)); }

ServerQueue::Admit ServerQueue::acquire(ServerState& server, uint32_t maxconn, uint32_t queue_size,
                                        Waiter& w) {
  if (server.try_acquire(maxconn)) return Admit::Slot;
  if (server.queued.load(std::memory_order_relaxed) >= queue_size) return Admit::Full;
  server.queued.fetch_add(1, std::memory_order_relaxed);
  queue_.push_back({&w, &server, maxconn});
  if (!evtimer_pending(poll_timer_.get(), nullptr)) evtimer_add(poll_timer_.get(), &kPoll);
  return Admit::Queued;
}

void ServerQueue::cancel(Waiter& w) {
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->waiter == &w) {
      it->server->queued.fetch_sub(1, std::memory_order_relaxed);
      queue_.erase(it);
      return;
    }
  }
}

void ServerQueue::release(ServerState& server) {
  server.release();
  serve(&server);
}

void ServerQueue::serve(const ServerState* server) {
  // One waiter at a time, scanning afresh after each: on_slot() may end
  // other sessions or queue new ones, so no iterator or pointer collected
  // before it is trusted after it.
  for (;;) {
    auto it = queue_.begin();
    while (it != queue_.end() &&
           ((server && it->server != server) || !it->server->try_acquire(it->maxconn)))
      ++it;
    if (it == queue_.end()) return;
    it->server->queued.fetch_sub(1, std::memory_order_relaxed);
    Waiter* w = it->waiter;
    queue_.erase(it);
    w->on_slot();
    // A released slot serves one waiter; the poll serves as many as fit.
    if (server) return;
  }
}

void ServerQueue::poll_cb(evutil_socket_t, short, void* arg) {
  auto* q = static_cast<ServerQueue*>(arg);
  q->serve(nullptr);
  if (!q->queue_.empty()) evtimer_add(q->poll_timer_.get(), &kPoll);
}

}  // namespace edgepin::lb
