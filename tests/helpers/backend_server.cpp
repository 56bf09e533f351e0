// edgepin-test-backend: a real backend for the lb's integration tests.
//
// It accepts TCP (or TLS, terminated with OpenSSL and optionally with
// node-tagged session IDs and tickets, exactly as the node-proxy issues
// them), optionally reads a PROXY header first, then serves one command
// line per connection:
//   WHO              one line describing what the backend saw, then close;
//   SINK             reads until EOF, answers "sha256=<hex> bytes=N";
//   SOURCE N SEED    sends N deterministic bytes (see source_chunk), closes;
//   ECHO             echoes everything until EOF, then closes.
// A close always sends TLS close_notify (TLS) and a FIN, then drains what
// the client still sends for a moment, so the client sees the whole answer
// instead of a reset.
//
// Threads: the main thread accepts and watches signals (signalfd); each
// connection runs on its own thread with non-blocking I/O, poll() waits
// bounded by --idle-timeout-ms, and a shared stop pipe that SIGTERM makes
// readable so every connection ends at once. Connections are capped by
// --max-conns; buffers are fixed-size. SIGTERM/SIGINT: stop accepting,
// stop every connection, join every thread, free everything, exit 0.
#include <arpa/inet.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "log.h"
#include "node_tag.h"
#include "proxy_protocol.h"
#include "session_tagging.h"
#include "ssl_ptr.h"

