// edgepin-bench-server: the plain-TCP backend of the benchmarks in
// tests/bench/ (a test tool; never installed).
//
// Why not edgepin-test-backend, which serves the same ECHO and SOURCE
// commands: it runs one thread per connection, so at thousands of new
// connections a second it measures thread creation, not the balancer in
// front of it; and its SOURCE bytes are SHAKE128 output, whose generation
// costs more CPU per byte than the relay being measured. This server is one
// epoll loop with a fixed buffer per connection, and it sends the cheap
// pattern of bench_pattern.h, so on a shared 2-core machine the balancer,
// not the backend, is what the numbers describe.
//
// A connection may start with a PROXY header (v1 or v2, recognised by its
// first byte and decoded with common/proxy_protocol), then one command line:
//   ECHO        echoes every byte until the client's EOF, then closes;
//   SOURCE N    sends N bytes of the bench pattern, then closes;
//   STATS       answers one line of counters (key=value ...), then closes.
// A connection that closes before its command line (a health check) counts
// as `empty`. Every connection is bounded: one fixed buffer, an idle
// timeout, and --max-conns at once (beyond it, new ones are closed at once).
// SIGTERM/SIGINT: close everything and exit 0.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
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
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "net_address.h"
#include "proxy_protocol.h"
#include "tests/bench/bench_fd.h"
#include "tests/bench/bench_pattern.h"

