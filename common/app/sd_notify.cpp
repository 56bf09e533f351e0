#include "sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "log.h"

namespace edgepin::sd {

namespace {

// Parses a positive decimal number; 0 for anything else.
uint64_t parse_positive(const char* s) {
  if (s == nullptr || *s == '\0') return 0;
  uint64_t v = 0;
  const char* end = s + std::strlen(s);
  auto [p, ec] = std::from_chars(s, end, v);
  if (ec != std::errc() || p != end) return 0;
  return v;
}

}  // namespace

Notifier Notifier::from_environment() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  std::chrono::microseconds watchdog{0};
  const uint64_t usec = parse_positive(std::getenv("WATCHDOG_USEC"));
  const char* pid_text = std::getenv("WATCHDOG_PID");
  const bool for_us =
      pid_text == nullptr || parse_positive(pid_text) == static_cast<uint64_t>(getpid());
  if (usec > 0 && for_us) watchdog = std::chrono::microseconds(usec);
  return Notifier(socket ? socket : "", watchdog);
}

Notifier::Notifier(std::string socket_path, std::chrono::microseconds watchdog)
    : socket_path_(std::move(socket_path)), watchdog_(watchdog) {
  // A path must be absolute, an abstract name starts with '@' (sd_notify(3));
  // anything else is not a systemd socket.
  if (!socket_path_.empty() && socket_path_[0] != '/' && socket_path_[0] != '@') {
    log::warning("NOTIFY_SOCKET=" + socket_path_ +
                 " is neither a path nor an abstract name: not notifying");
    socket_path_.clear();
  }
  if (socket_path_.size() >= sizeof(sockaddr_un::sun_path)) {
    log::warning("NOTIFY_SOCKET is too long for a unix socket address: not notifying");
    socket_path_.clear();
  }
  if (socket_path_.empty()) watchdog_ = std::chrono::microseconds(0);
}

Notifier::~Notifier() { close_socket(); }

Notifier::Notifier(Notifier&& other) noexcept
    : socket_path_(std::move(other.socket_path_)),
      watchdog_(other.watchdog_),
      fd_(std::exchange(other.fd_, -1)),
      reported_failure_(other.reported_failure_) {
  other.socket_path_.clear();
}

Notifier& Notifier::operator=(Notifier&& other) noexcept {
  if (this != &other) {
    close_socket();
    socket_path_ = std::move(other.socket_path_);
    other.socket_path_.clear();
    watchdog_ = other.watchdog_;
    fd_ = std::exchange(other.fd_, -1);
    reported_failure_ = other.reported_failure_;
  }
  return *this;
}

void Notifier::close_socket() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool Notifier::send(std::string_view message) {
  if (socket_path_.empty()) return false;
  if (fd_ < 0) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
      if (!reported_failure_)
        log::warning(std::string("sd_notify: socket: ") + std::strerror(errno));
      reported_failure_ = true;
      return false;
    }
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path_.data(), socket_path_.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path_.size());
  if (socket_path_[0] == '@') {
    addr.sun_path[0] = '\0';  // abstract namespace: no terminator, length is exact
  } else {
    len += 1;  // the path's terminating NUL
  }
  const ssize_t n = ::sendto(fd_, message.data(), message.size(), MSG_NOSIGNAL,
                             reinterpret_cast<sockaddr*>(&addr), len);
  if (n != static_cast<ssize_t>(message.size())) {
    // systemd gone or restarting: keep running, say so once.
    if (!reported_failure_)
      log::warning("sd_notify to " + socket_path_ + " failed: " + std::strerror(errno) +
                   " (reported once)");
    reported_failure_ = true;
    return false;
  }
  return true;
}

bool Notifier::reloading(std::string_view status) {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const uint64_t usec =
      static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
  return send(with_status("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec), status));
}

std::string Notifier::with_status(std::string_view head, std::string_view status) {
  std::string out(head);
  if (status.empty()) return out;
  if (!out.empty()) out += '\n';
  out += "STATUS=";
  for (char c : status) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
  return out;
}

}  // namespace edgepin::sd
