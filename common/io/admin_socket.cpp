#include "admin_socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace edgepin {

namespace {

constexpr int kBacklog = 16;
constexpr std::string_view kQuit = "quit";

struct UnixAddress {
  sockaddr_un sun{};
  socklen_t len = 0;
};

// nullopt-like: len 0 when the path does not fit sun_path (with its NUL).
UnixAddress unix_address(const std::string& path) {
  UnixAddress a;
  if (path.empty() || path.size() >= sizeof a.sun.sun_path) return a;
  a.sun.sun_family = AF_UNIX;
  std::memcpy(a.sun.sun_path, path.data(), path.size());
  a.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return a;
}

std::string errno_text(int e) { return std::strerror(e); }

enum class Probe { Absent, Stale, Live, NotSocket, Error };

// What is at `path`: nothing, a socket nobody accepts on (stale: the
// process that made it is gone), a live socket, or something else.
Probe probe(const std::string& path, std::string& error) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Probe::Absent;
    error = "stat: " + errno_text(errno);
    return Probe::Error;
  }
  if (!S_ISSOCK(st.st_mode)) return Probe::NotSocket;
  UnixAddress a = unix_address(path);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = "socket: " + errno_text(errno);
    return Probe::Error;
  }
  int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&a.sun), a.len);
  int e = errno;
  ::close(fd);
  // EAGAIN: a listener whose backlog is full is still very much alive.
  if (rc == 0 || e == EAGAIN || e == EINPROGRESS) return Probe::Live;
  if (e == ECONNREFUSED) return Probe::Stale;
  if (e == ENOENT) return Probe::Absent;
  error = "connect: " + errno_text(e);
  return Probe::Error;
}

}  // namespace

struct AdminSocket::Connection {
  AdminSocket* owner = nullptr;
  BufferEventPtr bev;
  bool closing = false;  // answers flushed, then closed
  bool paused = false;   // reading stopped: too much output waiting
  bool eof = false;      // the client sent EOF
};

AdminSocket::AdminSocket(Options options, Handler handler, std::string thread_name)
    : options_(std::move(options)),
      handler_(std::move(handler)),
      own_loop_(std::make_unique<EventLoopThread>(std::move(thread_name))),
      base_(own_loop_->base()) {}

AdminSocket::AdminSocket(event_base* base, Options options, Handler handler)
    : options_(std::move(options)), handler_(std::move(handler)), base_(base) {}

AdminSocket::~AdminSocket() { stop(); }

std::string AdminSocket::start() {
  const std::string path = options_.path.string();
  const std::string prefix = "admin socket " + path + ": ";
  UnixAddress final_addr = unix_address(path);
  if (final_addr.len == 0) return prefix + "path is empty or longer than 107 bytes";

  std::string error;
  switch (probe(path, error)) {
    case Probe::Absent:
      break;
    case Probe::Stale:
      if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return prefix + "cannot remove stale socket: " + errno_text(errno);
      break;
    case Probe::Live:
      return prefix + "another process is listening there";
    case Probe::NotSocket:
      return prefix + "exists and is not a socket; not replacing it";
    case Probe::Error:
      return prefix + error;
  }

  // Bind under a temporary name, set the mode, then rename into place: the
  // final path never exists with the umask's permissions. A path too long
  // for the temporary name is bound directly and chmod'ed right after.
  std::string bind_path = path + "." + std::to_string(::getpid()) + ".tmp";
  UnixAddress addr = unix_address(bind_path);
  if (addr.len == 0) {
    bind_path = path;
    addr = final_addr;
  } else {
    struct stat st {};
    if (::lstat(bind_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(bind_path.c_str());
  }

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return prefix + "socket: " + errno_text(errno);
  auto fail = [&](const char* what) {
    int e = errno;
    ::close(fd);
    ::unlink(bind_path.c_str());
    return prefix + what + ": " + errno_text(e);
  };
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr.sun), addr.len) != 0) {
    int e = errno;
    ::close(fd);
    return prefix + "bind: " + errno_text(e);
  }
  if (::chmod(bind_path.c_str(), options_.mode) != 0) return fail("chmod");
  if (::listen(fd, kBacklog) != 0) return fail("listen");
  if (bind_path != path && ::rename(bind_path.c_str(), path.c_str()) != 0) return fail("rename");
  bind_path = path;  // what fail() removes from here on
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return fail("stat");
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  bound_ = true;

  listener_.reset(evconnlistener_new(base_, accept_cb, this,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd));
  if (!listener_) {
    ::close(fd);
    stop();
    return prefix + "evconnlistener_new failed";
  }
  if (own_loop_) own_loop_->start();
  return {};
}