namespace edgepin::bench::server {
namespace {

using Clock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;

// ------------------------------------------------------------------ limits

// Bytes kept per connection for what precedes the payload: a PROXY header
// (a balancer's is under 300 bytes: addresses plus the SNI TLV) and the
// command line. Longer is refused, not buffered.
inline constexpr size_t kMaxPreamble = 1024;
// The one data buffer per connection (ECHO back-pressure, SOURCE writes).
inline constexpr size_t kIoBuffer = 64 * 1024;
// SOURCE: the most one command may ask for (1 TiB).
inline constexpr uint64_t kMaxSourceBytes = uint64_t{1} << 40;
// Accepts per wake-up of the listener, so a connection storm cannot starve
// the established connections.
inline constexpr int kAcceptBatch = 64;
inline constexpr int kMaxEvents = 256;
// The longest epoll wait: the idle sweep runs at least this often.
inline constexpr int kSweepIntervalMs = 1000;

// ----------------------------------------------------------------- options

struct Options {
  SocketAddress listen;
  std::string name = "bench";
  size_t max_connections = 4096;
  Ms idle_timeout{120000};
};

void usage(FILE* out) {
  std::fputs(
      "usage: edgepin-bench-server --listen HOST:PORT [options]\n"
      "  --listen HOST:PORT     address to listen on (port 0: any; the first stdout\n"
      "                         line is \"listening PORT\")\n"
      "  --name NAME            reported by STATS\n"
      "  --max-conns N          connections at once (default 4096)\n"
      "  --idle-timeout-ms MS   close a connection silent for this long (default 120000)\n"
      "commands (one line per connection, after an optional PROXY v1/v2 header):\n"
      "  ECHO | SOURCE N | STATS\n",
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
  Options o;
  bool have_listen = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help") {
      usage(stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "edgepin-bench-server: %s needs a value (or is unknown)\n", argv[i]);
      return std::nullopt;
    }
    const std::string_view value = argv[++i];
    if (arg == "--listen") {
      std::string error;
      auto a =
          SocketAddress::parse(value, {.allow_wildcard = false, .allow_port_zero = true}, &error);
      if (!a) {
        std::fprintf(stderr, "edgepin-bench-server: --listen: %s\n", error.c_str());
        return std::nullopt;
      }
      o.listen = *a;
      have_listen = true;
    } else if (arg == "--name") {
      o.name = value;
    } else if (arg == "--max-conns") {
      auto n = parse_number<size_t>(value);
      if (!n || *n == 0) {
        std::fprintf(stderr, "edgepin-bench-server: --max-conns: want a positive integer\n");
        return std::nullopt;
      }
      o.max_connections = *n;
    } else if (arg == "--idle-timeout-ms") {
      auto n = parse_number<uint32_t>(value);
      if (!n || *n == 0) {
        std::fprintf(stderr, "edgepin-bench-server: --idle-timeout-ms: want a positive integer\n");
        return std::nullopt;
      }
      o.idle_timeout = Ms(*n);
    } else {
      std::fprintf(stderr, "edgepin-bench-server: unknown option %s\n", argv[i - 1]);
      usage(stderr);
      return std::nullopt;
    }
  }
  if (!have_listen) {
    usage(stderr);
    return std::nullopt;
  }
  return o;
}

// ---------------------------------------------------------------- counters

// Everything STATS reports. The harness reads them directly from each
// backend (not through a balancer) before and after a measurement.
struct Counters {
  uint64_t accepted = 0;
  uint64_t refused = 0;  // over --max-conns
  uint64_t proxy_v1 = 0;
  uint64_t proxy_v2 = 0;
  uint64_t proxy_local = 0;  // LOCAL command (a check), counted in v1/v2 too
  uint64_t proxy_errors = 0;
  uint64_t echo = 0;
  uint64_t source = 0;
  uint64_t stats = 0;
  uint64_t bad_command = 0;
  uint64_t empty = 0;  // closed before a command line
  uint64_t idle_timeouts = 0;
  uint64_t io_errors = 0;  // reset or other socket error mid-connection
  uint64_t bytes_in = 0;   // payload bytes read after the command line
  uint64_t bytes_out = 0;  // ECHO and SOURCE bytes written (not STATS lines)
  // PROXY (not LOCAL) headers by their destination port: which balancer
  // frontend the client reached.
  std::map<uint16_t, uint64_t> proxy_dst_ports;
};

std::string format_stats(const Options& o, const Counters& c, size_t active) {
  std::string s = "name=" + o.name;
  auto add = [&s](std::string_view key, uint64_t v) {
    s += ' ';
    s += key;
    s += '=';
    s += std::to_string(v);
  };
  add("accepted", c.accepted);
  add("active", active);
  add("refused", c.refused);
  add("proxy_v1", c.proxy_v1);
  add("proxy_v2", c.proxy_v2);
  add("proxy_local", c.proxy_local);
  add("proxy_errors", c.proxy_errors);
  add("echo", c.echo);
  add("source", c.source);
  add("stats", c.stats);
  add("bad_command", c.bad_command);
  add("empty", c.empty);
  add("idle_timeouts", c.idle_timeouts);
  add("io_errors", c.io_errors);
  add("bytes_in", c.bytes_in);
  add("bytes_out", c.bytes_out);
  s += " proxy_dst_ports=";
  bool first = true;
  for (const auto& [port, count] : c.proxy_dst_ports) {
    if (!first) s += ',';
    first = false;
    s += std::to_string(port) + ':' + std::to_string(count);
  }
  if (first) s += '-';
  s += '\n';
  return s;
}

// -------------------------------------------------------------- connection

enum class Phase : uint8_t {
  Preamble,  // reading the PROXY header and the command line
  Echo,      // echoing until EOF
  Send,      // writing SOURCE bytes or the STATS line, then closing
};

struct Connection {
  UniqueFd fd;
  Phase phase = Phase::Preamble;
  bool proxy_checked = false;  // the PROXY header (or its absence) is settled
  bool peer_eof = false;
  std::array<uint8_t, kMaxPreamble> head{};
  size_t head_len = 0;
  // Echo/Send: bytes [out_begin, out_end) of `buf` wait to be written.
  std::unique_ptr<uint8_t[]> buf;
  size_t out_begin = 0;
  size_t out_end = 0;
  uint64_t source_offset = 0;
  uint64_t source_left = 0;
  bool counts_bytes = true;  // false for the STATS reply
  uint32_t interest = 0;     // the epoll events registered now
  Clock::time_point last_activity;
};

class Server {
 public:
  Server(Options options, UniqueFd listener, UniqueFd epoll, UniqueFd signals)
      : o_(std::move(options)),
        listener_(std::move(listener)),
        epoll_(std::move(epoll)),
        signals_(std::move(signals)) {}

