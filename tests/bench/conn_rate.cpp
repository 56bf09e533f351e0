// edgepin-bench-client: the load client of the benchmarks in tests/bench/
// (a test tool; never installed). Python is too slow to open the tens of
// thousands of connections a second a balancer handles, so the harness
// (bench_lb.py) drives this instead. One thread, one epoll loop, every
// phase bounded by a deadline. Modes:
//
//   rate    new TCP connections a second: each of --concurrency slots
//           connects, sends "ECHO\n" plus --payload pattern bytes, reads
//           them back, closes, and starts again until --duration-ms ends;
//   stream  --streams connections at once, each sends "SOURCE N" and reads
//           N pattern bytes until EOF: relay throughput;
//   hold    opens --connections connections, each proven end to end by a
//           1-byte echo, prints {"ready": N}, then holds them idle until
//           stdin closes or --hold-ms ends: memory per idle connection;
//   tls     full TLS handshakes a second: each slot connects, handshakes
//           without offering a session (no session cache, nothing to
//           resume), sends close_notify, drains, closes, starts again.
//
// Every byte received is checked against bench_pattern.h (the handshake's
// Finished messages check the TLS bytes), so each run also proves the
// balancer relayed correctly. Output: one JSON object on stdout (hold
// prints the ready line first). Exit status: 0 when no connection failed,
// 1 when some did (the JSON says which way), 2 for bad usage.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "net_address.h"
#include "ssl_ptr.h"
#include "tests/bench/bench_fd.h"
#include "tests/bench/bench_pattern.h"

