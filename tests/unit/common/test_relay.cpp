// The relay between two socketpairs, driven from one thread: the test writes
// to and reads from the outer ends and turns the event loop in between.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <optional>
#include <random>
#include <string_view>

#include "relay.h"

using namespace edgepin;

namespace {

struct Harness {
  EventBasePtr base{event_base_new()};
  int client = -1, server = -1;  // the outer ends the test drives
  std::unique_ptr<Relay> relay;
  std::optional<Relay::Result> result;
  size_t max_buffered = 0;  // largest output buffer seen on either side

  explicit Harness(Relay::Options opts) {
    int p1[2], p2[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, p1) == 0);
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, p2) == 0);
    client = p1[0];
    server = p2[0];
    for (int fd : {client, server, p1[1], p2[1]}) fcntl(fd, F_SETFL, O_NONBLOCK);
    BufferEventPtr a(bufferevent_socket_new(base.get(), p1[1], BEV_OPT_CLOSE_ON_FREE));
    BufferEventPtr b(bufferevent_socket_new(base.get(), p2[1], BEV_OPT_CLOSE_ON_FREE));
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
    if (!result) {
      max_buffered =
          std::max({max_buffered, evbuffer_get_length(bufferevent_get_output(relay->a())),
                    evbuffer_get_length(bufferevent_get_output(relay->b()))});
    }
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

  explicit TimeoutHarness(const Relay::Options& opts) : Harness(opts) {}

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
  Relay::Options opts;
  opts.high_watermark = 32 * 1024;
  Harness h(opts);
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
  Relay::Options opts;
  opts.high_watermark = 16 * 1024;
  Harness h(opts);
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
  Relay::Options opts;
  opts.idle_timeout = {0, 200 * 1000};
  Harness h(opts);
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
  Harness h(Relay::Options{});
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
  Harness h(Relay::Options{});
  h.relay->stop();
  REQUIRE(h.result);
  CHECK(h.result->end == RelayEnd::Stopped);
}

// Side a is the client, b the server, as the lb uses the relay. Limits
// that must not fire in a case are long (seconds) so that a late one would
// show as the wrong Result::timeout, never as a pass.

TEST_CASE("relay timeouts: a client that never speaks hits the client (a) timeout") {
  TimeoutHarness h(timeout_options(150, 3000, 5000));
  const auto start = Clock::now();
  CHECK(h.idle_end() == RelayTimeout::A);
  CHECK(Clock::now() - start >= std::chrono::milliseconds(140));
  CHECK(Clock::now() - start < std::chrono::milliseconds(2500));
}

TEST_CASE("relay timeouts: a server that does not answer hits the server (b) timeout") {
  TimeoutHarness h(timeout_options(3000, 150, 5000));
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
  TimeoutHarness h(timeout_options(200, 200, 0));
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
  TimeoutHarness h(timeout_options(100, 100, 600));
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
  // The lazy timer sleeps for the client timeout at first; the exchange
  // then switches to the much shorter tunnel timeout.
  TimeoutHarness h(timeout_options(3000, 3000, 150));
  send_bytes(h.client, "x");
  h.turn_for(std::chrono::milliseconds(30));
  send_bytes(h.server, "y");
  const auto last = Clock::now();
  h.turn_for(std::chrono::milliseconds(30));
  CHECK(h.idle_end() == RelayTimeout::Tunnel);
  CHECK(Clock::now() - last < std::chrono::milliseconds(1500));
}

TEST_CASE("relay timeouts: after the client's half-close only the server is waited for") {
  TimeoutHarness h(timeout_options(3000, 200, 5000));
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
  Relay::Options opts = timeout_options(200, 3000, 5000);
  opts.high_watermark = 16 * 1024;
  Harness h(opts);
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
