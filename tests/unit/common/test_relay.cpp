// The relay between two socketpairs, driven from one thread: the test writes
// to and reads from the outer ends and turns the event loop in between.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <optional>
#include <random>
#include <string_view>

#include "relay.h"

using namespace edgepin;

namespace {

// The relay's ways of moving bytes; every test runs in each.
enum class Mode {
  Buffered,  // through the bufferevents (the node-proxy's tunnels)
  Direct,    // the relay reads and writes the sockets, no pipes to splice through
  Splice,    // the lb's way: splice(2) through pipes lent by a pool
};

const char* name(Mode m) {
  switch (m) {
    case Mode::Buffered:
      return "buffered";
    case Mode::Direct:
      return "direct";
    case Mode::Splice:
      return "splice";
  }
  return "?";
}

#define EACH_MODE()                                                       \
  const Mode mode = GENERATE(Mode::Buffered, Mode::Direct, Mode::Splice); \
  INFO("mode " << name(mode))

struct Harness {
  EventBasePtr base{event_base_new()};
  // Small pipes so that tests cross pipe boundaries often.
  PipePool pipes{8, 2, 16 * 1024};
  int client = -1, server = -1;  // the outer ends the test drives
  std::unique_ptr<Relay> relay;
  std::optional<Relay::Result> result;
  size_t max_buffered = 0;  // most bytes the relay held at once

  // `before_start` may put bytes into the bufferevents before the relay
  // starts (what the lb inspected, a PROXY header it queued).
  Harness(Relay::Options opts, Mode mode,
          const std::function<void(bufferevent*, bufferevent*)>& before_start = {}) {
    opts.direct = mode != Mode::Buffered;
    opts.pipes = mode == Mode::Splice ? &pipes : nullptr;
    int p1[2], p2[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, p1) == 0);
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, p2) == 0);
    client = p1[0];
    server = p2[0];
    for (int fd : {client, server, p1[1], p2[1]}) fcntl(fd, F_SETFL, O_NONBLOCK);
    BufferEventPtr a(bufferevent_socket_new(base.get(), p1[1], BEV_OPT_CLOSE_ON_FREE));
    BufferEventPtr b(bufferevent_socket_new(base.get(), p2[1], BEV_OPT_CLOSE_ON_FREE));
    if (before_start) before_start(a.get(), b.get());
    relay = std::make_unique<Relay>(std::move(a), std::move(b), opts,
                                    [this](const Relay::Result& r) { result = r; });
    relay->start();
  }
  ~Harness() {
    relay.reset();
    if (client >= 0) close(client);
    if (server >= 0) close(server);
  }
  void turn() {
    event_base_loop(base.get(), EVLOOP_NONBLOCK);
    if (!result) max_buffered = std::max(max_buffered, relay->buffered());
  }
};

// Writes as much of `data` from `pos` as the socket takes.
void write_some(int fd, const std::vector<uint8_t>& data, size_t& pos) {
  while (pos < data.size()) {
    ssize_t n = write(fd, data.data() + pos, std::min<size_t>(data.size() - pos, 65536));
    if (n <= 0) return;
    pos += static_cast<size_t>(n);
  }
}

// Reads what is there; returns false on EOF.
bool read_some(int fd, std::vector<uint8_t>& out) {
  uint8_t buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0) return false;
    if (n < 0) return true;
    out.insert(out.end(), buf, buf + n);
  }
}

timeval ms(int n) { return {n / 1000, (n % 1000) * 1000}; }

using Clock = std::chrono::steady_clock;

// Turns the loop until the relay ends or `limit` passes; returns how long
// that took.
Clock::duration run_until_done(Harness& h, std::chrono::milliseconds limit) {
  const auto start = Clock::now();
  while (!h.result && Clock::now() - start < limit) {
    event_base_loop(h.base.get(), EVLOOP_ONCE | EVLOOP_NONBLOCK);
    usleep(2000);
  }
  return Clock::now() - start;
}

// Turns the loop for `d`, reading whatever reaches either outer end.
void turn_for(Harness& h, std::chrono::milliseconds d, std::vector<uint8_t>& at_client,
              std::vector<uint8_t>& at_server) {
  const auto start = Clock::now();
  while (!h.result && Clock::now() - start < d) {
    event_base_loop(h.base.get(), EVLOOP_ONCE | EVLOOP_NONBLOCK);
    read_some(h.client, at_client);
    read_some(h.server, at_server);
    usleep(2000);
  }
}