namespace edgepin::bench::client {
namespace {

using Clock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;

// ------------------------------------------------------------------ limits

inline constexpr size_t kMaxConcurrency = 4096;
inline constexpr size_t kMaxHoldConnections = 100000;
inline constexpr size_t kMaxStreams = 1024;
inline constexpr size_t kMaxPayload = 1024 * 1024;
inline constexpr uint64_t kMaxStreamBytes = uint64_t{1} << 40;
inline constexpr uint32_t kMaxDurationMs = 3600 * 1000;
// One receive buffer shared by every connection (the loop is single
// threaded), and the scratch the pattern check fills.
inline constexpr size_t kRecvBuffer = 256 * 1024;
inline constexpr size_t kCheckScratch = 64 * 1024;
inline constexpr int kMaxEvents = 512;
// How often deadlines are checked; also the longest epoll wait.
inline constexpr Ms kTick{50};
// Latency samples kept (4 bytes each); beyond it percentiles describe the
// first kMaxLatencySamples connections.
inline constexpr size_t kMaxLatencySamples = 4 * 1024 * 1024;
// A slot whose connect failed at once waits this long before retrying, so
// a dead balancer cannot turn the loop into a busy spin.
inline constexpr Ms kRetryDelay{10};
// hold: connections being set up at once (more would overflow the
// balancer's accept backlog and measure SYN retransmits).
inline constexpr size_t kHoldSetupWindow = 64;

// ----------------------------------------------------------------- options

enum class Mode : uint8_t { Rate, Stream, Hold, Tls };

struct Options {
  Mode mode = Mode::Rate;
  SocketAddress connect;
  size_t concurrency = 32;
  uint32_t duration_ms = 5000;
  size_t payload = 64;
  uint32_t conn_timeout_ms = 5000;
  size_t streams = 1;
  uint64_t bytes = 64 * 1024 * 1024;
  uint32_t timeout_ms = 300000;
  size_t connections = 1000;
  uint32_t hold_ms = 60000;
  std::string tls_version = "1.3";
  std::string sni = "bench.edgepin.test";
};

void usage(FILE* out) {
  std::fputs(
      "usage: edgepin-bench-client rate|stream|hold|tls --connect HOST:PORT [options]\n"
      "  rate:   --concurrency N (32) --duration-ms MS (5000) --payload BYTES (64)\n"
      "          --conn-timeout-ms MS (5000)\n"
      "  stream: --streams N (1) --bytes BYTES per stream (67108864) --timeout-ms MS (300000)\n"
      "  hold:   --connections N (1000) --hold-ms MS (60000) --timeout-ms MS (300000)\n"
      "  tls:    --concurrency N (32) --duration-ms MS (5000) --conn-timeout-ms MS (5000)\n"
      "          --tls-version 1.2|1.3 (1.3) --sni NAME\n"
      "prints one JSON object; exit 0: no connection failed, 1: some did, 2: usage\n",
      out);
}

template <typename T>
std::optional<T> parse_number(std::string_view s) {
  T value{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return value;
}

// Returns the options, or std::nullopt after printing why to stderr.
std::optional<Options> parse_options(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return std::nullopt;
  }
  Options o;
  const std::string_view mode = argv[1];
  if (mode == "rate") {
    o.mode = Mode::Rate;
  } else if (mode == "stream") {
    o.mode = Mode::Stream;
  } else if (mode == "hold") {
    o.mode = Mode::Hold;
  } else if (mode == "tls") {
    o.mode = Mode::Tls;
  } else if (mode == "--help") {
    usage(stdout);
    std::exit(0);
  } else {
    std::fprintf(stderr, "edgepin-bench-client: unknown mode %s\n", argv[1]);
    usage(stderr);
    return std::nullopt;
  }
  bool have_connect = false;
  for (int i = 2; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "edgepin-bench-client: %s needs a value (or is unknown)\n", argv[i]);
      return std::nullopt;
    }
    const std::string_view value = argv[++i];
    // A numeric option within [lo, hi], or a message naming it.
    auto number = [&](auto& field, uint64_t lo, uint64_t hi) {
      auto n = parse_number<uint64_t>(value);
      if (!n || *n < lo || *n > hi) {
        std::fprintf(stderr, "edgepin-bench-client: %s: want an integer in %llu..%llu\n",
                     argv[i - 1], static_cast<unsigned long long>(lo),
                     static_cast<unsigned long long>(hi));
        return false;
      }
      field = static_cast<std::remove_reference_t<decltype(field)>>(*n);
      return true;
    };
    bool ok = true;
    if (arg == "--connect") {
      std::string error;
      auto a = SocketAddress::parse(value, {}, &error);
      if (!a) {
        std::fprintf(stderr, "edgepin-bench-client: --connect: %s\n", error.c_str());
        return std::nullopt;
      }
      o.connect = *a;
      have_connect = true;
    } else if (arg == "--concurrency") {
      ok = number(o.concurrency, 1, kMaxConcurrency);
    } else if (arg == "--duration-ms") {
      ok = number(o.duration_ms, 1, kMaxDurationMs);
    } else if (arg == "--payload") {
      ok = number(o.payload, 1, kMaxPayload);
    } else if (arg == "--conn-timeout-ms") {
      ok = number(o.conn_timeout_ms, 1, kMaxDurationMs);
    } else if (arg == "--streams") {
      ok = number(o.streams, 1, kMaxStreams);
    } else if (arg == "--bytes") {
      ok = number(o.bytes, 1, kMaxStreamBytes);
    } else if (arg == "--timeout-ms") {
      ok = number(o.timeout_ms, 1, kMaxDurationMs);
    } else if (arg == "--connections") {
      ok = number(o.connections, 1, kMaxHoldConnections);
    } else if (arg == "--hold-ms") {
      ok = number(o.hold_ms, 1, kMaxDurationMs);
    } else if (arg == "--tls-version") {
      if (value != "1.2" && value != "1.3") {
        std::fprintf(stderr, "edgepin-bench-client: --tls-version: 1.2 or 1.3\n");
        return std::nullopt;
      }
      o.tls_version = value;
    } else if (arg == "--sni") {
      o.sni = value;
    } else {
      std::fprintf(stderr, "edgepin-bench-client: unknown option %s\n", argv[i - 1]);
      usage(stderr);
      return std::nullopt;
    }
    if (!ok) return std::nullopt;
  }
  if (!have_connect) {
    std::fprintf(stderr, "edgepin-bench-client: --connect is required\n");
    return std::nullopt;
  }
  return o;
}

// ---------------------------------------------------------------- plumbing

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// What went wrong, by kind; the JSON reports each.
struct Failures {
  uint64_t connect = 0;    // refused, unreachable, or no free local port
  uint64_t reset = 0;      // a socket error after the connect
  uint64_t early_eof = 0;  // the peer closed before sending everything
  uint64_t mismatch = 0;   // a byte differed from the pattern, or too many bytes
  uint64_t timeout = 0;    // no completion within the deadline
  uint64_t handshake = 0;  // TLS handshake failed
  uint64_t resumed = 0;    // TLS handshake resumed a session (must never happen)
  uint64_t dropped = 0;    // hold: a held connection ended early