namespace edgepin::test::backend {
namespace {

using Ms = std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// ------------------------------------------------------------------ limits

inline constexpr size_t kMaxCommandLine = 1024;
inline constexpr size_t kIoChunk = 16 * 1024;
// ECHO holds at most this much that the client has sent but not yet read
// back; past it the backend stops reading (back-pressure, bounded memory).
inline constexpr size_t kEchoBuffer = 256 * 1024;
// SOURCE: the most bytes one command may ask for (1 TiB: any test, never
// an overflow).
inline constexpr uint64_t kMaxSourceBytes = uint64_t{1} << 40;
inline constexpr size_t kMaxSeedSize = 64;
// SOURCE output is SHAKE128 blocks of this size (the generator's contract
// with tests/integration/edgepin_testlib.py).
inline constexpr size_t kSourceBlock = 64 * 1024;
inline constexpr std::string_view kSourceDomain = "edgepin-source:";
// After our FIN, how long and how much we keep reading what the client still
// sends, so that closing does not reset the connection under our answer.
inline constexpr Ms kLingerTime{2000};
inline constexpr size_t kLingerBytes = 1024 * 1024;
// How often the accept loop wakes to join finished connection threads.
inline constexpr int kReapIntervalMs = 200;

// ----------------------------------------------------------------- options

enum class Mode { Tcp, Tls };

struct Options {
  proxy::Address listen;
  std::string name = "backend";
  Mode mode = Mode::Tcp;
  std::optional<proxy::Accept> proxy;  // nullopt: no PROXY header expected
  std::string cert_file;
  std::string key_file;
  nodetag::Tag tag = nodetag::kInvalidTag;
  bool tickets = true;
  bool cache = true;
  int tls_max = TLS1_3_VERSION;
  Ms idle_timeout{30000};
  size_t max_connections = 256;
};

void usage(FILE* out) {
  std::fputs(
      "usage: edgepin-test-backend --listen HOST:PORT [options]\n"
      "  --listen HOST:PORT     address to listen on (port 0: any; the port is printed\n"
      "                         as the first stdout line, \"listening PORT\")\n"
      "  --name NAME            this backend's name, reported by WHO\n"
      "  --mode tls|tcp         terminate TLS, or serve plain TCP (default tcp)\n"
      "  --proxy none|v1|v2|any expect a PROXY header first (default none)\n"
      "  --cert FILE --key FILE certificate chain and key (tls mode)\n"
      "  --tag N                node-tagged session IDs and ticket keys (1..65535)\n"
      "  --no-tickets           no session tickets (SSL_OP_NO_TICKET)\n"
      "  --no-cache             no server session cache\n"
      "  --tls-max 1.2|1.3      highest TLS version (default 1.3)\n"
      "  --idle-timeout-ms MS   longest wait for the client (default 30000)\n"
      "  --max-conns N          concurrent connections (default 256)\n"
      "commands (one line per connection): WHO | SINK | SOURCE N SEED | ECHO\n",
      out);
}

template <typename T>
std::optional<T> parse_number(std::string_view s) {
  T value{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return value;
}

// "127.0.0.1:8443", "[::1]:8443".
std::optional<proxy::Address> parse_host_port(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find("]:");
    if (close == std::string_view::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  auto p = parse_number<uint16_t>(port);
  if (!p) return std::nullopt;
  return proxy::Address::parse(host, *p);
}

// Returns the options, or nullopt after printing why to stderr.
std::optional<Options> parse_options(int argc, char** argv) {
  enum : int {
    kListen = 1000,
    kName,
    kMode,
    kProxy,
    kCert,
    kKey,
    kTag,
    kNoTickets,
    kNoCache,
    kTlsMax,
    kIdle,
    kMaxConns,
    kHelp
  };
  static const option long_options[] = {
      {"listen", required_argument, nullptr, kListen},
      {"name", required_argument, nullptr, kName},
      {"mode", required_argument, nullptr, kMode},
      {"proxy", required_argument, nullptr, kProxy},
      {"cert", required_argument, nullptr, kCert},
      {"key", required_argument, nullptr, kKey},
      {"tag", required_argument, nullptr, kTag},
      {"no-tickets", no_argument, nullptr, kNoTickets},
      {"no-cache", no_argument, nullptr, kNoCache},
      {"tls-max", required_argument, nullptr, kTlsMax},
      {"idle-timeout-ms", required_argument, nullptr, kIdle},
      {"max-conns", required_argument, nullptr, kMaxConns},
      {"help", no_argument, nullptr, kHelp},
      {nullptr, 0, nullptr, 0},
  };
  Options o;
  bool have_listen = false;
  auto fail = [](const std::string& why) {
    std::fprintf(stderr, "edgepin-test-backend: %s\n", why.c_str());
    return std::nullopt;
  };
  int c;
  while ((c = getopt_long(argc, argv, "", long_options, nullptr)) != -1) {
    std::string_view arg = optarg ? optarg : "";
    switch (c) {
      case kListen: {
        auto a = parse_host_port(arg);
        if (!a)
          return fail("--listen: expected IP:PORT or [IPv6]:PORT, got '" + std::string(arg) + "'");
        o.listen = *a;
        have_listen = true;
        break;
      }
      case kName:
        if (arg.empty() || arg.find_first_of(" \t\r\n") != std::string_view::npos)
          return fail("--name: must be non-empty without spaces");
        o.name = arg;
        break;
      case kMode:
        if (arg == "tls")
          o.mode = Mode::Tls;
        else if (arg == "tcp")
          o.mode = Mode::Tcp;
        else
          return fail("--mode: expected tls or tcp");
        break;
      case kProxy:
        if (arg == "none")
          o.proxy.reset();
        else if (arg == "v1")
          o.proxy = proxy::Accept::V1Only;
        else if (arg == "v2")
          o.proxy = proxy::Accept::V2Only;
        else if (arg == "any")
          o.proxy = proxy::Accept::Any;
        else
          return fail("--proxy: expected none, v1, v2 or any");
        break;
      case kCert:
        o.cert_file = arg;
        break;
      case kKey:
        o.key_file = arg;
        break;
      case kTag: {
        auto t = parse_number<nodetag::Tag>(arg);
        if (!t || *t == nodetag::kInvalidTag) return fail("--tag: expected 1..65535");
        o.tag = *t;
        break;
      }
      case kNoTickets:
        o.tickets = false;
        break;
      case kNoCache:
        o.cache = false;
        break;
      case kTlsMax:
        if (arg == "1.2")
          o.tls_max = TLS1_2_VERSION;
        else if (arg == "1.3")
          o.tls_max = TLS1_3_VERSION;
        else
          return fail("--tls-max: expected 1.2 or 1.3");
        break;
      case kIdle: {
        auto ms = parse_number<uint32_t>(arg);
        if (!ms || *ms == 0) return fail("--idle-timeout-ms: expected a positive number");
        o.idle_timeout = Ms(*ms);
        break;
      }
      case kMaxConns: {
        auto n = parse_number<uint32_t>(arg);
        if (!n || *n == 0 || *n > 10000) return fail("--max-conns: expected 1..10000");
        o.max_connections = *n;
        break;
      }
      case kHelp:
        usage(stdout);
        std::exit(0);
      default:
        usage(stderr);
        return std::nullopt;
    }
  }
  if (optind != argc) return fail("unexpected argument '" + std::string(argv[optind]) + "'");
  if (!have_listen) return fail("--listen is required");
  if (o.mode == Mode::Tls && (o.cert_file.empty() || o.key_file.empty()))
    return fail("--mode tls needs --cert and --key");
  if (o.mode == Mode::Tcp && (!o.cert_file.empty() || o.tag != nodetag::kInvalidTag))
    return fail("--cert/--key/--tag need --mode tls");
  return o;
}

// ----------------------------------------------------------------- helpers

std::string endpoint_string(const proxy::Address& a) {
  if (a.family == proxy::Family::Unspec) return "-";
  if (a.family == proxy::Family::Inet6) return "[" + a.ip_string() + "]:" + std::to_string(a.port);
  return a.ip_string() + ":" + std::to_string(a.port);
}

std::string hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 0xF];
  }
  return out;
}

// Closes an fd exactly once.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// ---------------------------------------------------------------- streams

// The result of one non-blocking step.
enum class Step { Ok, WantRead, WantWrite, Eof, Error };

// What a connection thread waits on: its socket, with the idle timeout, and
// the process-wide stop pipe.
struct Waiter {
  int fd;
  int stop_fd;
  Ms timeout;
  std::string* error;  // where the reason for a failed wait goes