void AdminSocket::stop() {
  if (own_loop_) own_loop_->stop();  // joined: nothing below races the loop
  connections_.clear();
  listener_.reset();
  if (bound_) {
    bound_ = false;
    // A newer process may have replaced the file (a restart that found ours
    // stale); only remove the one we made.
    struct stat st {};
    if (::lstat(options_.path.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_)
      ::unlink(options_.path.c_str());
  }
}

void AdminSocket::accept_cb(evconnlistener*, evutil_socket_t fd, sockaddr*, int, void* arg) {
  static_cast<AdminSocket*>(arg)->on_accept(fd);
}

void AdminSocket::on_accept(evutil_socket_t fd) {
  if (connections_.size() >= options_.max_clients) {
    // Best effort: the socket is fresh, so this short write fits its buffer.
    static constexpr std::string_view kBusy = "error: too many admin connections\n\n";
    [[maybe_unused]] ssize_t n =
        ::send(fd, kBusy.data(), kBusy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::close(fd);
    return;
  }
  auto c = std::make_unique<Connection>();
  c->owner = this;
  c->bev.reset(bufferevent_socket_new(base_, fd, BEV_OPT_CLOSE_ON_FREE));
  if (!c->bev) {
    ::close(fd);
    return;
  }
  Connection* raw = c.get();
  connections_.emplace(raw, std::move(c));
  bufferevent_setcb(raw->bev.get(), read_cb, write_cb, event_cb, raw);
  // Input beyond one line plus its LF is never needed to make progress:
  // libevent stops reading there, so a client cannot make us buffer more.
  bufferevent_setwatermark(raw->bev.get(), EV_READ, 0, options_.max_line + 2);
  bufferevent_set_timeouts(raw->bev.get(), &options_.idle_timeout, &options_.idle_timeout);
  bufferevent_enable(raw->bev.get(), EV_READ | EV_WRITE);
}

void AdminSocket::read_cb(bufferevent*, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  c->owner->process(*c);
}

void AdminSocket::write_cb(bufferevent*, void* arg) {
  // Called when the output has drained.
  auto* c = static_cast<Connection*>(arg);
  AdminSocket* self = c->owner;
  if (c->closing) {
    self->close(*c);
    return;
  }
  if (!c->paused) return;
  c->paused = false;
  if (!self->process(*c) || c->paused || c->closing) return;
  if (c->eof) {
    self->close_after_flush(*c);
    return;
  }
  bufferevent_enable(c->bev.get(), EV_READ);
}

void AdminSocket::event_cb(bufferevent*, short what, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  AdminSocket* self = c->owner;
  if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)) {
    // The client is done sending (`echo cmd | socat`): answer what it sent,
    // the last line even without its LF, then close once flushed.
    c->eof = true;
    if (!self->process(*c) || c->paused || c->closing) return;
    self->close_after_flush(*c);
    return;
  }
  // Error, or idle timeout (reading or writing).
  self->close(*c);
}

bool AdminSocket::process(Connection& c) {
  evbuffer* in = bufferevent_get_input(c.bev.get());
  evbuffer* out = bufferevent_get_output(c.bev.get());
  while (!c.closing) {
    if (evbuffer_get_length(out) >= options_.max_pending_output) {
      // Resumed by write_cb once the client has read its answers.
      c.paused = true;
      bufferevent_disable(c.bev.get(), EV_READ);
      return true;
    }
    const size_t available = evbuffer_get_length(in);
    if (available == 0) break;
    evbuffer_ptr eol = evbuffer_search_eol(in, nullptr, nullptr, EVBUFFER_EOL_LF);
    size_t line_len = available;  // no LF: the whole input, if it may end here
    if (eol.pos >= 0) {
      line_len = static_cast<size_t>(eol.pos);
    } else if (!c.eof && available <= options_.max_line + 1) {
      break;  // wait for the rest of the line (+1: room for a CR)
    }
    std::string line(line_len, '\0');
    evbuffer_remove(in, line.data(), line_len);
    if (eol.pos >= 0) evbuffer_drain(in, 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > options_.max_line) {
      evbuffer_drain(in, evbuffer_get_length(in));
      answer(c, "error: command line longer than " + std::to_string(options_.max_line) + " bytes");
      return close_after_flush(c);
    }
    if (line == kQuit) {
      evbuffer_drain(in, evbuffer_get_length(in));
      return close_after_flush(c);
    }
    answer(c, line.empty() ? std::string() : handler_(line));
  }
  return true;
}

void AdminSocket::answer(Connection& c, std::string text) {
  while (!text.empty() && text.back() == '\n') text.pop_back();
  if (!text.empty()) text += '\n';
  text += '\n';
  bufferevent_write(c.bev.get(), text.data(), text.size());
}

bool AdminSocket::close_after_flush(Connection& c) {
  c.closing = true;
  bufferevent_disable(c.bev.get(), EV_READ);
  if (evbuffer_get_length(bufferevent_get_output(c.bev.get())) == 0) {
    close(c);
    return false;
  }
  return true;  // write_cb closes it once the output has drained
}

void AdminSocket::close(Connection& c) {
  // Erasing destroys `c` and its bufferevent; nothing may touch it after.
  connections_.erase(&c);
}

namespace admin {

std::vector<std::string_view> words_of(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

std::string quoted(std::string_view word) {
  constexpr size_t kMaxEcho = 64;
  std::string out = "'";
  for (char c : word.substr(0, kMaxEcho)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (word.size() > kMaxEcho) out += "...";
  return out + "'";
}

std::string error(std::string_view what) { return "error: " + std::string(what); }

}  // namespace admin

}  // namespace edgepin
