#pragma once
// A byte-exact, bidirectional relay between two connected sockets with
// back-pressure and half-close, in le-proxy's pattern but owning both sides:
// - reading from a side stops while the bytes read from it and not yet
//   written to the other side reach `high_watermark` (or fill the pipe
//   they wait in), and resumes once they are written, so a connection never
//   holds more than about two watermarks of data;
// - an EOF from one side is passed on as shutdown(SHUT_WR) on the other once
//   everything read before it has been written, and the other direction goes
//   on until it closes too (TCP half-close);
// - the relay ends when both directions are closed and flushed, on an error
//   or reset on either side, or when an inactivity timeout expires.
//
// Two ways to move the bytes, same contract:
// - buffered (the default): through the bufferevents' buffers, for sides
//   that are not plain sockets (the node-proxy's TLS client in a tunnel);
// - direct (`Options::direct`, both sides plain sockets): the relay takes
//   over the two descriptors (edge-triggered events registered once, no
//   epoll_ctl per pause or resume) and moves bytes socket -> pipe -> socket
//   with splice(2), so they never enter user space (nginx and HAProxy
//   splice the same way). A direction uses a pipe only while bytes are in
//   it (Options::pipes lends them); without one, and while an observer
//   watches the server's bytes, it reads and writes the sockets directly,
//   up to `high_watermark` bytes per read.
//
// Inactivity, in HAProxy's terms (side a is the client, side b the server):
// - `a_timeout` applies while the relay waits for a to send, `b_timeout`
//   while it waits for b. It waits for the side that did not speak last;
//   before anyone spoke it waits for a. A side that does not read what it
//   is sent also counts as the one waited for, since the other side then
//   stops being read.
// - Once one side has closed (EOF) and the other has not, the other is
//   waited for under its own timeout (HAProxy's client-fin/server-fin):
//   a half-closed connection does not get the long tunnel timeout.
// - `idle_timeout` (the tunnel timeout), when set, replaces both once bytes
//   have flowed both ways and neither side has closed: then only a silence
//   of both sides for that long ends the relay. With `a_timeout` and
//   `b_timeout` both unset it applies from the start, and to a half-closed
//   connection too.
// The timer is lazy: a read only stores the time; the timer, when it
// fires, goes back to sleep for whatever is left. No timer work per read.
//
// Used by the lb (client <-> server) and by the node-proxy for tunnels
// (WebSocket after a 101). Runs on the event_base of its bufferevents; not
// thread-safe, like everything attached to one event_base.
#include <sys/time.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "event_ptr.h"
#include "pipe_pool.h"

namespace edgepin {

#define EDGEPIN_RELAY_ENDS(X)                                          \
  X(BothClosed, "both_closed")   /* each side closed after flushing */ \
  X(AReset, "a_error")           /* read/write error on side a */      \
  X(BReset, "b_error")           /* read/write error on side b */      \
  X(IdleTimeout, "idle_timeout") /* Result::timeout says which one */  \
  X(Stopped, "stopped")          /* the owner called stop() */

enum class RelayEnd : uint8_t {
#define X(name, str) name,
  EDGEPIN_RELAY_ENDS(X)
#undef X
};

const char* to_string(RelayEnd e);

// Which inactivity timeout ended a relay (RelayEnd::IdleTimeout).
enum class RelayTimeout : uint8_t {
  None,    // the relay did not end by a timeout
  A,       // waited for side a too long (Options::a_timeout)
  B,       // waited for side b too long (Options::b_timeout)
  Tunnel,  // both sides silent too long (Options::idle_timeout)
};
const char* to_string(RelayTimeout t);  // "none", "a", "b", "tunnel"

class Relay {
 public:
  struct Options {
    size_t high_watermark = 64 * 1024;
    // Zero: not set. See the top of this file for when each applies.
    timeval a_timeout{0, 0};
    timeval b_timeout{0, 0};
    timeval idle_timeout{0, 0};  // the tunnel timeout
    // Both bufferevents are plain socket bufferevents (no filter, no TLS):
    // the relay reads and writes their descriptors itself.
    bool direct = false;
    // With `direct`: where pipes for splice(2) come from (null: no splice).
    // Must outlive the relay and belong to the same thread.
    PipePool* pipes = nullptr;
  };
  struct Result {
    RelayEnd end;
    bool a_closed_first;                        // which side sent EOF first (for the log)
    int error;                                  // errno of a reset, else 0
    RelayTimeout timeout = RelayTimeout::None;  // set with IdleTimeout
  };
  // Called once when the relay ends. It may destroy the Relay (and must not
  // touch it afterwards); the relay touches nothing after calling it.
  using DoneFn = std::function<void(const Result&)>;
  // Sees every chunk relayed from b to a before it is passed on (the lb
  // watches the server's TLS flight with it). Set it before start(); it may
  // be cleared from within, and b -> a may splice only from then on.
  using ObserverFn = std::function<void(std::span<const uint8_t>)>;