void send_bytes(int fd, std::string_view text) {
  std::vector<uint8_t> data(text.begin(), text.end());
  size_t pos = 0;
  write_some(fd, data, pos);
  REQUIRE(pos == data.size());
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Options with the client (a), server (b) and tunnel timeouts in ms; 0
// leaves that timeout unset.
Relay::Options timeout_options(int a_ms, int b_ms, int tunnel_ms) {
  Relay::Options opts;
  opts.a_timeout = ms(a_ms);
  opts.b_timeout = ms(b_ms);
  opts.idle_timeout = ms(tunnel_ms);
  return opts;
}

// A relay under timeouts with what reached each outer end so far. The
// timeout tests only differ in the conversation before the silence and in
// which timeout must end it.
struct TimeoutHarness : Harness {
  std::vector<uint8_t> at_client, at_server;

  TimeoutHarness(const Relay::Options& opts, Mode mode) : Harness(opts, mode) {}

  void turn_for(std::chrono::milliseconds d) { ::turn_for(*this, d, at_client, at_server); }

  // Runs until the relay ends (10 s at most); it must end as idle. Returns
  // the timeout that ended it.
  RelayTimeout idle_end() {
    run_until_done(*this, std::chrono::seconds(10));
    REQUIRE(result);
    CHECK(result->end == RelayEnd::IdleTimeout);
    return result->timeout;
  }
};

}  // namespace

TEST_CASE("relay: both directions byte-exact, then half-close each way") {
  EACH_MODE();
  Relay::Options opts;
  opts.high_watermark = 32 * 1024;
  Harness h(opts, mode);
  auto up = random_bytes(8 << 20, 1), down = random_bytes(6 << 20, 2);
  std::vector<uint8_t> got_up, got_down;
  size_t up_pos = 0, down_pos = 0;
  bool client_shut = false, server_shut = false, client_eof = false, server_eof = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!h.result && std::chrono::steady_clock::now() < deadline) {
    write_some(h.client, up, up_pos);
    if (up_pos == up.size() && !client_shut) {
      shutdown(h.client, SHUT_WR);  // the client is done sending
      client_shut = true;
    }
    h.turn();
    if (!server_eof) server_eof = !read_some(h.server, got_up);
    // The server keeps sending after the client's half-close.
    if (server_eof) write_some(h.server, down, down_pos);
    if (down_pos == down.size() && !server_shut) {
      shutdown(h.server, SHUT_WR);
      server_shut = true;
    }
    h.turn();
    if (!client_eof) client_eof = !read_some(h.client, got_down);
  }
  REQUIRE(h.result);
  CHECK(h.result->end == RelayEnd::BothClosed);
  CHECK(h.result->a_closed_first);
  CHECK(got_up == up);
  CHECK(got_down == down);
  CHECK(h.relay->bytes_a_to_b() == up.size());
  CHECK(h.relay->bytes_b_to_a() == down.size());
  // Back-pressure kept each output within a watermark plus one read.
  CHECK(h.max_buffered <= opts.high_watermark + 64 * 1024);
}

TEST_CASE("relay: a peer that does not read stalls the sender, memory stays bounded") {
  EACH_MODE();
  Relay::Options opts;
  opts.high_watermark = 16 * 1024;
  Harness h(opts, mode);
  auto data = random_bytes(32 << 20, 3);
  size_t pos = 0;
  for (int i = 0; i < 2000 && pos < data.size(); ++i) {
    write_some(h.client, data, pos);
    h.turn();
  }
  // The server never read: the client got stuck long before 32 MiB.
  CHECK(pos < data.size());
  CHECK(h.max_buffered <= opts.high_watermark + 64 * 1024);
  // Once the server reads, everything arrives in order.
  std::vector<uint8_t> got;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (got.size() < data.size() && std::chrono::steady_clock::now() < deadline) {
    write_some(h.client, data, pos);
    h.turn();
    read_some(h.server, got);
  }
  CHECK(got == data);
  CHECK_FALSE(h.result);
}