  // Adds the listener and the signalfd to the epoll set. Returns false
  // (after printing why) if the kernel refuses.
  bool register_fds() {
    for (UniqueFd* fd : {&listener_, &signals_}) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = fd;
      if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd->get(), &ev) != 0) {
        std::perror("edgepin-bench-server: epoll_ctl");
        return false;
      }
    }
    return true;
  }

  // Serves until SIGTERM/SIGINT. Returns the exit status: 0, or 1 if
  // epoll itself failed.
  int run() {
    std::array<epoll_event, kMaxEvents> events{};
    auto next_sweep = Clock::now() + Ms(kSweepIntervalMs);
    for (;;) {
      const int n = epoll_wait(epoll_.get(), events.data(), kMaxEvents, kSweepIntervalMs);
      if (n < 0) {
        if (errno == EINTR) continue;
        std::perror("edgepin-bench-server: epoll_wait");
        return 1;
      }
      for (int i = 0; i < n; ++i) {
        void* tag = events[i].data.ptr;
        if (tag == &listener_) {
          accept_batch();
        } else if (tag == &signals_) {
          return 0;
        } else {
          handle(static_cast<Connection*>(tag), events[i].events);
        }
      }
      if (Clock::now() >= next_sweep) {
        sweep_idle();
        next_sweep = Clock::now() + Ms(kSweepIntervalMs);
      }
    }
  }

 private:
  void accept_batch() {
    for (int i = 0; i < kAcceptBatch; ++i) {
      const int fd = accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN, or a transient error such as EMFILE
      UniqueFd owned(fd);
      if (connections_.size() >= o_.max_connections) {
        ++c_.refused;
        continue;  // closed by `owned`
      }
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto conn = std::make_unique<Connection>();
      conn->fd = std::move(owned);
      conn->last_activity = Clock::now();
      Connection* raw = conn.get();
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = raw;
      if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
        ++c_.io_errors;
        continue;
      }
      raw->interest = EPOLLIN;
      connections_.emplace(raw, std::move(conn));
      ++c_.accepted;
    }
  }

  void close(Connection* conn) {
    // Closing the fd also removes it from the epoll set.
    connections_.erase(conn);
  }

  void sweep_idle() {
    const auto now = Clock::now();
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (now - it->second->last_activity > o_.idle_timeout) {
        ++c_.idle_timeouts;
        it = connections_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void handle(Connection* conn, uint32_t events) {
    conn->last_activity = Clock::now();
    bool alive = true;
    if (conn->phase == Phase::Preamble) {
      alive = read_preamble(conn);
    } else if (conn->phase == Phase::Echo) {
      if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) alive = read_echo(conn);
    }
    if (alive && conn->phase != Phase::Preamble) alive = flush(conn);
    if (alive) alive = update_interest(conn);
    if (!alive) close(conn);
  }

  // Returns false when the connection is finished (closed by the caller).
  bool read_preamble(Connection* conn) {
    const ssize_t n = ::recv(conn->fd.get(), conn->head.data() + conn->head_len,
                             conn->head.size() - conn->head_len, 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return true;
      ++c_.io_errors;
      return false;
    }
    if (n == 0) {
      ++(conn->head_len == 0 ? c_.empty : c_.bad_command);
      return false;
    }
    conn->head_len += static_cast<size_t>(n);
    std::span<const uint8_t> head(conn->head.data(), conn->head_len);

    if (!conn->proxy_checked) {
      // The v2 signature starts with CR and v1 with "PROXY "; no command
      // does, so the first byte tells whether a header comes.
      if (head[0] == proxy::kV2Signature[0] || head[0] == 'P') {
        const proxy::DecodeResult r = proxy::decode(head, proxy::Accept::Any);
        if (r.status == ParseStatus::NeedMore) {
          if (conn->head_len < conn->head.size()) return true;
          ++c_.proxy_errors;
          return false;
        }
        if (r.status == ParseStatus::Error) {
          ++c_.proxy_errors;
          return false;
        }
        ++(r.header.version == proxy::Version::V2 ? c_.proxy_v2 : c_.proxy_v1);
        if (r.header.command == proxy::Command::Local) {
          ++c_.proxy_local;
        } else {
          ++c_.proxy_dst_ports[r.header.destination.port];
        }
        std::memmove(conn->head.data(), conn->head.data() + r.consumed,
                     conn->head_len - r.consumed);
        conn->head_len -= r.consumed;
        head = head.first(conn->head_len);
      }
      conn->proxy_checked = true;
    }

    const auto* nl = static_cast<const uint8_t*>(std::memchr(head.data(), '\n', head.size()));
    if (nl == nullptr) {
      if (conn->head_len < conn->head.size()) return true;
      ++c_.bad_command;
      return false;
    }
    const size_t line_len = static_cast<size_t>(nl - head.data());
    std::string_view line(reinterpret_cast<const char*>(head.data()), line_len);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::span<const uint8_t> rest = head.subspan(line_len + 1);
    return start_command(conn, line, rest);
  }

  bool start_command(Connection* conn, std::string_view line, std::span<const uint8_t> rest) {
    conn->buf = std::make_unique<uint8_t[]>(kIoBuffer);
    if (line == "ECHO") {
      ++c_.echo;
      conn->phase = Phase::Echo;
      // Bytes that arrived with the command line are the first to echo.
      std::memcpy(conn->buf.get(), rest.data(), rest.size());
      conn->out_end = rest.size();
      c_.bytes_in += rest.size();
      return true;
    }
    if (line.starts_with("SOURCE ")) {
      auto count = parse_number<uint64_t>(line.substr(7));
      if (!count || *count > kMaxSourceBytes) {
        ++c_.bad_command;
        return false;
      }
      ++c_.source;
      conn->phase = Phase::Send;
      conn->source_left = *count;
      return true;
    }
    if (line == "STATS") {
      ++c_.stats;
      // Connections still open, not counting this one.
      const std::string text = format_stats(o_, c_, connections_.size() - 1);
      const size_t n = std::min(text.size(), kIoBuffer);
      std::memcpy(conn->buf.get(), text.data(), n);
      conn->out_end = n;
      conn->phase = Phase::Send;
      conn->counts_bytes = false;
      return true;
    }
    ++c_.bad_command;
    return false;
  }

  bool read_echo(Connection* conn) {
    if (conn->out_begin == conn->out_end) conn->out_begin = conn->out_end = 0;
    if (conn->out_end == kIoBuffer && conn->out_begin > 0) {
      std::memmove(conn->buf.get(), conn->buf.get() + conn->out_begin,
                   conn->out_end - conn->out_begin);
      conn->out_end -= conn->out_begin;
      conn->out_begin = 0;
    }
    if (conn->out_end == kIoBuffer || conn->peer_eof) return true;
    const ssize_t n =
        ::recv(conn->fd.get(), conn->buf.get() + conn->out_end, kIoBuffer - conn->out_end, 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return true;
      ++c_.io_errors;
      return false;
    }
    if (n == 0) {
      conn->peer_eof = true;
      return true;
    }
    conn->out_end += static_cast<size_t>(n);
    c_.bytes_in += static_cast<uint64_t>(n);
    return true;
  }

  // Writes what is pending (refilling from the SOURCE stream). Returns false
  // when the connection is finished: its reply is complete, or it failed.
  bool flush(Connection* conn) {
    for (;;) {
      if (conn->out_begin == conn->out_end) {
        conn->out_begin = conn->out_end = 0;
        if (conn->phase == Phase::Send && conn->source_left > 0) {
          const size_t n = static_cast<size_t>(std::min<uint64_t>(kIoBuffer, conn->source_left));
          fill_pattern(conn->source_offset, std::span<uint8_t>(conn->buf.get(), n));
          conn->source_offset += n;
          conn->source_left -= n;
          conn->out_end = n;
        } else if (conn->phase == Phase::Send) {
          return false;  // everything sent: close (FIN after the data)
        } else {
          return !conn->peer_eof;  // ECHO ends once the client's EOF is echoed
        }
      }
      const ssize_t n = ::send(conn->fd.get(), conn->buf.get() + conn->out_begin,
                               conn->out_end - conn->out_begin, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return true;
        ++c_.io_errors;
        return false;
      }
      conn->out_begin += static_cast<size_t>(n);
      if (conn->counts_bytes) c_.bytes_out += static_cast<uint64_t>(n);
      if (conn->out_begin < conn->out_end) return true;  // socket buffer full
    }
  }

  bool update_interest(Connection* conn) {
    uint32_t want = 0;
    if (conn->phase == Phase::Preamble) {
      want = EPOLLIN;
    } else {
      if (conn->out_begin < conn->out_end || (conn->phase == Phase::Send)) want |= EPOLLOUT;
      if (conn->phase == Phase::Echo && !conn->peer_eof && conn->out_end < kIoBuffer)
        want |= EPOLLIN;
    }
    if (want == conn->interest) return true;
    epoll_event ev{};
    ev.events = want;
    ev.data.ptr = conn;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, conn->fd.get(), &ev) != 0) {
      ++c_.io_errors;
      return false;
    }
    conn->interest = want;
    return true;
  }

  Options o_;
  UniqueFd listener_;
  UniqueFd epoll_;
  UniqueFd signals_;
  Counters c_;
  std::unordered_map<Connection*, std::unique_ptr<Connection>> connections_;
};