  // Waits until `fd` is ready for `events`. Returns false (with the reason)
  // on timeout, stop, or a poll error.
  bool wait(short events) const {
    pollfd fds[2] = {{fd, events, 0}, {stop_fd, POLLIN, 0}};
    for (;;) {
      int rc = ::poll(fds, 2, static_cast<int>(timeout.count()));
      if (rc < 0 && errno == EINTR) continue;
      if (rc < 0) {
        *error = std::string("poll: ") + std::strerror(errno);
        return false;
      }
      if (rc == 0) {
        *error = "idle_timeout";
        return false;
      }
      if (fds[1].revents) {
        *error = "stopped";
        return false;
      }
      // POLLHUP/POLLERR count as ready: the next read or write reports them.
      return true;
    }
  }
};

class Stream {
 public:
  virtual ~Stream() = default;
  // Non-blocking. Ok with `n` bytes (never 0), Eof, WantRead/WantWrite, or
  // Error (reason in error()).
  virtual Step read(std::span<uint8_t> buf, size_t& n) = 0;
  virtual Step write(std::span<const uint8_t> buf, size_t& n) = 0;
  // Non-blocking step of "no more data from us": close_notify (TLS), then
  // a TCP FIN. Ok when done.
  virtual Step close_write() = 0;
  std::string& error() { return error_; }

 protected:
  std::string error_;
};

class TcpStream final : public Stream {
 public:
  explicit TcpStream(int fd) : fd_(fd) {}
  Step read(std::span<uint8_t> buf, size_t& n) override {
    for (;;) {
      ssize_t r = ::recv(fd_, buf.data(), buf.size(), 0);
      if (r > 0) {
        n = static_cast<size_t>(r);
        return Step::Ok;
      }
      if (r == 0) return Step::Eof;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Step::WantRead;
      error_ = std::string("recv: ") + std::strerror(errno);
      return Step::Error;
    }
  }
  Step write(std::span<const uint8_t> buf, size_t& n) override {
    for (;;) {
      ssize_t r = ::send(fd_, buf.data(), buf.size(), MSG_NOSIGNAL);
      if (r >= 0) {
        n = static_cast<size_t>(r);
        return n > 0 ? Step::Ok : Step::WantWrite;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Step::WantWrite;
      error_ = std::string("send: ") + std::strerror(errno);
      return Step::Error;
    }
  }
  Step close_write() override {
    if (::shutdown(fd_, SHUT_WR) != 0 && errno != ENOTCONN) {
      error_ = std::string("shutdown: ") + std::strerror(errno);
      return Step::Error;
    }
    return Step::Ok;
  }

 private:
  int fd_;
};

class TlsStream final : public Stream {
 public:
  TlsStream(SslPtr ssl, int fd) : ssl_(std::move(ssl)), fd_(fd) {}
  SSL* ssl() const { return ssl_.get(); }

  Step handshake() { return classify(SSL_do_handshake(ssl_.get()), "handshake"); }

  Step read(std::span<uint8_t> buf, size_t& n) override {
    ERR_clear_error();
    return classify(SSL_read_ex(ssl_.get(), buf.data(), buf.size(), &n) == 1 ? 1 : 0, "read");
  }
  Step write(std::span<const uint8_t> buf, size_t& n) override {
    ERR_clear_error();
    return classify(SSL_write_ex(ssl_.get(), buf.data(), buf.size(), &n) == 1 ? 1 : 0, "write");
  }
  Step close_write() override {
    if (!close_notify_sent_) {
      ERR_clear_error();
      int rc = SSL_shutdown(ssl_.get());
      // 0: our close_notify is out and the peer's has not arrived; we do
      // not wait for it (the linger drain reads whatever still comes).
      // Below 0: the alert could not be flushed yet (WantWrite) or failed.
      if (rc < 0) return classify(rc, "shutdown");
      close_notify_sent_ = true;
    }
    if (::shutdown(fd_, SHUT_WR) != 0 && errno != ENOTCONN) {
      error_ = std::string("shutdown: ") + std::strerror(errno);
      return Step::Error;
    }
    return Step::Ok;
  }

 private:
  Step classify(int rc, const char* what) {
    if (rc == 1) return Step::Ok;
    switch (SSL_get_error(ssl_.get(), rc)) {
      case SSL_ERROR_WANT_READ:
        return Step::WantRead;
      case SSL_ERROR_WANT_WRITE:
        return Step::WantWrite;
      // A close_notify, or (SSL_OP_IGNORE_UNEXPECTED_EOF) a bare FIN: both
      // end the client's data; we may still answer.
      case SSL_ERROR_ZERO_RETURN:
        return Step::Eof;
      case SSL_ERROR_SYSCALL:
        error_ = std::string("tls ") + what + ": " + (errno ? std::strerror(errno) : "eof");
        ERR_clear_error();
        return Step::Error;
      default:
        error_ = std::string("tls ") + what + ": " + openssl_errors();
        return Step::Error;
    }
  }

