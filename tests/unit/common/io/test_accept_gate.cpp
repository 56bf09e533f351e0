#include <catch2/catch.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "accept_gate.h"

using edgepin::AcceptGate;
using edgepin::ConnectionLimit;
using edgepin::Counter;
using edgepin::EventBasePtr;

namespace {

// A connected socket pair; the gate gets one end as a "client".
struct Pair {
  int fds[2] = {-1, -1};
  Pair() { REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0); }
  ~Pair() {
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
  }
  int give() { return std::exchange(fds[0], -1); }
  // True once the other end is closed (read returns 0).
  bool peer_closed() const {
    char b;
    return ::recv(fds[1], &b, 1, MSG_DONTWAIT) == 0;
  }
};

bool fd_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

sockaddr_in some_addr() {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(4242);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

void run_once(event_base* base) { event_base_loop(base, EVLOOP_NONBLOCK | EVLOOP_ONCE); }

// What the process writes to stderr (where log lines go) while alive.
class StderrCapture {
 public:
  StderrCapture() {
    REQUIRE(::pipe2(pipe_, O_NONBLOCK) == 0);
    saved_ = ::dup(STDERR_FILENO);
    ::dup2(pipe_[1], STDERR_FILENO);
  }
  ~StderrCapture() {
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    ::close(pipe_[0]);
    ::close(pipe_[1]);
  }
  std::string text() {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(pipe_[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    return out;
  }

 private:
  int pipe_[2];
  int saved_;
};

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("connection limit: racing threads never take more than max", "[accept_gate]") {
  ConnectionLimit limit("maxconn", 100);
  std::atomic<uint64_t> got{0};
  std::atomic<uint64_t> released{0};
  std::atomic<uint64_t> peak{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        if (!limit.try_acquire()) continue;
        got.fetch_add(1);
        uint64_t now = limit.active();
        uint64_t p = peak.load();
        while (now > p && !peak.compare_exchange_weak(p, now)) {
        }
        if (i % 3 == 0) {  // some end, some stay
          limit.release();
          released.fetch_add(1);
        }
      }
    });
  for (auto& th : threads) th.join();
  CHECK(peak.load() <= 100);
  CHECK(limit.active() <= 100);
  CHECK(got.load() >= 100);
  // No failed attempt left a trace: what is held is what was taken and kept.
  CHECK(limit.active() == got.load() - released.load());
}

TEST_CASE("connection limit: 0 means no limit, still counted", "[accept_gate]") {
  ConnectionLimit limit("max_connections", 0);
  for (int i = 0; i < 1000; ++i) REQUIRE(limit.try_acquire());
  CHECK(limit.active() == 1000);
  CHECK_FALSE(limit.full());
}

TEST_CASE("accept gate: pauses at the last slot, holds excess, resumes when a slot frees",
          "[accept_gate]") {
  EventBasePtr base(event_base_new());
  ConnectionLimit limit("maxconn", 2);
  Counter pauses;
  std::vector<bool> listening_calls;
  AcceptGate gate(base.get(), limit, "worker 0", pauses,
                  [&](bool on) { listening_calls.push_back(on); });

  CHECK(gate.admit());
  CHECK_FALSE(gate.paused());
  CHECK(gate.admit());  // the last slot: the listeners pause at once
  CHECK(gate.paused());
  CHECK(listening_calls == std::vector<bool>{false});
  CHECK(pauses.get() == 1);
  CHECK(limit.pauses() == 1);

  // A client another worker's race left us: held, unread, not refused.
  Pair p;
  const sockaddr_in a = some_addr();
  int started_fd = -1;
  CHECK_FALSE(gate.admit());
  const int fd = p.give();
  gate.hold(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a,
            [&](int f, const sockaddr* addr, int len) {
              started_fd = f;
              CHECK(len == static_cast<int>(sizeof a));
              CHECK(reinterpret_cast<const sockaddr_in*>(addr)->sin_port == htons(4242));
            });
  CHECK(gate.held() == 1);
  CHECK(limit.active() == 2);
  CHECK_FALSE(p.peer_closed());

  // Nothing frees: the held client waits.
  run_once(base.get());
  CHECK(started_fd == -1);

  // One connection ends: the held client gets its slot on the next turn;
  // the limit is full again, so the listeners stay paused.
  gate.release();
  CHECK(started_fd == -1);  // not from inside release()
  run_once(base.get());
  CHECK(started_fd == fd);
  CHECK(gate.held() == 0);
  CHECK(limit.active() == 2);
  CHECK(gate.paused());
  ::close(started_fd);

  // Another ends: room left, the listeners accept again.
  gate.release();
  run_once(base.get());
  CHECK_FALSE(gate.paused());
  CHECK(listening_calls == std::vector<bool>{false, true});
  CHECK(limit.active() == 1);
}

TEST_CASE("accept gate: slots freed by another worker resume a paused one", "[accept_gate]") {
  EventBasePtr base(event_base_new());
  ConnectionLimit limit("max_connections", 1);
  Counter pauses;
  bool listening = true;
  AcceptGate gate(base.get(), limit, "worker 1", pauses, [&](bool on) { listening = on; });
  CHECK(gate.admit());
  CHECK_FALSE(listening);
  // The slot is given back elsewhere (the other worker's gate calls this).
  limit.release();
  // The periodic check (50 ms) notices.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!listening && std::chrono::steady_clock::now() < deadline)
    event_base_loop(base.get(), EVLOOP_ONCE);
  CHECK(listening);
}

TEST_CASE("accept gate: close() drops held clients like a closed backlog", "[accept_gate]") {
  EventBasePtr base(event_base_new());
  ConnectionLimit limit("maxconn", 1);
  Counter pauses;
  AcceptGate gate(base.get(), limit, "worker 0", pauses, [](bool) {});
  REQUIRE(gate.admit());
  Pair p;
  const sockaddr_in a = some_addr();
  bool started = false;
  const int fd = p.give();
  gate.hold(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a,
            [&](int, const sockaddr*, int) { started = true; });
  gate.close();
  CHECK(p.peer_closed());
  CHECK_FALSE(fd_open(fd));
  gate.release();
  run_once(base.get());
  CHECK_FALSE(started);
}

TEST_CASE("accept gate: pause lines are throttled over all workers, with a count",
          "[accept_gate]") {
  EventBasePtr base(event_base_new());
  ConnectionLimit limit("maxconn", 1);
  Counter pauses_a, pauses_b;
  AcceptGate a(base.get(), limit, "worker 0", pauses_a, [](bool) {});
  AcceptGate b(base.get(), limit, "worker 1", pauses_b, [](bool) {});
  // The first pause logs; many more within the second do not.
  uint64_t logged = 0;
  std::string lines;
  {
    StderrCapture capture;
    for (int i = 0; i < 50; ++i) {
      AcceptGate& g = (i % 2) ? b : a;
      REQUIRE(g.admit());  // pauses g
      g.release();
      run_once(base.get());  // g resumes
    }
    lines = capture.text();
  }
  CHECK(count(lines, "maxconn 1 reached") == 1);
  CHECK(count(lines, "(1 pause since the last line, 1 in all)") == 1);
  CHECK(pauses_a.get() + pauses_b.get() == 50);
  CHECK(limit.pauses() == 50);
  // What is left for the next line: everything after the first pause.
  logged = limit.pause_log().event(std::chrono::steady_clock::now() + std::chrono::seconds(2));
  CHECK(logged == 50);  // 49 held back + this probe event
}
