#pragma once
// HAProxy's server queue, for one worker: a client routed to a server that
// is at its `server_maxconn` waits here, oldest first, until a slot on that
// server frees. The queue owns the whole mechanism: taking a slot, waiting,
// handing a freed slot to the oldest waiter, and polling for slots freed
// by other workers (whose sessions do not know this queue). A waiter only
// says which server it waits for and what to do once it holds the slot.
//
// One queue per worker thread (not thread-safe); slots themselves are the
// servers' atomic counters (ServerState::try_acquire), shared by all
// workers.
#include <sys/time.h>

#include <cstdint>
#include <list>

#include "event_ptr.h"
#include "server.h"

namespace edgepin::lb {

class ServerQueue {
 public:
  class Waiter {
   public:
    // Now holds a slot on the server it waited for (it left the queue).
    // May end the waiter, even destroy it.
    virtual void on_slot() = 0;

   protected:
    ~Waiter() = default;
  };

  enum class Admit : uint8_t {
    Slot,    // the caller holds a slot now
    Queued,  // the caller waits; on_slot() comes later, or cancel() it
    Full,    // the server's queue holds `queue_size` waiters already
  };

  // How often waiters look for slots freed on other workers.
  static constexpr timeval kPoll{0, 20 * 1000};

  explicit ServerQueue(event_base* base);
  ServerQueue(const ServerQueue&) = delete;
  ServerQueue& operator=(const ServerQueue&) = delete;

  // Takes a slot on `server` (`maxconn` 0: no limit), or queues `w` behind
  // the others waiting for it. Waiters are counted in server.queued, which
  // all workers share, so `queue_size` bounds the server's whole queue.
  Admit acquire(ServerState& server, uint32_t maxconn, uint32_t queue_size, Waiter& w);
  // Takes `w` out of the queue (its timeout, its end); no-op if absent.
  void cancel(Waiter& w);
  // Gives a slot back. The oldest waiter of this worker for that server
  // gets it at once (its on_slot() runs before this returns).
  void release(ServerState& server);

  size_t waiting() const { return queue_.size(); }

 private:
  struct Entry {
    Waiter* waiter;
    ServerState* server;
    uint32_t maxconn;
  };
  static void poll_cb(evutil_socket_t, short, void* arg);
  // Hands slots to waiters of `server` (all servers if null), oldest first.
  void serve(const ServerState* server);

  std::list<Entry> queue_;  // over all servers, oldest first
  EventPtr poll_timer_;
};

}  // namespace edgepin::lb
