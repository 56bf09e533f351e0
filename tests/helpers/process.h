#pragma once
// Child processes for tests: openssl s_client, /usr/bin/python3, curl and
// the edgepin binaries. Every child is started with posix_spawn, waited for
// with a deadline, and stopped by its PID (never by name); a Process that
// goes out of scope kills and reaps its child.
#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace edgepin::test {

struct ProcessOptions {
  // argv[0] is a path, or a name looked up in PATH.
  std::vector<std::string> argv;
  // "NAME=VALUE" entries added to the inherited environment (a NAME already
  // there is replaced).
  std::vector<std::string> env;
  // Bytes written to the child's stdin (then closed) by Process::wait();
  // nullopt gives the child /dev/null. Only a foreground child (one that
  // wait() is called on) can be fed.
  std::optional<std::string> stdin_data;
  // Where stdout/stderr go: empty captures them into ProcessResult (a
  // background child must not fill the pipe before wait() drains it, so
  // give long-running children a file).
  std::filesystem::path stdout_file;
  std::filesystem::path stderr_file;
};

struct ProcessResult {
  bool exited = false;  // the child called exit (exit_code is valid)
  int exit_code = -1;
  int term_signal = 0;     // the signal that ended it, if it did not exit
  bool timed_out = false;  // wait() killed it at the deadline
  std::string out;         // captured stdout (empty when sent to a file)
  std::string err;         // captured stderr (empty when sent to a file)

  bool ok() const { return exited && exit_code == 0 && !timed_out; }
  // One line for a test failure message: status, then the output tails.
  std::string describe() const;
};

class Process {
 public:
  // Starts the child. Throws std::runtime_error if it cannot be spawned
  // (program not found, bad file path...).
  explicit Process(ProcessOptions options);
  // Kills (SIGKILL) and reaps a child that is still running.
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;

  pid_t pid() const { return pid_; }

  // Feeds stdin_data, collects captured output, and waits until the child
  // exits or `timeout` passes; at the deadline it kills the child with
  // SIGKILL, reaps it, and reports timed_out. After the child exits, output
  // still held open by its own children is read for at most half a second.
  ProcessResult wait(std::chrono::milliseconds timeout);

  // True until the child has exited (an exited child is reaped here and its
  // status kept for wait()).
  bool running();

  // Sends `sig` to the child by PID. Returns false if it was already reaped.
  bool kill(int sig = SIGTERM);

 private:
  void close_fds() noexcept;
  void reap_blocking() noexcept;
  void record_status(int status);

  pid_t pid_ = -1;
  bool reaped_ = false;
  ProcessResult result_;
  std::optional<std::string> stdin_data_;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  int stderr_fd_ = -1;
};

// Spawns a child and waits for it (see Process::wait).
ProcessResult run_process(ProcessOptions options, std::chrono::milliseconds timeout);

}  // namespace edgepin::test
