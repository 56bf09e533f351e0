#include "pipe_pool.h"

#include <fcntl.h>
#include <unistd.h>

namespace edgepin {

Pipe::~Pipe() {
  ::close(rd);
  ::close(wr);
}

PipePool::PipePool(size_t max_in_use, size_t max_idle, size_t pipe_bytes)
    : max_in_use_(max_in_use), max_idle_(max_idle), pipe_bytes_(pipe_bytes) {}

std::unique_ptr<Pipe> PipePool::get() {
  if (in_use_ >= max_in_use_) {
    ++refusals_;
    return nullptr;
  }
  std::unique_ptr<Pipe> p;
  if (!idle_.empty()) {
    p = std::move(idle_.back());
    idle_.pop_back();
  } else {
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
      ++refusals_;  // out of descriptors or of pipe buffers: copy instead
      return nullptr;
    }
    if (pipe_bytes_) ::fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(pipe_bytes_));
    const int size = ::fcntl(fds[1], F_GETPIPE_SZ);
    p = std::make_unique<Pipe>(fds[0], fds[1], size > 0 ? static_cast<size_t>(size) : 65536);
  }
  ++in_use_;
  return p;
}

void PipePool::put(std::unique_ptr<Pipe> p) {
  if (!p) return;
  --in_use_;
  if (p->bytes == 0 && idle_.size() < max_idle_) idle_.push_back(std::move(p));
  // else: destroyed here, closing both ends.
}

}  // namespace edgepin
