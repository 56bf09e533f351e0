// The admin socket over a real Unix socket: line framing, answers ending
// with an empty line, several commands per connection, quit, the line-length
// bound, the idle timeout, the connection limit, back-pressure, the socket
// file's mode, stale and live sockets at the path, and removal on stop.
#include "admin_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include "tests/helpers/temp_dir.h"

using namespace edgepin;
using namespace std::chrono_literals;

namespace {

// Echoes the command, over two lines, so multi-line answers are covered.
std::string echo_handler(std::string_view line) {
  return "you said\n[" + std::string(line) + "]\n";
}

class Client {
 public:
  explicit Client(const std::filesystem::path& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    timeval tv{5, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0;
  }
  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return connected_; }
  void send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      REQUIRE(n > 0);
      data.remove_prefix(static_cast<size_t>(n));
    }
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }
  // One answer: everything up to and including the empty line that ends it.
  // Empty string if the server closed first (or 5 s passed).
  std::string answer() {
    for (;;) {
      // An empty answer is the blank line alone; any other ends at "\n\n".
      size_t len = 0;
      if (!buffered_.empty() && buffered_[0] == '\n') {
        len = 1;
      } else if (size_t end = buffered_.find("\n\n"); end != std::string::npos) {
        len = end + 2;
      }
      if (len) {
        std::string out = buffered_.substr(0, len);
        buffered_.erase(0, len);
        return out;
      }
      if (!read_more()) return {};
    }
  }
  // True once the server has closed (reads to EOF; false on timeout).
  bool closed_by_server() {
    while (read_more()) {
    }
    return eof_;
  }
  const std::string& leftover() const { return buffered_; }

 private:
  bool read_more() {
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
      eof_ = n == 0 || errno == ECONNRESET;
      return false;
    }
    buffered_.append(buf, static_cast<size_t>(n));
    return true;
  }
  int fd_ = -1;
  bool connected_ = false;
  bool eof_ = false;
  std::string buffered_;
};

AdminSocket::Options options_for(const std::filesystem::path& path) {
  AdminSocket::Options o;
  o.path = path;
  o.mode = 0600;
  return o;
}

}  // namespace

TEST_CASE("admin socket: answers each command, ending with an empty line") {
  test::TempDir dir;
  const auto path = dir / "admin.sock";
  AdminSocket server(options_for(path), echo_handler);
  REQUIRE(server.start().empty());

  Client c(path);
  REQUIRE(c.connected());
  c.send("show info\n");
  CHECK(c.answer() == "you said\n[show info]\n\n");
  // Several commands on one connection, two of them in one write, one
  // with CRLF: answered in order.
  c.send("one\r\ntwo\n");
  CHECK(c.answer() == "you said\n[one]\n\n");
  CHECK(c.answer() == "you said\n[two]\n\n");
  // A command split over writes.
  c.send("thr");
  std::this_thread::sleep_for(50ms);
  c.send("ee\n");
  CHECK(c.answer() == "you said\n[three]\n\n");
  // An empty line gets an empty answer (just the blank line).
  c.send("\n");
  CHECK(c.answer() == "\n");
  c.send("quit\n");
  CHECK(c.closed_by_server());
  CHECK(c.leftover().empty());
}

TEST_CASE("admin socket: a handler's trailing newlines are normalised") {
  test::TempDir dir;
  const auto path = dir / "admin.sock";
  AdminSocket server(options_for(path), [](std::string_view line) -> std::string {
    if (line == "none") return "";
    if (line == "bare") return "no newline";
    return "many\n\n\n";
  });
  REQUIRE(server.start().empty());
  Client c(path);
  c.send("none\nbare\nmany\n");
  CHECK(c.answer() == "\n");
  CHECK(c.answer() == "no newline\n\n");
  CHECK(c.answer() == "many\n\n");
}

TEST_CASE("admin socket: commands sent then EOF are answered, then it closes") {
  test::TempDir dir;
  const auto path = dir / "admin.sock";
  AdminSocket server(options_for(path), echo_handler);
  REQUIRE(server.start().empty());
  Client c(path);
  // The last line has no LF: `printf 'a\nb' | socat` still gets both answers.
  c.send("a\nb");
  c.shutdown_write();
  CHECK(c.answer() == "you said\n[a]\n\n");
  CHECK(c.answer() == "you said\n[b]\n\n");
  CHECK(c.closed_by_server());
}