  // Both bufferevents must be connected sockets on the same event_base.
  Relay(BufferEventPtr a, BufferEventPtr b, Options options, DoneFn done);
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;
  ~Relay();

  void observe_b_to_a(ObserverFn fn) { observer_ = std::move(fn); }
  // Starts relaying, including any bytes already in either input buffer
  // (sent first) and in either output buffer.
  void start();
  // Ends the relay at once with RelayEnd::Stopped (the done callback runs).
  void stop();

  uint64_t bytes_a_to_b() const { return a_.bytes; }
  uint64_t bytes_b_to_a() const { return b_.bytes; }
  // Bytes read and not yet written, both directions (memory accounting).
  size_t buffered() const;
  bufferevent* a() const { return a_.bev.get(); }
  bufferevent* b() const { return b_.bev.get(); }

 private:
  struct Side {
    BufferEventPtr bev;
    uint64_t bytes = 0;    // bytes read from this side
    bool eof = false;      // this side sent EOF
    bool shut_wr = false;  // we shut down our write direction to this side
    bool paused = false;   // buffered: reading stopped, the peer's output is full
    // --- direct mode ---
    int fd = -1;
    EventPtr io;            // edge-triggered read and write readiness
    bool readable = false;  // no EAGAIN since the last read edge
    bool writable = false;  // no EAGAIN since the last write edge
    // Bytes read from this side and not yet written to the other: first
    // `copy` (read into user space), then `pipe` (spliced); at most one of
    // them holds bytes at a time, and each is dropped once empty and idle.
    EvBufferPtr copy;
    std::unique_ptr<Pipe> pipe;
  };

  // Buffered mode (bufferevent callbacks).
  static void read_cb(bufferevent* bev, void* arg);
  static void write_cb(bufferevent* bev, void* arg);
  static void event_cb(bufferevent* bev, short what, void* arg);
  void pump(Side& src);
  void drained(Side& dst);

  static void idle_cb(evutil_socket_t, short, void* arg);

  // Direct mode.
  static void io_cb(evutil_socket_t fd, short what, void* arg);
  void start_direct();
  // Moves what it can in both directions; false if the relay ended (and
  // `this` may be gone).
  bool progress();
  // Moves src -> peer(src) until blocked or out of budget; false if the
  // relay ended. Sets `more` when it stopped with work left.
  bool move(Side& src, bool& more);
  // Bytes read from src and not yet written to its peer.
  size_t pending(const Side& src) const;
  bool flush(Side& src);        // writes src's pending bytes to its peer; false if ended
  bool read_copy(Side& src);    // one read into src.copy; false if ended
  bool read_splice(Side& src);  // one splice into src.pipe; false if ended
  // A read that moved nothing (n <= 0): EOF, would-block, EINTR or reset;
  // false if the relay ended.
  bool read_moved_nothing(Side& src, ssize_t n);
  // Drops src's empty copy buffer and pipe (an idle direction holds none).
  void release_idle(Side& src);

  Side& side(bufferevent* bev) { return bev == a_.bev.get() ? a_ : b_; }
  Side& peer(Side& s) { return &s == &a_ ? b_ : a_; }
  const Side& peer(const Side& s) const { return &s == &a_ ? b_ : a_; }
  // The timeout that applies now and its limit (zero: none applies).
  struct Wait {
    RelayTimeout which;
    timeval limit;
  };
  Wait waiting() const;
  // The longest the timer may sleep without missing a deadline: a state
  // change only comes with activity, which restarts the clock.
  timeval check_period() const;
  void spoke(Side& src, size_t n);
  void on_eof(Side& src);
  // Buffered and direct: passes src's EOF on once its bytes are written.
  // False if the relay ended.
  bool maybe_shutdown(Side& dst);
  void touch();
  void finish(RelayEnd end, int error, RelayTimeout timeout = RelayTimeout::None);

  Side a_, b_;
  Options options_;
  DoneFn done_;
  ObserverFn observer_;
  EventPtr idle_timer_;
  timeval last_activity_{0, 0};
  const Side* last_speaker_ = nullptr;  // the side read from most recently
  bool a_closed_first_ = false;
  bool finished_ = false;
};

}  // namespace edgepin
