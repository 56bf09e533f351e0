#pragma once
// Pieces that lb.json and node-proxy.json share: logging, the admin socket,
// worker threads, PROXY protocol versions and references to a node's ports.
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config_cluster.h"
#include "config_reader.h"
#include "log.h"

namespace edgepin::config {

inline constexpr uint32_t kMaxThreads = 1024;
// The longest wait any timeout may name: a day. Longer "timeouts" are
// really "never", which Edgepin does not offer (every wait has a deadline).
inline constexpr int64_t kMaxTimeoutMs = 24LL * 3600 * 1000;

enum class LogTarget : uint8_t { Stderr, Syslog };
enum class SyslogFacility : uint8_t {
  Daemon,
  User,
  Local0,
  Local1,
  Local2,
  Local3,
  Local4,
  Local5,
  Local6,
  Local7
};

struct LogConfig {
  log::Format format = log::Format::Text;
  LogTarget target = LogTarget::Stderr;
  log::Level level = log::Level::Info;
  SyslogFacility facility = SyslogFacility::Daemon;  // target syslog only
  // One line per connection (lb) or per request (node-proxy).
  bool access_log = true;
};

struct AdminSocketConfig {
  std::filesystem::path path;
  mode_t mode = 0660;
};

// The PROXY protocol header a sender writes.
enum class ProxyProtocol : uint8_t { None, V1, V2 };
constexpr std::string_view to_string(ProxyProtocol p) {
  switch (p) {
    case ProxyProtocol::None:
      return "none";
    case ProxyProtocol::V1:
      return "v1";
    case ProxyProtocol::V2:
      return "v2";
  }
  return "?";
}

// "tls" or "http" (that port of each node, from cluster.json) or a number.
struct PortRef {
  std::optional<NodePort> named;
  uint16_t number = 0;  // when !named

  uint16_t resolve(const Node& node) const { return named ? node.port(*named) : number; }
  bool operator==(const PortRef&) const = default;
};

// The addresses one process will listen on, collected while reading so that
// two listeners on one address are a config error, not an EADDRINUSE at
// start (or, worse with SO_REUSEPORT, two listeners sharing connections).
class BindSet {
 public:
  // Records `address`, read at `at`. Throws at `at` if it overlaps an
  // address recorded before (SocketAddress::overlaps).
  void claim(const JsonValue& at, const SocketAddress& address);
  // Records an address that is bound because of a value in another file
  // (the node's peer port in cluster.json). Never throws.
  void reserve(const SocketAddress& address, std::string file, std::string pointer);

 private:
  struct Entry {
    SocketAddress address;
    std::string file;
    std::string pointer;
  };
  std::vector<Entry> entries_;
};

// Reads "threads": 0 (one worker per CPU, the default) .. kMaxThreads.
uint32_t read_threads(JsonObject& o);

// Reads a "log" object (all keys optional).
LogConfig read_log(const JsonValue& value);

// Reads an "admin_socket" object: "path" (required; relative to `dir`,
// {node} replaced by `node`) and "mode" (an octal string, default "0660").
AdminSocketConfig read_admin_socket(const JsonValue& value, const std::filesystem::path& dir,
                                    std::string_view node);

// Reads "tls", "http" or a port number 1..65535. "peer" is refused: the peer
// port belongs to the peer link alone.
PortRef read_port_ref(const JsonValue& value);

ProxyProtocol read_proxy_protocol(const JsonValue& value);

// Reads a "bind"-style "ADDRESS:PORT" (wildcard "*:PORT" allowed when
// `allow_wildcard`). Throws at `value` with the parser's reason.
SocketAddress read_socket_address(const JsonValue& value, bool allow_wildcard);

// Reads a URL path for a built-in endpoint ("/_edgepin/health"): must start
// with '/', hold only visible ASCII and no '?' or '#'.
std::string read_url_path(const JsonValue& value);

}  // namespace edgepin::config
