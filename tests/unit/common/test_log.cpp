// common/base/log.* and common/config/log_setup.*: the line formats (text and JSON
// lines), JSON escaping, syslog priorities and facilities, and the syslog
// target end to end: a child process whose /dev/log is a datagram socket
// this test reads, in a private mount namespace (needs root).
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "config_common.h"
#include "log.h"
#include "log_setup.h"

namespace elog = edgepin::log;
namespace config = edgepin::config;

TEST_CASE("text lines: time, program, level, message") {
  CHECK(elog::format_line(elog::Format::Text, "2026-01-02T03:04:05.006Z", "edgepin-lb",
                          elog::Level::Warning, "server node1 is DOWN") ==
        "2026-01-02T03:04:05.006Z edgepin-lb warning: server node1 is DOWN");
  // syslog stamps time and ident itself.
  CHECK(elog::format_line(elog::Format::Text, "T", "P", elog::Level::Info, "hello", true) ==
        "info: hello");
}

TEST_CASE("JSON lines parse and carry the same fields") {
  const std::string msg =
      "conn client=127.0.0.1:5000 frontend=fe \"quoted\" back\\slash\ttab\nnewline \x01\x7f";
  for (auto level :
       {elog::Level::Debug, elog::Level::Info, elog::Level::Warning, elog::Level::Error}) {
    const std::string line = elog::format_line(elog::Format::Json, "2026-01-02T03:04:05.006Z",
                                               "edgepin-node-proxy", level, msg);
    INFO(line);
    CHECK(line.find('\n') == std::string::npos);  // one line per event
    auto j = nlohmann::json::parse(line);
    CHECK(j.size() == 4);
    CHECK(j["time"] == "2026-01-02T03:04:05.006Z");
    CHECK(j["program"] == "edgepin-node-proxy");
    CHECK(j["level"] == elog::to_string(level));
    CHECK(j["msg"] == msg);
  }
  const std::string syslog_line =
      elog::format_line(elog::Format::Json, "T", "P", elog::Level::Error, "x", true);
  auto j = nlohmann::json::parse(syslog_line);
  CHECK(j == nlohmann::json{{"level", "error"}, {"msg", "x"}});
}

TEST_CASE("json_escape leaves no raw control character") {
  std::string all;
  for (int c = 0; c < 0x80; ++c) all += static_cast<char>(c);
  const std::string e = elog::json_escape(all);
  for (char c : e) CHECK((static_cast<unsigned char>(c) >= 0x20 && c != 0x7f));
  CHECK(nlohmann::json::parse("\"" + e + "\"").get<std::string>() == all);
}

TEST_CASE("levels map to syslog priorities, facilities to LOG_ values") {
  CHECK(elog::syslog_priority(elog::Level::Debug) == LOG_DEBUG);
  CHECK(elog::syslog_priority(elog::Level::Info) == LOG_INFO);
  CHECK(elog::syslog_priority(elog::Level::Warning) == LOG_WARNING);
  CHECK(elog::syslog_priority(elog::Level::Error) == LOG_ERR);
  CHECK(elog::syslog_facility(config::SyslogFacility::Daemon) == LOG_DAEMON);
  CHECK(elog::syslog_facility(config::SyslogFacility::User) == LOG_USER);
  CHECK(elog::syslog_facility(config::SyslogFacility::Local0) == LOG_LOCAL0);
  CHECK(elog::syslog_facility(config::SyslogFacility::Local7) == LOG_LOCAL7);
}

namespace {

// Reads one datagram with a deadline; empty on timeout.
std::string recv_datagram(int fd, int timeout_ms) {
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[4096];
  ssize_t n = recv(fd, buf, sizeof buf, 0);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

}  // namespace

TEST_CASE("syslog target: ident, pid, facility, priority and the JSON body reach /dev/log") {
  // The child makes a private mount namespace with its own /dev, binds a
  // socket of ours over /dev/log there, and logs.
  char dir_template[] = "/tmp/edgepin-syslog-XXXXXX";
  REQUIRE(mkdtemp(dir_template) != nullptr);
  const std::string dir = dir_template;
  const std::string sock_path = dir + "/log";
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path.c_str());
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);

  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Child: a failing step exits with its own code, read below.
    if (unshare(CLONE_NEWNS) != 0) _exit(10);
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(11);
    // A tmpfs /dev seen by this process only: the host's /dev is never
    // written to. syslog(3) needs nothing else from /dev.
    if (mount("tmpfs", "/dev", "tmpfs", 0, "size=64k") != 0) _exit(12);
    int f = open("/dev/log", O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (f < 0) _exit(12);
    close(f);
    if (mount(sock_path.c_str(), "/dev/log", nullptr, MS_BIND, nullptr) != 0) _exit(13);
    elog::set_program("edgepin-test");
    config::LogConfig c;
    c.target = config::LogTarget::Syslog;
    c.format = elog::Format::Json;
    c.facility = config::SyslogFacility::Local3;
    elog::apply(c);
    elog::warning("reload ok: server node4 added");
    elog::debug("not at level info");
    _exit(0);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  const int code = WEXITSTATUS(status);
  std::string got = recv_datagram(fd, 2000);
  close(fd);
  unlink(sock_path.c_str());
  rmdir(dir.c_str());
  // 10-13: the namespace or a mount failed (this test needs root, as the
  // network-namespace tests do in CI).
  INFO("child exit code " << code);
  REQUIRE(code == 0);
  INFO(got);
  // <PRI>TIMESTAMP IDENT[PID]: BODY, PRI = facility * 8 + severity.
  const std::string pri = "<" + std::to_string(LOG_LOCAL3 | LOG_WARNING) + ">";
  REQUIRE(got.rfind(pri, 0) == 0);
  CHECK(got.find("edgepin-test[" + std::to_string(child) + "]: ") != std::string::npos);
  const auto body = got.substr(got.find("]: ") + 3);
  auto j = nlohmann::json::parse(body);
  CHECK(j["level"] == "warning");
  CHECK(j["msg"] == "reload ok: server node4 added");
}
