#include "tests/helpers/process.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <utility>

extern char** environ;

namespace edgepin::test {
namespace {

using Clock = std::chrono::steady_clock;

// Writing to a child that closed its stdin must be an EPIPE, not a signal
// that kills the test. Children get SIGPIPE back (POSIX_SPAWN_SETSIGDEF).
void ignore_sigpipe_once() {
  static std::once_flag once;
  std::call_once(once, [] { std::signal(SIGPIPE, SIG_IGN); });
}

std::string tail(const std::string& s, size_t n) {
  return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

// RAII for the spawn attribute objects, which must be destroyed on every path.
struct SpawnSetup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
};

struct Pipe {
  int read = -1;
  int write = -1;
  Pipe() {
    int fds[2];
    // CLOEXEC so that no child inherits the other ends; posix_spawn's dup2
    // clears it on the descriptor the child does get.
    if (pipe2(fds, O_CLOEXEC) != 0)
      throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
    read = fds[0];
    write = fds[1];
  }
  ~Pipe() {
    if (read >= 0) ::close(read);
    if (write >= 0) ::close(write);
  }
  int release_read() { return std::exchange(read, -1); }
  int release_write() { return std::exchange(write, -1); }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
};

std::vector<std::string> merged_environment(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  auto name_of = [](const std::string& kv) { return kv.substr(0, kv.find('=')); };
  for (char** e = environ; e && *e; ++e) {
    std::string kv(*e);
    bool replaced = false;
    for (const auto& x : extra) replaced = replaced || name_of(x) == name_of(kv);
    if (!replaced) env.push_back(std::move(kv));
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

std::string ProcessResult::describe() const {
  std::string s;
  if (timed_out)
    s = "timed out";
  else if (exited)
    s = "exit " + std::to_string(exit_code);
  else
    s = "signal " + std::to_string(term_signal);
  s += "; stdout: " + tail(out, 2000) + "; stderr: " + tail(err, 2000);
  return s;
}

Process::Process(ProcessOptions options) : stdin_data_(std::move(options.stdin_data)) {
  if (options.argv.empty()) throw std::runtime_error("Process: empty argv");
  ignore_sigpipe_once();

  SpawnSetup setup;
  std::optional<Pipe> in, out, err;
  if (stdin_data_) {
    in.emplace();
    posix_spawn_file_actions_adddup2(&setup.actions, in->read, STDIN_FILENO);
  } else {
    posix_spawn_file_actions_addopen(&setup.actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  }
  auto route = [&](std::optional<Pipe>& p, const std::filesystem::path& file, int fd) {
    if (file.empty()) {
      p.emplace();
      posix_spawn_file_actions_adddup2(&setup.actions, p->write, fd);
    } else {
      posix_spawn_file_actions_addopen(&setup.actions, fd, file.c_str(),
                                       O_WRONLY | O_CREAT | O_TRUNC, 0644);
    }
  };
  route(out, options.stdout_file, STDOUT_FILENO);
  route(err, options.stderr_file, STDERR_FILENO);

  // Test threads may block signals or ignore SIGPIPE; the child starts clean.
  sigset_t empty, defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigmask(&setup.attr, &empty);
  posix_spawnattr_setsigdefault(&setup.attr, &defaults);
  posix_spawnattr_setflags(&setup.attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<std::string> argv = options.argv;
  std::vector<std::string> env = merged_environment(options.env);
  std::vector<char*> argv_c = c_strings(argv);
  std::vector<char*> env_c = c_strings(env);
  int rc = posix_spawnp(&pid_, argv_c[0], &setup.actions, &setup.attr, argv_c.data(), env_c.data());
  if (rc != 0) {
    pid_ = -1;
    throw std::runtime_error("cannot start " + options.argv[0] + ": " + std::strerror(rc));
  }
  if (in) {
    stdin_fd_ = in->release_write();
    set_nonblocking(stdin_fd_);
  }
  if (out) stdout_fd_ = out->release_read();
  if (err) stderr_fd_ = err->release_read();
  // The child's ends close with the Pipe objects here.
}

Process::~Process() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    reap_blocking();
  }
  close_fds();
}

Process::Process(Process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      reaped_(other.reaped_),
      result_(std::move(other.result_)),
      stdin_data_(std::move(other.stdin_data_)),
      stdin_fd_(std::exchange(other.stdin_fd_, -1)),
      stdout_fd_(std::exchange(other.stdout_fd_, -1)),
      stderr_fd_(std::exchange(other.stderr_fd_, -1)) {}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      reap_blocking();
    }
    close_fds();
    pid_ = std::exchange(other.pid_, -1);
    reaped_ = other.reaped_;
    result_ = std::move(other.result_);
    stdin_data_ = std::move(other.stdin_data_);
    stdin_fd_ = std::exchange(other.stdin_fd_, -1);
    stdout_fd_ = std::exchange(other.stdout_fd_, -1);
    stderr_fd_ = std::exchange(other.stderr_fd_, -1);
  }
  return *this;
}

void Process::close_fds() noexcept {
  for (int* fd : {&stdin_fd_, &stdout_fd_, &stderr_fd_}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
}

void Process::record_status(int status) {
  reaped_ = true;
  if (WIFEXITED(status)) {
    result_.exited = true;
    result_.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result_.term_signal = WTERMSIG(status);
  }
}

void Process::reap_blocking() noexcept {
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  record_status(status);
}

bool Process::running() {
  if (pid_ <= 0 || reaped_) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    record_status(status);
    return false;
  }
  return true;
}

bool Process::kill(int sig) {
  if (pid_ <= 0 || reaped_) return false;
  return ::kill(pid_, sig) == 0;
}

ProcessResult Process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::optional<Clock::time_point> output_deadline;  // set once the child exited
  size_t written = 0;
  if (stdin_fd_ >= 0 && (!stdin_data_ || stdin_data_->empty())) {
    ::close(stdin_fd_);
    stdin_fd_ = -1;
  }
  for (;;) {
    if (!running() && !output_deadline)
      output_deadline = Clock::now() + std::chrono::milliseconds(500);
    bool pipes_open = stdout_fd_ >= 0 || stderr_fd_ >= 0;
    auto now = Clock::now();
    if (reaped_ && (!pipes_open || now >= *output_deadline)) break;
    if (now >= deadline) {
      ::kill(pid_, SIGKILL);
      if (!reaped_) reap_blocking();
      result_.timed_out = true;
      break;
    }
    pollfd fds[3];
    nfds_t n = 0;
    if (stdin_fd_ >= 0) fds[n++] = {stdin_fd_, POLLOUT, 0};
    if (stdout_fd_ >= 0) fds[n++] = {stdout_fd_, POLLIN, 0};
    if (stderr_fd_ >= 0) fds[n++] = {stderr_fd_, POLLIN, 0};
    // Short slices: the child's exit is noticed by waitpid, not by poll.
    int rc = n ? ::poll(fds, n, 20) : (::usleep(20000), 0);
    if (rc <= 0) continue;
    for (nfds_t k = 0; k < n; ++k) {
      if (!fds[k].revents) continue;
      int fd = fds[k].fd;
      if (fd == stdin_fd_) {
        ssize_t w = ::write(fd, stdin_data_->data() + written, stdin_data_->size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == stdin_data_->size()) {
          ::close(stdin_fd_);
          stdin_fd_ = -1;
        }
        continue;
      }
      char buf[16384];
      ssize_t r = ::read(fd, buf, sizeof buf);
      if (r > 0) {
        (fd == stdout_fd_ ? result_.out : result_.err).append(buf, static_cast<size_t>(r));
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        ::close(fd);
        (fd == stdout_fd_ ? stdout_fd_ : stderr_fd_) = -1;
      }
    }
  }
  close_fds();
  return result_;
}

ProcessResult run_process(ProcessOptions options, std::chrono::milliseconds timeout) {
  Process p(std::move(options));
  return p.wait(timeout);
}

}  // namespace edgepin::test