// Returns the listening socket, or an empty UniqueFd after printing why.
UniqueFd listen_on(const SocketAddress& address) {
  sockaddr_storage ss{};
  const socklen_t len = address.to_sockaddr(ss);
  UniqueFd fd(socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    std::perror("edgepin-bench-server: socket");
    return {};
  }
  const int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&ss), len) != 0 ||
      listen(fd.get(), SOMAXCONN) != 0) {
    std::fprintf(stderr, "edgepin-bench-server: cannot listen on %s: %s\n",
                 address.to_string().c_str(), std::strerror(errno));
    return {};
  }
  return fd;
}

int server_main(int argc, char** argv) {
  auto options = parse_options(argc, argv);
  if (!options) return 2;

  // SIGTERM and SIGINT arrive through a signalfd in the event loop, so no
  // handler runs in the middle of a connection's state change.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) {
    std::perror("edgepin-bench-server: sigprocmask");
    return 1;
  }
  UniqueFd signals(signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  UniqueFd listener = listen_on(options->listen);
  if (!signals || !epoll || !listener) {
    if (!signals || !epoll) std::perror("edgepin-bench-server: signalfd/epoll");
    return 1;
  }

  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  getsockname(listener.get(), reinterpret_cast<sockaddr*>(&bound), &bound_len);
  const auto local = SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&bound), bound_len);

  Server server(std::move(*options), std::move(listener), std::move(epoll), std::move(signals));
  if (!server.register_fds()) return 1;
  std::printf("listening %u\n", local ? static_cast<unsigned>(local->port()) : 0U);
  std::fflush(stdout);
  return server.run();
}

}  // namespace
}  // namespace edgepin::bench::server

int main(int argc, char** argv) { return edgepin::bench::server::server_main(argc, argv); }
