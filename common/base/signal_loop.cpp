#include "signal_loop.h"

#include <pthread.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "log.h"

namespace edgepin {
namespace {
// How often the drain looks whether the last connections have ended.
constexpr std::chrono::milliseconds kDrainPoll{50};

timespec to_timespec(std::chrono::milliseconds ms) {
  return timespec{static_cast<time_t>(ms.count() / 1000),
                  static_cast<long>((ms.count() % 1000) * 1000000)};
}
}  // namespace

const char* signal_name(int sig) {
  switch (sig) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
  }
  return "signal";
}

SignalLoop::SignalLoop() {
  sigemptyset(&set_);
  sigaddset(&set_, SIGTERM);
  sigaddset(&set_, SIGINT);
  sigaddset(&set_, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

int SignalLoop::run(const Handlers& handlers) {
  for (;;) {
    const timespec tick = to_timespec(std::chrono::seconds(1));
    const int sig = sigtimedwait(&set_, nullptr, &tick);
    if (sig < 0) {
      if (errno != EAGAIN && errno != EINTR) {
        // Cannot happen with a valid set; stopping beats spinning.
        log::error(std::string("sigtimedwait failed: ") + std::strerror(errno) + "; stopping");
        return SIGTERM;
      }
    } else if (sig == SIGHUP) {
      if (handlers.reload) handlers.reload();
    } else {
      return sig;
    }
    if (handlers.tick) handlers.tick();
  }
}

SignalLoop::DrainEnd SignalLoop::drain(std::chrono::milliseconds grace,
                                       const std::function<size_t()>& remaining) {
  const auto deadline = std::chrono::steady_clock::now() + grace;
  for (;;) {
    if (remaining() == 0) return DrainEnd::Drained;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return DrainEnd::GraceOver;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    const timespec wait = to_timespec(std::min(left, kDrainPoll));
    const int sig = sigtimedwait(&set_, nullptr, &wait);
    if (sig == SIGHUP) {
      log::warning("SIGHUP during shutdown: ignored");
    } else if (sig > 0) {
      log::info(std::string("second ") + signal_name(sig) + ": not waiting for the grace period");
      return DrainEnd::Interrupted;
    }
  }
}

}  // namespace edgepin