  SslPtr ssl_;
  int fd_;
  bool close_notify_sent_ = false;
};

// Blocking wrappers over one Stream and its Waiter.
class Channel {
 public:
  Channel(Stream& s, const Waiter& w) : s_(s), w_(w) {}

  // Reads some bytes. Returns Ok with n > 0, Eof, or Error (reason set).
  Step read_some(std::span<uint8_t> buf, size_t& n) {
    for (;;) {
      Step st = s_.read(buf, n);
      if (st == Step::Ok || st == Step::Eof) return st;
      if (st == Step::Error) return fail(s_.error());
      if (!w_.wait(st == Step::WantRead ? POLLIN : POLLOUT)) return Step::Error;
    }
  }

  bool write_all(std::span<const uint8_t> data) {
    while (!data.empty()) {
      size_t n = 0;
      Step st = s_.write(data, n);
      if (st == Step::Ok) {
        data = data.subspan(n);
        written_ += n;
        continue;
      }
      if (st == Step::Error || st == Step::Eof) {
        fail(st == Step::Eof ? "eof while writing" : s_.error());
        return false;
      }
      if (!w_.wait(st == Step::WantRead ? POLLIN : POLLOUT)) return false;
    }
    return true;
  }
  bool write_all(std::string_view text) {
    return write_all(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  }

  bool close_write() {
    for (;;) {
      Step st = s_.close_write();
      if (st == Step::Ok) return true;
      if (st == Step::Error || st == Step::Eof) {
        fail(s_.error());
        return false;
      }
      if (!w_.wait(st == Step::WantRead ? POLLIN : POLLOUT)) return false;
    }
  }

  uint64_t written() const { return written_; }
  void add_written(uint64_t n) { written_ += n; }
  Stream& stream() { return s_; }
  const Waiter& waiter() const { return w_; }

 private:
  Step fail(const std::string& why) {
    if (w_.error->empty()) *w_.error = why;
    return Step::Error;
  }
  Stream& s_;
  const Waiter& w_;
  uint64_t written_ = 0;
};

// --------------------------------------------------------------- PROXY

// How many bytes to read next so that we never read past the header: the
// application (or TLS) bytes after it must stay in the socket. A v2 header
// announces its length after 16 bytes; a v1 line is read byte by byte (at
// most 107 reads) because its end is only known when CRLF arrives.
size_t proxy_read_size(std::span<const uint8_t> got) {
  const auto& sig = proxy::kV2Signature;
  if (got.empty()) return 1;
  if (got[0] != sig[0]) return 1;  // v1 (or garbage the decoder rejects)
  if (got.size() < proxy::kV2HeaderSize) return proxy::kV2HeaderSize - got.size();
  size_t block =
      static_cast<size_t>(got[proxy::kV2OffsetLength]) << 8 | got[proxy::kV2OffsetLength + 1];
  size_t total = proxy::kV2HeaderSize + block;
  return total > got.size() ? total - got.size() : 1;
}

// Reads and decodes the PROXY header. Returns it, or nullopt with the
// reason in the waiter's error.
std::optional<proxy::Header> read_proxy_header(int fd, const Waiter& w, proxy::Accept accept) {
  std::vector<uint8_t> buf;
  buf.reserve(proxy::kV2MaxSize);
  for (size_t reads = 0; reads <= proxy::kV2MaxSize; ++reads) {
    proxy::DecodeResult r = proxy::decode(buf, accept);
    if (r.status == ParseStatus::Done) {
      if (r.consumed != buf.size()) {
        *w.error = "proxy: decoder stopped before the bytes read";  // cannot happen; never hide it
        return std::nullopt;
      }
      return r.header;
    }
    if (r.status == ParseStatus::Error) {
      *w.error =
          "proxy_" + std::string(proxy::to_string(r.error)) + "@" + std::to_string(r.error_offset);
      return std::nullopt;
    }
    size_t want = std::min(proxy_read_size(buf), proxy::kV2MaxSize - buf.size());
    if (want == 0) {
      *w.error = "proxy: header too long";
      return std::nullopt;
    }
    size_t old = buf.size();
    buf.resize(old + want);
    for (;;) {
      ssize_t n = ::recv(fd, buf.data() + old, want, 0);
      if (n > 0) {
        buf.resize(old + static_cast<size_t>(n));
        break;
      }
      if (n == 0) {
        *w.error = "proxy: eof after " + std::to_string(old) + " bytes";
        return std::nullopt;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        *w.error = std::string("proxy: recv: ") + std::strerror(errno);
        return std::nullopt;
      }
      if (!w.wait(POLLIN)) return std::nullopt;
    }
  }
  *w.error = "proxy: too many reads";
  return std::nullopt;
}

// --------------------------------------------------------------- commands

// SOURCE bytes: block k (k = 0, 1, ...) is the first kSourceBlock bytes of
// SHAKE128("edgepin-source:" SEED ":" k-in-decimal); the stream is the
// concatenation, cut at N. Python computes it with hashlib.shake_128.
bool source_block(std::string_view seed, uint64_t k, std::span<uint8_t, kSourceBlock> out) {
  std::unique_ptr<EVP_MD_CTX, CDeleter<EVP_MD_CTX_free>> ctx(EVP_MD_CTX_new());
  std::string input = std::string(kSourceDomain) + std::string(seed) + ":" + std::to_string(k);
  return ctx && EVP_DigestInit_ex2(ctx.get(), EVP_shake128(), nullptr) == 1 &&
         EVP_DigestUpdate(ctx.get(), input.data(), input.size()) == 1 &&
         EVP_DigestFinalXOF(ctx.get(), out.data(), out.size()) == 1;
}

bool valid_seed(std::string_view s) {
  return !s.empty() && s.size() <= kMaxSeedSize && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

// What the connection learned before its command, for WHO and the log.
struct ConnInfo {
  proxy::Address peer;
  std::optional<proxy::Header> proxy;
  bool tls = false;
  bool resumed = false;
  std::string version = "-";
  std::string sni;
  std::string command = "-";
  uint64_t bytes_in = 0;
};

std::string who_line(const std::string& name, const ConnInfo& c) {
  std::string src = "-";
  std::string dst = "-";
  std::string proxy_authority = "-";
  if (c.proxy) {
    if (c.proxy->command == proxy::Command::Proxy) {
      src = endpoint_string(c.proxy->source);
      dst = endpoint_string(c.proxy->destination);
    }
    if (c.proxy->tlvs.authority && !c.proxy->tlvs.authority->empty())
      proxy_authority = *c.proxy->tlvs.authority;
  }
  std::string authority = c.tls ? (c.sni.empty() ? "-" : c.sni) : proxy_authority;
  // The brief's fields first, in order; extra fields only at the end.
  return "name=" + name + " resumed=" + (c.resumed ? "1" : "0") + " proxy_src=" + src +
         " proxy_dst=" + dst + " authority=" + authority + " version=" + c.version +
         " proxy_authority=" + proxy_authority + " peer=" + endpoint_string(c.peer) + "\n";
}

// Reads until EOF, hashing. Returns false on error.
bool do_sink(Channel& ch, std::span<const uint8_t> already, ConnInfo& info, std::string& reply) {
  std::unique_ptr<EVP_MD_CTX, CDeleter<EVP_MD_CTX_free>> md(EVP_MD_CTX_new());
  if (!md || EVP_DigestInit_ex2(md.get(), EVP_sha256(), nullptr) != 1) return false;
  uint64_t total = already.size();
  if (!already.empty() && EVP_DigestUpdate(md.get(), already.data(), already.size()) != 1)
    return false;
  std::vector<uint8_t> buf(kIoChunk);
  for (;;) {
    size_t n = 0;
    Step st = ch.read_some(buf, n);
    if (st == Step::Eof) break;
    if (st != Step::Ok) return false;
    total += n;
    if (EVP_DigestUpdate(md.get(), buf.data(), n) != 1) return false;
  }
  info.bytes_in += total;
  std::array<uint8_t, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(md.get(), digest.data(), &len) != 1) return false;
  reply = "sha256=" + hex(std::span(digest.data(), len)) + " bytes=" + std::to_string(total) + "\n";
  return true;
}

bool do_source(Channel& ch, uint64_t count, std::string_view seed, std::string& error) {
  std::vector<uint8_t> block(kSourceBlock);
  for (uint64_t k = 0, sent = 0; sent < count; ++k) {
    if (!source_block(seed, k, std::span<uint8_t, kSourceBlock>(block.data(), kSourceBlock))) {
      error = "source: shake128 failed";
      return false;
    }
    size_t n = static_cast<size_t>(std::min<uint64_t>(kSourceBlock, count - sent));
    if (!ch.write_all(std::span<const uint8_t>(block.data(), n))) return false;
    sent += n;
  }
  return true;
}

// Full duplex: read while there is room, write what is buffered, until the
// client's EOF has been seen and everything has been sent back.
bool do_echo(Channel& ch, std::span<const uint8_t> already, ConnInfo& info) {
  std::vector<uint8_t> buf(kEchoBuffer);
  size_t head = 0;
  size_t tail = already.size();
  std::copy(already.begin(), already.end(), buf.begin());
  info.bytes_in += already.size();
  bool eof = false;
  Stream& s = ch.stream();
  for (;;) {
    if (eof && head == tail) return true;
    bool progress = false;
    short want = 0;
    if (head == tail) head = tail = 0;
    if (!eof && tail < buf.size()) {
      size_t n = 0;
      Step st = s.read(std::span(buf.data() + tail, buf.size() - tail), n);
      if (st == Step::Ok) {
        tail += n;
        info.bytes_in += n;
        progress = true;
      } else if (st == Step::Eof) {
        eof = true;
        progress = true;
      } else if (st == Step::WantRead) {
        want |= POLLIN;
      } else if (st == Step::WantWrite) {
        want |= POLLOUT;
      } else {
        *ch.waiter().error = s.error();
        return false;
      }
    }
    if (head < tail) {
      size_t n = 0;
      Step st = s.write(std::span<const uint8_t>(buf.data() + head, tail - head), n);
      if (st == Step::Ok) {
        head += n;
        ch.add_written(n);
        progress = true;
      } else if (st == Step::WantRead) {
        want |= POLLIN;
      } else if (st == Step::WantWrite) {
        want |= POLLOUT;
      } else {
        *ch.waiter().error = st == Step::Eof ? "eof while writing" : s.error();
        return false;
      }
    }
    // Room freed at the front is reused once the buffer is drained; until
    // then a full buffer stops reading (back-pressure).
    if (!progress && !ch.waiter().wait(want ? want : POLLIN)) return false;
  }
}

// ------------------------------------------------------------- connection

struct Shared {
  Options options;
  SSL_CTX* ctx = nullptr;  // owned by main
  int stop_fd = -1;
};

// After our close_write: read and drop what the client still sends, until
// its EOF, kLingerTime or kLingerBytes, so close() does not send a reset
// that could destroy our answer in flight.
void linger(int fd, int stop_fd) {
  auto deadline = SteadyClock::now() + kLingerTime;
  size_t drained = 0;
  std::array<uint8_t, 4096> buf;
  while (drained < kLingerBytes) {
    auto left = std::chrono::duration_cast<Ms>(deadline - SteadyClock::now());
    if (left.count() <= 0) return;
    pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    int rc = ::poll(fds, 2, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0 || fds[1].revents) return;
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n == 0) return;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return;
    }
    drained += static_cast<size_t>(n);
  }
}

void serve(const Shared& shared, int raw_fd, proxy::Address peer) {
  Fd fd(raw_fd);
  const Options& o = shared.options;
  const auto started = SteadyClock::now();
  std::string error;
  Waiter waiter{fd.get(), shared.stop_fd, o.idle_timeout, &error};
  ConnInfo info;
  info.peer = peer;
  uint64_t bytes_out = 0;

  auto finish = [&](bool ok) {
    auto ms = std::chrono::duration_cast<Ms>(SteadyClock::now() - started).count();
    std::string src = info.proxy && info.proxy->command == proxy::Command::Proxy
                          ? endpoint_string(info.proxy->source)
                          : "-";
    std::string line =
        "conn name=" + o.name + " peer=" + endpoint_string(peer) + " proxy_src=" + src +
        " tls=" + info.version + " resumed=" + (info.resumed ? "1" : "0") +
        " sni=" + (info.sni.empty() ? "-" : info.sni) + " cmd=" + info.command +
        " in=" + std::to_string(info.bytes_in) + " out=" + std::to_string(bytes_out) +
        " ms=" + std::to_string(ms) + " result=" +
        (ok              ? "ok"
         : error.empty() ? "error"
                         : error);
    if (ok)
      log::info(line);
    else
      log::warning(line);
  };

  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  if (o.proxy) {
    info.proxy = read_proxy_header(fd.get(), waiter, *o.proxy);
    if (!info.proxy) return finish(false);
  }

  std::unique_ptr<Stream> stream;
  if (o.mode == Mode::Tls) {
    SslPtr ssl(SSL_new(shared.ctx));
    if (!ssl || SSL_set_fd(ssl.get(), fd.get()) != 1) {
      error = "ssl_new: " + openssl_errors();
      return finish(false);
    }
    SSL_set_accept_state(ssl.get());
    auto tls = std::make_unique<TlsStream>(std::move(ssl), fd.get());
    for (;;) {
      Step st = tls->handshake();
      if (st == Step::Ok) break;
      if (st == Step::WantRead || st == Step::WantWrite) {
        if (!waiter.wait(st == Step::WantRead ? POLLIN : POLLOUT)) return finish(false);
        continue;
      }
      error = st == Step::Eof ? "tls handshake: eof" : tls->error();
      return finish(false);
    }
    info.tls = true;
    info.resumed = SSL_session_reused(tls->ssl()) == 1;
    info.version = SSL_get_version(tls->ssl());
    if (const char* sni = SSL_get_servername(tls->ssl(), TLSEXT_NAMETYPE_host_name)) info.sni = sni;
    stream = std::move(tls);
  } else {
    stream = std::make_unique<TcpStream>(fd.get());
  }
  Channel ch(*stream, waiter);

  // The command line; bytes after it belong to the command.
  std::vector<uint8_t> in;
  size_t newline = std::string::npos;
  while (newline == std::string::npos) {
    if (in.size() >= kMaxCommandLine) {
      error = "command line too long";
      return finish(false);
    }
    std::array<uint8_t, kMaxCommandLine> chunk;
    size_t n = 0;
    Step st = ch.read_some(std::span(chunk.data(), kMaxCommandLine - in.size()), n);
    if (st == Step::Eof) {
      error = "eof before a command";
      return finish(false);
    }
    if (st != Step::Ok) return finish(false);
    in.insert(in.end(), chunk.begin(), chunk.begin() + static_cast<ptrdiff_t>(n));
    auto it = std::find(in.begin(), in.end(), uint8_t{'\n'});
    if (it != in.end()) newline = static_cast<size_t>(it - in.begin());
  }
  std::string line(in.begin(), in.begin() + static_cast<ptrdiff_t>(newline));
  if (!line.empty() && line.back() == '\r') line.pop_back();
  std::span<const uint8_t> rest(in.data() + newline + 1, in.size() - newline - 1);
  info.bytes_in = newline + 1;

  std::vector<std::string_view> words;
  for (size_t pos = 0; pos < line.size();) {
    size_t end = line.find(' ', pos);
    if (end == std::string::npos) end = line.size();
    if (end > pos) words.emplace_back(line.data() + pos, end - pos);
    pos = end + 1;
  }
  info.command = words.empty() ? "-" : std::string(words[0]);

  bool ok = false;
  if (line.starts_with("WHO")) {
    info.command = "WHO";
    ok = ch.write_all(who_line(o.name, info));
  } else if (info.command == "SINK" && words.size() == 1) {
    std::string reply;
    ok = do_sink(ch, rest, info, reply) && ch.write_all(reply);
    if (!ok && error.empty()) error = "sink failed";
  } else if (info.command == "SOURCE" && words.size() == 3) {
    auto count = parse_number<uint64_t>(words[1]);
    if (!count || *count > kMaxSourceBytes || !valid_seed(words[2])) {
      ch.write_all("error bad SOURCE arguments\n");
      error = "bad SOURCE arguments";
    } else {
      ok = do_source(ch, *count, words[2], error);
    }
  } else if (info.command == "ECHO" && words.size() == 1) {
    ok = do_echo(ch, rest, info);
  } else {
    ch.write_all("error unknown command\n");
    error = "unknown command";
  }
  bytes_out = ch.written();
  if (ok)
    ok = ch.close_write();
  else if (error != "stopped" && error != "idle_timeout")
    ch.close_write();
  stream.reset();  // frees the SSL before the fd closes
  if (ok) linger(fd.get(), shared.stop_fd);
  finish(ok);
}

// ----------------------------------------------------------------- server

SslCtxPtr make_tls_context(const Options& o, std::string& error) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  auto fail = [&](const std::string& what) {
    error = what + ": " + openssl_errors();
    return nullptr;
  };
  if (!ctx) return fail("SSL_CTX_new");
  if (SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx.get(), o.tls_max) != 1)
    return fail("protocol versions");
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), o.cert_file.c_str()) != 1)
    return fail("--cert " + o.cert_file);
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), o.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    return fail("--key " + o.key_file);
  if (SSL_CTX_check_private_key(ctx.get()) != 1) return fail("key does not match the certificate");
  // A bare FIN from the client ends its data like a close_notify: test
  // clients half-close with shutdown(SHUT_WR) and still read our answer.
  SSL_CTX_set_options(ctx.get(), SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
  if (!o.tickets) SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  static constexpr unsigned char kSidContext[] = "edgepin-test-backend";
  if (SSL_CTX_set_session_id_context(ctx.get(), kSidContext, sizeof kSidContext - 1) != 1)
    return fail("session id context");
  SSL_CTX_set_session_cache_mode(ctx.get(), o.cache ? SSL_SESS_CACHE_SERVER : SSL_SESS_CACHE_OFF);
  // Without tickets and without a cache nothing can resume: send no TLS 1.3
  // (stateful) tickets at all.
  if (!o.tickets && !o.cache) SSL_CTX_set_num_tickets(ctx.get(), 0);
  if (o.tag != nodetag::kInvalidTag) {
    auto ring = tagging::TicketKeyRing::create(o.tag, {}, tagging::Clock::now());
    if (!ring) return fail("ticket key ring");
    auto rc = tagging::install_node_tagging(ctx.get(), o.tag, ring);
    if (rc != tagging::InstallError::None) {
      error = "install_node_tagging: " + std::string(tagging::to_string(rc));
      return nullptr;
    }
  }
  return ctx;
}