  uint64_t total() const {
    return connect + reset + early_eof + mismatch + timeout + handshake + resumed + dropped;
  }
  std::string json() const {
    char buf[320];
    std::snprintf(
        buf, sizeof buf,
        "{\"connect\": %llu, \"reset\": %llu, \"early_eof\": %llu, \"mismatch\": %llu, "
        "\"timeout\": %llu, \"handshake\": %llu, \"resumed\": %llu, \"dropped\": %llu}",
        static_cast<unsigned long long>(connect), static_cast<unsigned long long>(reset),
        static_cast<unsigned long long>(early_eof), static_cast<unsigned long long>(mismatch),
        static_cast<unsigned long long>(timeout), static_cast<unsigned long long>(handshake),
        static_cast<unsigned long long>(resumed), static_cast<unsigned long long>(dropped));
    return buf;
  }
};

// Connection latencies in microseconds, bounded in count.
class Latencies {
 public:
  void add(Clock::duration d) {
    if (samples_.size() < kMaxLatencySamples) {
      samples_.push_back(static_cast<uint32_t>(std::min<int64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(d).count(), UINT32_MAX)));
    }
  }
  // The q-quantile (0..1) in microseconds; 0 without samples.
  uint32_t quantile(double q) {
    if (samples_.empty()) return 0;
    const size_t k = std::min(samples_.size() - 1,
                              static_cast<size_t>(q * static_cast<double>(samples_.size())));
    std::nth_element(samples_.begin(), samples_.begin() + static_cast<ptrdiff_t>(k),
                     samples_.end());
    return samples_[k];
  }

 private:
  std::vector<uint32_t> samples_;
};

class Epoll {
 public:
  Epoll() : fd_(epoll_create1(EPOLL_CLOEXEC)) {}
  bool ok() const { return static_cast<bool>(fd_); }
  // Each returns false if the kernel refused (the caller counts a failure).
  bool add(int fd, uint32_t events, void* tag) { return ctl(EPOLL_CTL_ADD, fd, events, tag); }
  bool modify(int fd, uint32_t events, void* tag) { return ctl(EPOLL_CTL_MOD, fd, events, tag); }
  // Waits at most kTick; returns the number of events (0 on EINTR).
  int wait(std::array<epoll_event, kMaxEvents>& events) {
    const int n = epoll_wait(fd_.get(), events.data(), kMaxEvents, static_cast<int>(kTick.count()));
    return n < 0 ? 0 : n;
  }

 private:
  bool ctl(int op, int fd, uint32_t events, void* tag) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = tag;
    return epoll_ctl(fd_.get(), op, fd, &ev) == 0;
  }
  UniqueFd fd_;
};

// Starts a non-blocking connect. Returns the socket (connected or in
// progress), or an empty UniqueFd if it failed at once.
UniqueFd start_connect(const sockaddr_storage& to, socklen_t len) {
  UniqueFd fd(socket(to.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return {};
  const int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&to), len) != 0 && errno != EINPROGRESS)
    return {};
  return fd;
}

// The pending error of a socket whose connect finished (0: connected).
int socket_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

bool would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

inline constexpr std::string_view kEchoCommand = "ECHO\n";

// The request of rate and hold mode: the ECHO command and `payload`
// pattern bytes; the expected answer is those pattern bytes.
std::vector<uint8_t> echo_request(size_t payload) {
  std::vector<uint8_t> req(kEchoCommand.size() + payload);
  std::memcpy(req.data(), kEchoCommand.data(), kEchoCommand.size());
  fill_pattern(0, std::span<uint8_t>(req).subspan(kEchoCommand.size()));
  return req;
}

// ----------------------------------------------- an echo exchange (rate, hold)

// One connection that sends a request and expects the echoed payload.
struct EchoConn {
  enum class Phase : uint8_t { Idle, Connecting, Sending, Receiving, Done };
  UniqueFd fd;
  Phase phase = Phase::Idle;
  size_t sent = 0;
  size_t received = 0;
  Clock::time_point started;
  Clock::time_point retry_at;  // Idle after a failed connect: not before this
};