TEST_CASE("relay: idle timeout ends a silent connection, traffic keeps it alive") {
  EACH_MODE();
  Relay::Options opts;
  opts.idle_timeout = {0, 200 * 1000};
  Harness h(opts, mode);
  auto start = std::chrono::steady_clock::now();
  std::vector<uint8_t> one{1}, sink;
  auto last_write = start;
  // 600 ms of a byte every 50 ms: longer than the timeout, never idle.
  while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(600)) {
    size_t pos = 0;
    write_some(h.client, one, pos);
    last_write = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i) {
      event_base_loop(h.base.get(), EVLOOP_ONCE | EVLOOP_NONBLOCK);
      usleep(10 * 1000);
    }
    read_some(h.server, sink);
  }
  CHECK_FALSE(h.result);
  auto silent = std::chrono::steady_clock::now();
  while (!h.result && std::chrono::steady_clock::now() - silent < std::chrono::seconds(5))
    event_base_loop(h.base.get(), EVLOOP_ONCE);
  REQUIRE(h.result);
  CHECK(h.result->end == RelayEnd::IdleTimeout);
  // Without client and server timeouts the tunnel timeout applies from the start.
  CHECK(h.result->timeout == RelayTimeout::Tunnel);
  // Not before the timeout (less the loop's cached-clock slack).
  CHECK(std::chrono::steady_clock::now() - last_write >= std::chrono::milliseconds(190));
}