TEST_CASE("admin socket: quit answers nothing and ignores what follows") {
  test::TempDir dir;
  const auto path = dir / "admin.sock";
  std::atomic<int> calls{0};
  AdminSocket server(options_for(path), [&](std::string_view) {
    ++calls;
    return std::string("ok");
  });
  REQUIRE(server.start().empty());
  Client c(path);
  c.send("first\nquit\nsecond\n");
  CHECK(c.answer() == "ok\n\n");
  CHECK(c.closed_by_server());
  CHECK(c.leftover().empty());
  CHECK(calls == 1);
}

TEST_CASE("admin socket: a line over the limit is an error and closes") {
  test::TempDir dir;
  const auto path = dir / "admin.sock";
  auto o = options_for(path);
  o.max_line = 64;
  std::atomic<int> calls{0};
  AdminSocket server(o, [&](std::string_view line) {
    ++calls;
    return "len " + std::to_string(line.size());
  });
  REQUIRE(server.start().empty());

  SECTION("exactly the limit is fine, also with CRLF") {
    Client c(path);
    c.send(std::string(64, 'x') + "\n" + std::string(64, 'y') + "\r\n");
    CHECK(c.answer() == "len 64\n\n");
    CHECK(c.answer() == "len 64\n\n");
  }
  SECTION("one byte more, with its LF") {
    Client c(path);
    c.send(std::string(65, 'x') + "\nnext\n");
    CHECK(c.answer() == "error: command line longer than 64 bytes\n\n");
    CHECK(c.closed_by_server());
    CHECK(calls == 0);
  }
  SECTION("a line that never ends") {
    Client c(path);
    // Far more than the limit without a LF: refused once the limit is passed,
    // not buffered to the end.
    c.send(std::string(4096, 'z'));
    CHECK(c.answer() == "error: command line longer than 64 bytes\n\n");
    CHECK(c.closed_by_server());
    CHECK(calls == 0);
  }
}

TEST_CASE("admin socket: an idle connection is closed") {
  test::TempDir dir;
  const auto path = dir / "admin.sock";
  auto o = options_for(path);
  o.idle_timeout = {0, 200 * 1000};
  AdminSocket server(o, echo_handler);
  REQUIRE(server.start().empty());
  Client c(path);
  c.send("x\n");
  CHECK(c.answer() == "you said\n[x]\n\n");
  auto t0 = std::chrono::steady_clock::now();
  CHECK(c.closed_by_server());
  auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited >= 150ms);
  CHECK(waited < 4s);
}

TEST_CASE("admin socket: connections beyond the limit are refused") {
  test::TempDir dir;
  const auto path = dir / "admin.sock";
  auto o = options_for(path);
  o.max_clients = 2;
  AdminSocket server(o, echo_handler);
  REQUIRE(server.start().empty());
  Client a(path), b(path);
  a.send("a\n");
  b.send("b\n");
  REQUIRE(a.answer() == "you said\n[a]\n\n");
  REQUIRE(b.answer() == "you said\n[b]\n\n");
  Client c(path);
  CHECK(c.answer() == "error: too many admin connections\n\n");
  CHECK(c.closed_by_server());
  // A slot freed is a slot usable again.
  a.send("quit\n");
  REQUIRE(a.closed_by_server());
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    Client d(path);
    d.send("d\n");
    served = d.answer() == "you said\n[d]\n\n";
    if (!served) std::this_thread::sleep_for(20ms);
  }
  CHECK(served);
}

TEST_CASE("admin socket: a client that does not read stops being read") {
  test::TempDir dir;
  const auto path = dir / "admin.sock";
  auto o = options_for(path);
  o.max_pending_output = 64 * 1024;
  std::atomic<int> calls{0};
  const std::string big(16 * 1024, 'a');
  AdminSocket server(o, [&](std::string_view) {
    ++calls;
    return big;
  });
  REQUIRE(server.start().empty());
  Client c(path);
  // 2000 commands would produce ~32 MB of answers; without reading, only
  // what fits the socket buffers plus the pending-output bound is produced.
  std::string many;
  for (int i = 0; i < 2000; ++i) many += "x\n";
  c.send(many);
  std::this_thread::sleep_for(300ms);
  int produced = calls.load();
  CHECK(produced < 2000);
  // Reading everything lets the rest through, in order and complete.
  int answers = 0;
  for (; answers < 2000; ++answers) {
    std::string a = c.answer();
    if (a != big + "\n\n") break;
  }
  CHECK(answers == 2000);
  CHECK(calls == 2000);
}