enum class Step : uint8_t { Pending, Completed, Failed };

class EchoDriver {
 public:
  EchoDriver(const Options& o, Epoll& ep, Failures& failures)
      : ep_(ep),
        failures_(failures),
        request_(echo_request(o.mode == Mode::Hold ? 1 : o.payload)),
        payload_(request_.size() - kEchoCommand.size()),
        recv_(kRecvBuffer),
        scratch_(kCheckScratch) {
    to_len_ = o.connect.to_sockaddr(to_);
  }

  // Starts a connection in `c` (Idle). Returns Failed if the connect failed
  // at once (counted; `c` stays Idle with a retry time).
  Step start(EchoConn& c) {
    c.fd = start_connect(to_, to_len_);
    c.sent = c.received = 0;
    c.started = Clock::now();
    if (!c.fd || !ep_.add(c.fd.get(), EPOLLOUT, &c)) {
      ++failures_.connect;
      c.fd.reset();
      c.phase = EchoConn::Phase::Idle;
      c.retry_at = Clock::now() + kRetryDelay;
      return Step::Failed;
    }
    c.phase = EchoConn::Phase::Connecting;
    return Step::Pending;
  }

  // Advances `c` on its epoll events. Completed: the whole echo arrived
  // intact (the socket stays open; the caller closes or keeps it). Failed:
  // counted, socket closed, `c` Idle.
  Step advance(EchoConn& c, uint32_t events) {
    if (c.phase == EchoConn::Phase::Connecting) {
      if (socket_error(c.fd.get()) != 0) return fail(c, failures_.connect);
      c.phase = EchoConn::Phase::Sending;
    }
    if (c.phase == EchoConn::Phase::Sending) {
      const ssize_t n =
          ::send(c.fd.get(), request_.data() + c.sent, request_.size() - c.sent, MSG_NOSIGNAL);
      if (n < 0) return would_block(errno) ? Step::Pending : fail(c, failures_.reset);
      c.sent += static_cast<size_t>(n);
      if (c.sent < request_.size()) return Step::Pending;
      c.phase = EchoConn::Phase::Receiving;
      if (!ep_.modify(c.fd.get(), EPOLLIN, &c)) return fail(c, failures_.reset);
      return Step::Pending;
    }
    if (c.phase == EchoConn::Phase::Receiving && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
      const ssize_t n = ::recv(c.fd.get(), recv_.data(), recv_.size(), 0);
      if (n < 0) return would_block(errno) ? Step::Pending : fail(c, failures_.reset);
      if (n == 0) return fail(c, failures_.early_eof);
      const auto got = std::span<const uint8_t>(recv_.data(), static_cast<size_t>(n));
      if (c.received + got.size() > payload_ ||
          first_pattern_mismatch(c.received, got, scratch_) != got.size()) {
        return fail(c, failures_.mismatch);
      }
      c.received += got.size();
      if (c.received < payload_) return Step::Pending;
      c.phase = EchoConn::Phase::Done;
      return Step::Completed;
    }
    return Step::Pending;
  }

  // Counts `kind`, closes `c`'s socket, leaves it Idle.
  Step fail(EchoConn& c, uint64_t& kind) {
    ++kind;
    c.fd.reset();
    c.phase = EchoConn::Phase::Idle;
    c.retry_at = Clock::now();
    return Step::Failed;
  }

  // Payload bytes sent and echoed per connection.
  size_t payload() const { return payload_; }

 private:
  Epoll& ep_;
  Failures& failures_;
  sockaddr_storage to_{};
  socklen_t to_len_ = 0;
  const std::vector<uint8_t> request_;
  const size_t payload_;
  std::vector<uint8_t> recv_;
  std::vector<uint8_t> scratch_;
};

// -------------------------------------------------------------------- rate