TEST_CASE("relay: a reset on one side ends the relay with that side's error") {
  EACH_MODE();
  Harness h(Relay::Options{}, mode);
  linger l{1, 0};  // close with RST
  setsockopt(h.server, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  std::vector<uint8_t> data(1000, 7);
  size_t pos = 0;
  write_some(h.client, data, pos);
  h.turn();
  close(h.server);
  h.server = -1;
  for (int i = 0; i < 100 && !h.result; ++i) {
    write_some(h.client, data, pos = 0);
    event_base_loop(h.base.get(), EVLOOP_ONCE | EVLOOP_NONBLOCK);
    usleep(1000);
  }
  REQUIRE(h.result);
  // Writing on towards the closed server fails: that side's error ends it.
  CHECK(h.result->end == RelayEnd::BReset);
  CHECK((h.result->error == EPIPE || h.result->error == ECONNRESET));
}

TEST_CASE("relay: stop() ends at once and reports Stopped") {
  EACH_MODE();
  Harness h(Relay::Options{}, mode);
  h.relay->stop();
  REQUIRE(h.result);
  CHECK(h.result->end == RelayEnd::Stopped);
}

// Side a is the client, b the server, as the lb uses the relay. Limits
// that must not fire in a case are long (seconds) so that a late one would
// show as the wrong Result::timeout, never as a pass.

TEST_CASE("relay timeouts: a client that never speaks hits the client (a) timeout") {
  EACH_MODE();
  TimeoutHarness h(timeout_options(150, 3000, 5000), mode);
  const auto start = Clock::now();
  CHECK(h.idle_end() == RelayTimeout::A);
  CHECK(Clock::now() - start >= std::chrono::milliseconds(140));
  CHECK(Clock::now() - start < std::chrono::milliseconds(2500));
}

TEST_CASE("relay timeouts: a server that does not answer hits the server (b) timeout") {
  EACH_MODE();
  TimeoutHarness h(timeout_options(3000, 150, 5000), mode);
  send_bytes(h.client, "hello");
  const auto start = Clock::now();
  h.turn_for(std::chrono::milliseconds(50));
  CHECK(h.at_server == std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o'});
  CHECK(h.idle_end() == RelayTimeout::B);
  CHECK(Clock::now() - start >= std::chrono::milliseconds(140));
  CHECK(Clock::now() - start < std::chrono::milliseconds(2500));
}

TEST_CASE(
    "relay timeouts: without a tunnel timeout, the side that did not speak last is waited for") {
  EACH_MODE();
  TimeoutHarness h(timeout_options(200, 200, 0), mode);
  // A conversation with pauses shorter than the limits stays up, whoever
  // is expected to speak next.
  for (int i = 0; i < 4; ++i) {
    send_bytes(h.client, "q");
    h.turn_for(std::chrono::milliseconds(120));
    send_bytes(h.server, "a");
    h.turn_for(std::chrono::milliseconds(120));
  }
  REQUIRE_FALSE(h.result);
  CHECK(h.at_server.size() == 4);
  CHECK(h.at_client.size() == 4);
  // The server answered last: now the client is waited for.
  CHECK(h.idle_end() == RelayTimeout::A);
}

TEST_CASE("relay timeouts: once bytes flowed both ways the tunnel timeout replaces both") {
  EACH_MODE();
  TimeoutHarness h(timeout_options(100, 100, 600), mode);
  send_bytes(h.client, "ping");
  h.turn_for(std::chrono::milliseconds(30));
  send_bytes(h.server, "pong");
  const auto last = Clock::now();
  // Three client/server timeouts of silence: still up.
  h.turn_for(std::chrono::milliseconds(300));
  CHECK(h.at_client.size() == 4);
  REQUIRE_FALSE(h.result);
  CHECK(h.idle_end() == RelayTimeout::Tunnel);
  CHECK(Clock::now() - last >= std::chrono::milliseconds(590));
}

TEST_CASE(
    "relay timeouts: a short tunnel timeout is not missed while the timer sleeps for a longer "
    "one") {
  EACH_MODE();
  // The lazy timer sleeps for the client timeout at first; the exchange
  // then switches to the much shorter tunnel timeout.
  TimeoutHarness h(timeout_options(3000, 3000, 150), mode);
  send_bytes(h.client, "x");
  h.turn_for(std::chrono::milliseconds(30));
  send_bytes(h.server, "y");
  const auto last = Clock::now();
  h.turn_for(std::chrono::milliseconds(30));
  CHECK(h.idle_end() == RelayTimeout::Tunnel);
  CHECK(Clock::now() - last < std::chrono::milliseconds(1500));
}

TEST_CASE("relay timeouts: after the client's half-close only the server is waited for") {
  EACH_MODE();
  TimeoutHarness h(timeout_options(3000, 200, 5000), mode);
  // The server speaks first (a banner): the client is waited for...
  send_bytes(h.server, "banner");
  h.turn_for(std::chrono::milliseconds(50));
  CHECK(h.at_client.size() == 6);
  // ...until it closes its sending side without a word: the server is
  // expected to answer that, under the server timeout.
  shutdown(h.client, SHUT_WR);
  const auto shut = Clock::now();
  CHECK(h.idle_end() == RelayTimeout::B);
  CHECK(Clock::now() - shut >= std::chrono::milliseconds(190));
  CHECK(Clock::now() - shut < std::chrono::milliseconds(2500));
}

TEST_CASE("relay timeouts: a client that stops reading is the side waited for") {
  EACH_MODE();
  Relay::Options opts = timeout_options(200, 3000, 5000);
  opts.high_watermark = 16 * 1024;
  Harness h(opts, mode);
  auto data = random_bytes(8 << 20, 9);
  size_t pos = 0;
  // The server streams; the client reads nothing: once back-pressure stops
  // the server side, the silence is the client's.
  const auto start = Clock::now();
  while (!h.result && Clock::now() - start < std::chrono::seconds(10)) {
    write_some(h.server, data, pos);
    event_base_loop(h.base.get(), EVLOOP_ONCE | EVLOOP_NONBLOCK);
    usleep(2000);
  }
  REQUIRE(h.result);
  CHECK(pos < data.size());
  CHECK(h.result->end == RelayEnd::IdleTimeout);
  CHECK(h.result->timeout == RelayTimeout::A);
}

TEST_CASE(
    "relay: bytes the owner read or queued before start go first, then the stream, byte-exact") {
  EACH_MODE();
  const std::string hello = "inspected-client-hello", header = "PROXY-header:";
  Harness h(Relay::Options{}, mode, [&](bufferevent* a, bufferevent* b) {
    // A socket bufferevent's input only takes bytes it read itself (its end
    // is frozen); thaw it for a moment to stand for bytes read earlier.
    evbuffer* in = bufferevent_get_input(a);
    evbuffer_unfreeze(in, 0);
    REQUIRE(evbuffer_add(in, hello.data(), hello.size()) == 0);
    evbuffer_freeze(in, 0);
    evbuffer_add(bufferevent_get_output(b), header.data(), header.size());
  });
  auto rest = random_bytes(1 << 20, 11);
  std::vector<uint8_t> expected(header.begin(), header.end());
  expected.insert(expected.end(), hello.begin(), hello.end());
  expected.insert(expected.end(), rest.begin(), rest.end());
  std::vector<uint8_t> got;
  size_t pos = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (got.size() < expected.size() && Clock::now() < deadline) {
    write_some(h.client, rest, pos);
    h.turn();
    read_some(h.server, got);
  }
  CHECK(got == expected);
  CHECK(h.relay->bytes_a_to_b() == hello.size() + rest.size());
}

TEST_CASE(
    "relay: the observer sees the server's first bytes, then the rest passes unobserved and "
    "byte-exact") {
  EACH_MODE();
  Harness h(Relay::Options{}, mode);
  std::vector<uint8_t> observed;
  h.relay->observe_b_to_a([&](std::span<const uint8_t> bytes) {
    observed.insert(observed.end(), bytes.begin(), bytes.end());
    if (observed.size() >= 5) h.relay->observe_b_to_a(nullptr);  // seen enough
  });
  send_bytes(h.server, "FLIGHT");
  std::vector<uint8_t> at_client, at_server;
  turn_for(h, std::chrono::milliseconds(50), at_client, at_server);
  REQUIRE(at_client.size() == 6);
  CHECK(std::string(observed.begin(), observed.end()) == "FLIGHT");
  auto rest = random_bytes(2 << 20, 12);
  size_t pos = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (at_client.size() < 6 + rest.size() && Clock::now() < deadline) {
    write_some(h.server, rest, pos);
    h.turn();
    read_some(h.client, at_client);
  }
  CHECK(observed.size() == 6);
  REQUIRE(at_client.size() == 6 + rest.size());
  CHECK(std::equal(rest.begin(), rest.end(), at_client.begin() + 6));
}

TEST_CASE("relay (splice): an idle relay holds no pipe and no buffer; pipes are reused") {
  Harness h(Relay::Options{}, Mode::Splice);
  auto data = random_bytes(512 * 1024, 13);
  std::vector<uint8_t> at_client, at_server;
  for (int round = 0; round < 3; ++round) {
    size_t pos = 0;
    at_server.clear();
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (at_server.size() < data.size() && Clock::now() < deadline) {
      write_some(h.client, data, pos);
      h.turn();
      read_some(h.server, at_server);
    }
    REQUIRE(at_server == data);
    turn_for(h, std::chrono::milliseconds(20), at_client, at_server);
    // Between bursts: nothing held, the pipe went back to the pool.
    CHECK(h.relay->buffered() == 0);
    CHECK(h.pipes.in_use() == 0);
    CHECK(h.pipes.idle() == 1);
  }
  CHECK(h.pipes.refusals() == 0);
}

TEST_CASE("relay (splice): with the pool exhausted the relay copies instead, byte-exact") {
  Relay::Options opts;
  opts.direct = true;
  PipePool none(0, 0, 0);  // lends nothing
  EventBasePtr base{event_base_new()};
  int p1[2], p2[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, p1) == 0);
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, p2) == 0);
  for (int fd : {p1[0], p1[1], p2[0], p2[1]}) fcntl(fd, F_SETFL, O_NONBLOCK);
  opts.pipes = &none;
  std::optional<Relay::Result> result;
  Relay relay(BufferEventPtr(bufferevent_socket_new(base.get(), p1[1], BEV_OPT_CLOSE_ON_FREE)),
              BufferEventPtr(bufferevent_socket_new(base.get(), p2[1], BEV_OPT_CLOSE_ON_FREE)),
              opts, [&](const Relay::Result& r) { result = r; });
  relay.start();
  auto data = random_bytes(1 << 20, 14);
  std::vector<uint8_t> got;
  size_t pos = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (got.size() < data.size() && Clock::now() < deadline) {
    write_some(p1[0], data, pos);
    event_base_loop(base.get(), EVLOOP_NONBLOCK);
    read_some(p2[0], got);
  }
  CHECK(got == data);
  CHECK(none.refusals() > 0);
  CHECK_FALSE(result);
  close(p1[0]);
  close(p2[0]);
}
// Issue 12: a client that keeps its side open after the server answered and
// closed must not hold the connection for the tunnel timeout.
TEST_CASE(
    "relay timeouts: once the server closed its side, a silent client gets the client timeout") {
  EACH_MODE();
  TimeoutHarness h(timeout_options(200, 3000, 5000), mode);
  send_bytes(h.client, "request");
  h.turn_for(std::chrono::milliseconds(30));
  send_bytes(h.server, "answer");
  h.turn_for(std::chrono::milliseconds(30));
  // Bytes went both ways (the tunnel timeout would apply); then the server
  // closes its side and the client says nothing more.
  shutdown(h.server, SHUT_WR);
  const auto shut = Clock::now();
  CHECK(h.idle_end() == RelayTimeout::A);
  CHECK(Clock::now() - shut >= std::chrono::milliseconds(190));
  CHECK(Clock::now() - shut < std::chrono::milliseconds(2500));
  CHECK(h.at_client == std::vector<uint8_t>{'a', 'n', 's', 'w', 'e', 'r'});
}

TEST_CASE(
    "relay timeouts: once the client closed its side after an exchange, a silent server gets the "
    "server timeout") {
  EACH_MODE();
  TimeoutHarness h(timeout_options(3000, 200, 5000), mode);
  send_bytes(h.client, "request");
  h.turn_for(std::chrono::milliseconds(30));
  send_bytes(h.server, "answer");
  h.turn_for(std::chrono::milliseconds(30));
  shutdown(h.client, SHUT_WR);
  const auto shut = Clock::now();
  CHECK(h.idle_end() == RelayTimeout::B);
  CHECK(Clock::now() - shut < std::chrono::milliseconds(2500));
}