TEST_CASE("admin socket: mode, stale and live sockets, removal on stop") {
  test::TempDir dir;
  const auto path = dir / "admin.sock";

  SECTION("the mode from the config is applied") {
    for (mode_t mode : {mode_t{0600}, mode_t{0660}, mode_t{0640}}) {
      auto o = options_for(path);
      o.mode = mode;
      AdminSocket server(o, echo_handler);
      REQUIRE(server.start().empty());
      struct stat st {};
      REQUIRE(::lstat(path.c_str(), &st) == 0);
      CHECK(S_ISSOCK(st.st_mode));
      CHECK((st.st_mode & 07777) == mode);
      server.stop();
      CHECK_FALSE(std::filesystem::exists(path));
    }
    // No temporary file is left beside it.
    CHECK(std::filesystem::is_empty(dir.path()));
  }

  SECTION("a stale socket file is replaced") {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0);
    ::close(fd);  // the file stays: what a crashed process leaves
    REQUIRE(std::filesystem::exists(path));
    AdminSocket server(options_for(path), echo_handler);
    REQUIRE(server.start() == "");
    Client c(path);
    c.send("hello\n");
    CHECK(c.answer() == "you said\n[hello]\n\n");
  }

  SECTION("a live socket is not stolen") {
    AdminSocket first(options_for(path), echo_handler);
    REQUIRE(first.start().empty());
    AdminSocket second(options_for(path), echo_handler);
    std::string err = second.start();
    CHECK(err == "admin socket " + path.string() + ": another process is listening there");
    second.stop();
    // The first one still owns the path and still answers.
    Client c(path);
    c.send("still\n");
    CHECK(c.answer() == "you said\n[still]\n\n");
  }

  SECTION("something that is not a socket is left alone") {
    { std::ofstream(path) << "precious"; }
    AdminSocket server(options_for(path), echo_handler);
    CHECK(server.start() ==
          "admin socket " + path.string() + ": exists and is not a socket; not replacing it");
    std::ifstream in(path);
    std::string content;
    in >> content;
    CHECK(content == "precious");
  }

  SECTION("a missing directory is an error naming the step") {
    AdminSocket server(options_for(dir / "no-such-dir" / "admin.sock"), echo_handler);
    std::string err = server.start();
    CHECK(err.find("bind: No such file or directory") != std::string::npos);
  }

  SECTION("stop does not remove a socket another process put there") {
    AdminSocket server(options_for(path), echo_handler);
    REQUIRE(server.start().empty());
    // Someone replaced the file (a new instance after deciding ours was
    // stale): it is theirs now.
    REQUIRE(::unlink(path.c_str()) == 0);
    AdminSocket other(options_for(path), echo_handler);
    REQUIRE(other.start().empty());
    server.stop();
    CHECK(std::filesystem::exists(path));
    Client c(path);
    c.send("who\n");
    CHECK(c.answer() == "you said\n[who]\n\n");
  }
}

TEST_CASE("admin socket: serving on the caller's event loop") {
  test::TempDir dir;
  const auto path = dir / "admin.sock";
  EventLoopThread loop("test-admin");
  std::thread::id handler_thread;
  AdminSocket server(loop.base(), options_for(path), [&](std::string_view line) {
    handler_thread = std::this_thread::get_id();
    return std::string(line);
  });
  REQUIRE(server.start().empty());
  loop.start();
  {
    Client c(path);
    c.send("ping\n");
    CHECK(c.answer() == "ping\n\n");
  }
  std::promise<std::thread::id> loop_thread;
  loop.post([&] { loop_thread.set_value(std::this_thread::get_id()); });
  CHECK(handler_thread == loop_thread.get_future().get());
  // stop() on the loop's own thread, as the contract says.
  std::promise<void> stopped;
  loop.post([&] {
    server.stop();
    stopped.set_value();
  });
  stopped.get_future().wait();
  CHECK_FALSE(std::filesystem::exists(path));
  loop.stop();
}