int run_rate(const Options& o) {
  Epoll ep;
  if (!ep.ok()) return 1;
  Failures failures;
  EchoDriver driver(o, ep, failures);
  Latencies latencies;
  std::vector<EchoConn> slots(o.concurrency);
  std::array<epoll_event, kMaxEvents> events{};
  uint64_t completed = 0;

  const auto start = Clock::now();
  const auto stop_starting = start + Ms(o.duration_ms);
  // In-flight connections get one connection timeout after the duration to
  // finish; after that the run ends whatever is left.
  const auto hard_end = stop_starting + Ms(o.conn_timeout_ms) + Ms(1000);
  auto last_completion = start;

  for (auto& s : slots) driver.start(s);
  for (;;) {
    const auto now = Clock::now();
    size_t busy = 0;
    for (auto& s : slots) {
      if (s.phase == EchoConn::Phase::Idle) {
        if (now < stop_starting && now >= s.retry_at) driver.start(s);
      } else if (now - s.started > Ms(o.conn_timeout_ms) || now >= hard_end) {
        driver.fail(s, failures.timeout);
      }
      if (s.phase != EchoConn::Phase::Idle) ++busy;
    }
    if (busy == 0 && now >= stop_starting) break;
    const int n = ep.wait(events);
    for (int i = 0; i < n; ++i) {
      auto& s = *static_cast<EchoConn*>(events[i].data.ptr);
      if (driver.advance(s, events[i].events) != Step::Completed) continue;
      const auto done = Clock::now();
      latencies.add(done - s.started);
      last_completion = done;
      ++completed;
      s.fd.reset();  // the client closes first, like an HTTP/1.0 client
      s.phase = EchoConn::Phase::Idle;
      s.retry_at = done;
      if (done < stop_starting) driver.start(s);
    }
  }
  const double elapsed = std::max(1e-9, seconds_between(start, last_completion));
  std::printf(
      "{\"mode\": \"rate\", \"connections\": %llu, \"elapsed_s\": %.6f, \"rate\": %.1f, "
      "\"concurrency\": %zu, \"payload\": %zu, \"latency_p50_us\": %u, \"latency_p99_us\": %u, "
      "\"failures\": %s, \"failed\": %llu}\n",
      static_cast<unsigned long long>(completed), elapsed, static_cast<double>(completed) / elapsed,
      o.concurrency, driver.payload(), latencies.quantile(0.5), latencies.quantile(0.99),
      failures.json().c_str(), static_cast<unsigned long long>(failures.total()));
  return failures.total() == 0 ? 0 : 1;
}

// -------------------------------------------------------------------- hold

int run_hold(const Options& o) {
  Epoll ep;
  if (!ep.ok()) return 1;
  Failures failures;
  EchoDriver driver(o, ep, failures);
  std::vector<EchoConn> conns(o.connections);
  std::array<epoll_event, kMaxEvents> events{};
  const auto start = Clock::now();
  const auto setup_end = start + Ms(o.timeout_ms);

  // Set up: at most kHoldSetupWindow in flight; a failed one is retried
  // (and counted), so `ready` reaches N unless the balancer keeps failing.
  size_t next = 0;
  size_t in_flight = 0;
  size_t ready = 0;
  std::vector<size_t> retry;
  while (ready < conns.size() && Clock::now() < setup_end) {
    while (in_flight < kHoldSetupWindow && (next < conns.size() || !retry.empty())) {
      size_t idx = next;
      if (!retry.empty() && Clock::now() >= conns[retry.back()].retry_at) {
        idx = retry.back();
        retry.pop_back();
      } else if (next < conns.size()) {
        ++next;
      } else {
        break;
      }
      if (driver.start(conns[idx]) == Step::Failed) {
        retry.push_back(idx);
      } else {
        ++in_flight;
      }
    }
    const int n = ep.wait(events);
    for (int i = 0; i < n; ++i) {
      auto& c = *static_cast<EchoConn*>(events[i].data.ptr);
      const Step step = driver.advance(c, events[i].events);
      if (step == Step::Pending) continue;
      --in_flight;
      if (step == Step::Completed) {
        ++ready;
        // Watch it while it is held: any event now means it ended.
        if (!ep.modify(c.fd.get(), EPOLLIN | EPOLLRDHUP, &c)) driver.fail(c, failures.reset);
      } else {
        retry.push_back(static_cast<size_t>(&c - conns.data()));
      }
    }
  }
  // Whatever is still being set up is given up: a connection in progress
  // would keep the loop busy with events for the whole hold.
  for (auto& c : conns) {
    if (c.phase != EchoConn::Phase::Done) c.fd.reset();
  }
  const double setup_s = seconds_between(start, Clock::now());
  std::printf("{\"mode\": \"hold\", \"ready\": %zu, \"setup_s\": %.3f}\n", ready, setup_s);
  std::fflush(stdout);

  // Hold until stdin reaches EOF (the harness has sampled what it wanted)
  // or hold-ms passes. stdin's tag is the address of `ready`.
  // (A stdin epoll cannot watch, such as /dev/null, leaves only hold-ms.)
  ep.add(STDIN_FILENO, EPOLLIN, &ready);
  const auto hold_end = Clock::now() + Ms(o.hold_ms);
  bool released = false;
  while (!released && Clock::now() < hold_end) {
    const int n = ep.wait(events);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.ptr == &ready) {
        char buf[256];
        const ssize_t r = ::read(STDIN_FILENO, buf, sizeof buf);
        if (r <= 0) released = true;
        continue;
      }
      auto& c = *static_cast<EchoConn*>(events[i].data.ptr);
      if (c.phase == EchoConn::Phase::Done) driver.fail(c, failures.dropped);
    }
  }
  size_t still_open = 0;
  for (auto& c : conns) {
    if (c.phase == EchoConn::Phase::Done) ++still_open;
    c.fd.reset();
  }
  if (ready < conns.size()) failures.timeout += conns.size() - ready;
  std::printf(
      "{\"mode\": \"hold\", \"connections\": %zu, \"ready\": %zu, \"held_to_end\": %zu, "
      "\"released_by\": \"%s\", \"failures\": %s, \"failed\": %llu}\n",
      conns.size(), ready, still_open, released ? "stdin" : "hold-ms", failures.json().c_str(),
      static_cast<unsigned long long>(failures.total()));
  return failures.total() == 0 ? 0 : 1;
}

