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

#include "common/relay.h"

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
      max_buffered = std::max({max_buffered, evbuffer_get_length(bufferevent_get_output(relay->a())),
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

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

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