struct Connection {
  std::thread thread;
  std::atomic<bool> done{false};
};

int run(const Options& o) {
  log::set_program("edgepin-test-backend");
  ::signal(SIGPIPE, SIG_IGN);
  // SIGTERM and SIGINT are taken by signalfd in the accept loop; blocking
  // them before any thread starts keeps them out of every other thread.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &sigs, nullptr) != 0) return 1;
  Fd sig_fd(::signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK));
  if (sig_fd.get() < 0) {
    log::error(std::string("signalfd: ") + std::strerror(errno));
    return 1;
  }

  Shared shared;
  shared.options = o;
  SslCtxPtr ctx;
  if (o.mode == Mode::Tls) {
    std::string error;
    ctx = make_tls_context(o, error);
    if (!ctx) {
      log::error(error);
      return 1;
    }
    shared.ctx = ctx.get();
  }

  int stop_pipe[2];
  if (::pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    log::error(std::string("pipe2: ") + std::strerror(errno));
    return 1;
  }
  Fd stop_read(stop_pipe[0]);
  Fd stop_write(stop_pipe[1]);
  shared.stop_fd = stop_read.get();

  sockaddr_storage addr{};
  socklen_t addr_len = o.listen.to_sockaddr(addr);
  Fd listen_fd(::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int one = 1;
  if (listen_fd.get() < 0 ||
      ::setsockopt(listen_fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      ::bind(listen_fd.get(), reinterpret_cast<sockaddr*>(&addr), addr_len) != 0 ||
      ::listen(listen_fd.get(), 256) != 0) {
    log::error("listen " + endpoint_string(o.listen) + ": " + std::strerror(errno));
    return 1;
  }
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  ::getsockname(listen_fd.get(), reinterpret_cast<sockaddr*>(&bound), &bound_len);
  auto bound_addr = proxy::Address::from_sockaddr(reinterpret_cast<sockaddr*>(&bound), bound_len);
  std::printf("listening %u\n", bound_addr ? bound_addr->port : 0u);
  std::fflush(stdout);
  log::info("name=" + o.name + " listening on " +
            (bound_addr ? endpoint_string(*bound_addr) : "?") + " mode=" +
            (o.mode == Mode::Tls ? "tls" : "tcp") + (o.tag ? " tag=" + std::to_string(o.tag) : ""));

  std::list<std::unique_ptr<Connection>> conns;
  auto reap = [&](bool all) {
    for (auto it = conns.begin(); it != conns.end();) {
      if (all || (*it)->done.load()) {
        (*it)->thread.join();
        it = conns.erase(it);
      } else {
        ++it;
      }
    }
  };

  bool stopping = false;
  while (!stopping) {
    pollfd fds[2] = {{listen_fd.get(), POLLIN, 0}, {sig_fd.get(), POLLIN, 0}};
    int rc = ::poll(fds, 2, kReapIntervalMs);
    reap(false);
    if (rc < 0 && errno != EINTR) {
      log::error(std::string("poll: ") + std::strerror(errno));
      break;
    }
    if (rc <= 0) continue;
    if (fds[1].revents) {
      signalfd_siginfo si{};
      if (::read(sig_fd.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si))
        log::info("name=" + o.name + " signal " + std::to_string(si.ssi_signo) + ": stopping");
      stopping = true;
      break;
    }
    if (!(fds[0].revents & POLLIN)) continue;
    // Accept what is queued, a bounded batch per wake-up.
    for (int batch = 0; batch < 64; ++batch) {
      sockaddr_storage peer{};
      socklen_t peer_len = sizeof peer;
      int cfd = ::accept4(listen_fd.get(), reinterpret_cast<sockaddr*>(&peer), &peer_len,
                          SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (cfd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
          log::warning(std::string("accept: ") + std::strerror(errno));
        break;
      }
      auto peer_addr = proxy::Address::from_sockaddr(reinterpret_cast<sockaddr*>(&peer), peer_len);
      if (conns.size() >= o.max_connections) {
        log::warning("conn name=" + o.name + " peer=" +
                     (peer_addr ? endpoint_string(*peer_addr) : "-") + " result=refused_max_conns");
        ::close(cfd);
        continue;
      }
      auto conn = std::make_unique<Connection>();
      Connection* c = conn.get();
      try {
        c->thread = std::thread([&shared, cfd, p = peer_addr.value_or(proxy::Address{}), c] {
          serve(shared, cfd, p);
          c->done.store(true);
        });
      } catch (const std::system_error& e) {
        log::warning(std::string("thread: ") + e.what());
        ::close(cfd);
        continue;
      }
      conns.push_back(std::move(conn));
    }
  }

  // Every connection sees the stop pipe readable in its next wait.
  const char byte = 's';
  [[maybe_unused]] ssize_t w = ::write(stop_write.get(), &byte, 1);
  listen_fd.reset();
  reap(true);
  log::info("name=" + o.name + " stopped");
  return 0;
}

}  // namespace
}  // namespace edgepin::test::backend

int main(int argc, char** argv) {
  auto options = edgepin::test::backend::parse_options(argc, argv);
  if (!options) return 2;
  return edgepin::test::backend::run(*options);
}