// ------------------------------------------------------------------ stream

struct StreamConn {
  UniqueFd fd;
  bool sent = false;
  bool done = false;
  uint64_t received = 0;
  Clock::time_point finished;
};

int run_stream(const Options& o) {
  Epoll ep;
  if (!ep.ok()) return 1;
  Failures failures;
  sockaddr_storage to{};
  const socklen_t to_len = o.connect.to_sockaddr(to);
  const std::string request = "SOURCE " + std::to_string(o.bytes) + "\n";
  std::vector<uint8_t> recv_buf(kRecvBuffer);
  std::vector<uint8_t> scratch(kCheckScratch);
  std::vector<StreamConn> conns(o.streams);
  std::array<epoll_event, kMaxEvents> events{};

  const auto start = Clock::now();
  const auto deadline = start + Ms(o.timeout_ms);
  size_t open = 0;
  for (auto& c : conns) {
    c.fd = start_connect(to, to_len);
    if (!c.fd || !ep.add(c.fd.get(), EPOLLOUT, &c)) {
      ++failures.connect;
      c.fd.reset();
      c.done = true;
      continue;
    }
    ++open;
  }
  auto finish = [&](StreamConn& c, uint64_t* kind) {
    if (kind) ++*kind;
    c.fd.reset();
    c.done = true;
    c.finished = Clock::now();
    --open;
  };
  while (open > 0) {
    if (Clock::now() >= deadline) {
      for (auto& c : conns) {
        if (!c.done) finish(c, &failures.timeout);
      }
      break;
    }
    const int n = ep.wait(events);
    for (int i = 0; i < n; ++i) {
      auto& c = *static_cast<StreamConn*>(events[i].data.ptr);
      if (c.done) continue;
      if (!c.sent) {
        // The request is tiny: one send once connected, then only reads.
        if (socket_error(c.fd.get()) != 0) {
          finish(c, &failures.connect);
          continue;
        }
        const ssize_t s = ::send(c.fd.get(), request.data(), request.size(), MSG_NOSIGNAL);
        if (s != static_cast<ssize_t>(request.size()) || !ep.modify(c.fd.get(), EPOLLIN, &c)) {
          finish(c, &failures.reset);
          continue;
        }
        c.sent = true;
        continue;
      }
      const ssize_t r = ::recv(c.fd.get(), recv_buf.data(), recv_buf.size(), 0);
      if (r < 0) {
        if (!would_block(errno)) finish(c, &failures.reset);
        continue;
      }
      if (r == 0) {
        finish(c, c.received == o.bytes ? nullptr : &failures.early_eof);
        continue;
      }
      const auto got = std::span<const uint8_t>(recv_buf.data(), static_cast<size_t>(r));
      if (c.received + got.size() > o.bytes ||
          first_pattern_mismatch(c.received, got, scratch) != got.size()) {
        finish(c, &failures.mismatch);
        continue;
      }
      c.received += got.size();
    }
  }
  uint64_t total = 0;
  auto last = start;
  for (const auto& c : conns) {
    total += c.received;
    last = std::max(last, c.finished);
  }
  const double elapsed = std::max(1e-9, seconds_between(start, last));
  std::printf(
      "{\"mode\": \"stream\", \"streams\": %zu, \"bytes_per_stream\": %llu, \"bytes\": %llu, "
      "\"elapsed_s\": %.6f, \"gbit_per_s\": %.3f, \"failures\": %s, \"failed\": %llu}\n",
      o.streams, static_cast<unsigned long long>(o.bytes), static_cast<unsigned long long>(total),
      elapsed, static_cast<double>(total) * 8 / elapsed / 1e9, failures.json().c_str(),
      static_cast<unsigned long long>(failures.total()));
  return failures.total() == 0 ? 0 : 1;
}

// --------------------------------------------------------------------- tls

struct TlsConn {
  enum class Phase : uint8_t { Idle, Connecting, Handshaking, Draining };
  UniqueFd fd;
  SslPtr ssl;
  Phase phase = Phase::Idle;
  Clock::time_point started;
  Clock::time_point retry_at;
};

int run_tls(const Options& o) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) {
    std::fprintf(stderr, "edgepin-bench-client: SSL_CTX_new failed\n");
    return 1;
  }
  const int version = o.tls_version == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION;
  SSL_CTX_set_min_proto_version(ctx.get(), version);
  SSL_CTX_set_max_proto_version(ctx.get(), version);
  // Like `openssl s_time -new`: the chain is not verified (the handshake
  // still checks the server's CertificateVerify and Finished), and with no
  // client session cache there is never a session to offer, so every
  // handshake is a full one whatever tickets the server sends.
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);

  Epoll ep;
  if (!ep.ok()) return 1;
  Failures failures;
  Latencies latencies;
  sockaddr_storage to{};
  const socklen_t to_len = o.connect.to_sockaddr(to);
  std::vector<TlsConn> slots(o.concurrency);
  std::array<epoll_event, kMaxEvents> events{};
  std::vector<uint8_t> drain(kRecvBuffer);
  uint64_t completed = 0;
  std::string negotiated = "-";

  const auto start = Clock::now();
  const auto stop_starting = start + Ms(o.duration_ms);
  const auto hard_end = stop_starting + Ms(o.conn_timeout_ms) + Ms(1000);
  auto last_completion = start;

  auto reset = [](TlsConn& c, Clock::duration retry) {
    c.ssl.reset();
    c.fd.reset();
    c.phase = TlsConn::Phase::Idle;
    c.retry_at = Clock::now() + retry;
  };
  auto fail = [&](TlsConn& c, uint64_t& kind) {
    ++kind;
    reset(c, Clock::duration::zero());
  };
  auto begin = [&](TlsConn& c) {
    c.started = Clock::now();
    c.fd = start_connect(to, to_len);
    if (!c.fd || !ep.add(c.fd.get(), EPOLLOUT, &c)) {
      ++failures.connect;
      reset(c, kRetryDelay);
      return;
    }
    c.ssl.reset(SSL_new(ctx.get()));
    if (!c.ssl || SSL_set_fd(c.ssl.get(), c.fd.get()) != 1 ||
        SSL_set_tlsext_host_name(c.ssl.get(), o.sni.c_str()) != 1) {
      fail(c, failures.handshake);
      return;
    }
    c.phase = TlsConn::Phase::Connecting;
  };
  // Drives the handshake; on completion sends close_notify and a FIN and
  // starts draining what the server still sends (TLS 1.3 tickets, its own
  // close_notify), so no side closes with unread data and resets.
  auto handshake = [&](TlsConn& c) {
    ERR_clear_error();
    const int r = SSL_connect(c.ssl.get());
    if (r == 1) {
      const auto done = Clock::now();
      if (SSL_session_reused(c.ssl.get())) ++failures.resumed;
      if (completed == 0) negotiated = SSL_get_version(c.ssl.get());
      ++completed;
      latencies.add(done - c.started);
      last_completion = done;
      SSL_shutdown(c.ssl.get());
      ::shutdown(c.fd.get(), SHUT_WR);
      c.phase = TlsConn::Phase::Draining;
      if (!ep.modify(c.fd.get(), EPOLLIN, &c)) reset(c, Clock::duration::zero());
      return;
    }
    const int err = SSL_get_error(c.ssl.get(), r);
    if (err == SSL_ERROR_WANT_READ) {
      if (!ep.modify(c.fd.get(), EPOLLIN, &c)) fail(c, failures.reset);
    } else if (err == SSL_ERROR_WANT_WRITE) {
      if (!ep.modify(c.fd.get(), EPOLLOUT, &c)) fail(c, failures.reset);
    } else {
      fail(c, failures.handshake);
    }
  };

  for (auto& s : slots) begin(s);
  for (;;) {
    const auto now = Clock::now();
    size_t busy = 0;
    for (auto& s : slots) {
      if (s.phase == TlsConn::Phase::Idle) {
        if (now < stop_starting && now >= s.retry_at) begin(s);
      } else if (now - s.started > Ms(o.conn_timeout_ms) || now >= hard_end) {
        // A slow drain after a completed handshake is not a failure.
        if (s.phase == TlsConn::Phase::Draining) {
          reset(s, Clock::duration::zero());
        } else {
          fail(s, failures.timeout);
        }
      }
      if (s.phase != TlsConn::Phase::Idle) ++busy;
    }
    if (busy == 0 && now >= stop_starting) break;
    const int n = ep.wait(events);
    for (int i = 0; i < n; ++i) {
      auto& c = *static_cast<TlsConn*>(events[i].data.ptr);
      switch (c.phase) {
        case TlsConn::Phase::Idle:
          break;
        case TlsConn::Phase::Connecting:
          if (socket_error(c.fd.get()) != 0) {
            fail(c, failures.connect);
            break;
          }
          c.phase = TlsConn::Phase::Handshaking;
          handshake(c);
          break;
        case TlsConn::Phase::Handshaking:
          handshake(c);
          break;
        case TlsConn::Phase::Draining: {
          const ssize_t r = ::recv(c.fd.get(), drain.data(), drain.size(), 0);
          if (r > 0 || (r < 0 && would_block(errno))) break;
          // EOF (or a reset after our close_notify): the exchange is over.
          reset(c, Clock::duration::zero());
          if (Clock::now() < stop_starting) begin(c);
          break;
        }
      }
    }
  }
  const double elapsed = std::max(1e-9, seconds_between(start, last_completion));
  std::printf(
      "{\"mode\": \"tls\", \"handshakes\": %llu, \"elapsed_s\": %.6f, \"rate\": %.1f, "
      "\"concurrency\": %zu, \"version\": \"%s\", \"latency_p50_us\": %u, \"latency_p99_us\": %u, "
      "\"failures\": %s, \"failed\": %llu}\n",
      static_cast<unsigned long long>(completed), elapsed, static_cast<double>(completed) / elapsed,
      o.concurrency, negotiated.c_str(), latencies.quantile(0.5), latencies.quantile(0.99),
      failures.json().c_str(), static_cast<unsigned long long>(failures.total()));
  return failures.total() == 0 ? 0 : 1;
}

int client_main(int argc, char** argv) {
  auto o = parse_options(argc, argv);
  if (!o) return 2;
  switch (o->mode) {
    case Mode::Rate:
      return run_rate(*o);
    case Mode::Stream:
      return run_stream(*o);
    case Mode::Hold:
      return run_hold(*o);
    case Mode::Tls:
      return run_tls(*o);
  }
  return 2;
}

}  // namespace
}  // namespace edgepin::bench::client

int main(int argc, char** argv) { return edgepin::bench::client::client_main(argc, argv); }
