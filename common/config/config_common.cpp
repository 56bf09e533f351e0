#include "config_common.h"

#include <algorithm>

#include "config_files.h"

namespace edgepin::config {

void BindSet::claim(const JsonValue& at, const SocketAddress& address) {
  for (const auto& e : entries_) {
    if (!e.address.overlaps(address)) continue;
    const std::string where = e.file == at.file() ? e.pointer : e.file + " " + e.pointer;
    at.fail("bind " + address.to_string() + " conflicts with " + where + " (" +
            e.address.to_string() + ")");
  }
  entries_.push_back({address, at.file(), at.pointer()});
}

void BindSet::reserve(const SocketAddress& address, std::string file, std::string pointer) {
  entries_.push_back({address, std::move(file), std::move(pointer)});
}

uint32_t read_threads(JsonObject& o) { return o.integer<uint32_t>("threads", 0, 0, kMaxThreads); }

LogConfig read_log(const JsonValue& value) {
  return value.object([](JsonObject& o) {
    LogConfig l;
    l.format = o.enumeration("format", log::Format::Text,
                             {{"text", log::Format::Text}, {"json", log::Format::Json}});
    l.target = o.enumeration("target", LogTarget::Stderr,
                             {{"stderr", LogTarget::Stderr}, {"syslog", LogTarget::Syslog}});
    l.level = o.enumeration("level", log::Level::Info,
                            {{"debug", log::Level::Debug},
                             {"info", log::Level::Info},
                             {"warning", log::Level::Warning},
                             {"error", log::Level::Error}});
    if (auto v = o.get("facility")) {
      if (l.target != LogTarget::Syslog) v->fail("applies only to \"target\": \"syslog\"");
      l.facility = v->as_enum<SyslogFacility>({{"daemon", SyslogFacility::Daemon},
                                               {"user", SyslogFacility::User},
                                               {"local0", SyslogFacility::Local0},
                                               {"local1", SyslogFacility::Local1},
                                               {"local2", SyslogFacility::Local2},
                                               {"local3", SyslogFacility::Local3},
                                               {"local4", SyslogFacility::Local4},
                                               {"local5", SyslogFacility::Local5},
                                               {"local6", SyslogFacility::Local6},
                                               {"local7", SyslogFacility::Local7}});
    }
    l.access_log = o.boolean("access_log", l.access_log);
    return l;
  });
}

AdminSocketConfig read_admin_socket(const JsonValue& value, const std::filesystem::path& dir,
                                    std::string_view node) {
  return value.object([&](JsonObject& o) {
    AdminSocketConfig a;
    JsonValue path = o.require("path");
    a.path = resolve_path(path, dir, node);
    // sun_path holds 108 bytes including the NUL.
    if (a.path.string().size() > 107) {
      path.fail("socket path " + a.path.string() + " is longer than 107 bytes");
    }
    if (auto v = o.get("mode")) {
      const std::string text = v->as_string();
      const bool octal =
          (text.size() == 3 || text.size() == 4) &&
          std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '7'; }) &&
          (text.size() == 3 || text.front() == '0');
      if (!octal) v->fail("bad mode \"" + text + "\": expected octal permissions like \"0660\"");
      a.mode = static_cast<mode_t>(std::stoul(text, nullptr, 8));
    }
    return a;
  });
}

PortRef read_port_ref(const JsonValue& value) {
  if (value.json().is_string()) {
    const auto& s = value.json().get_ref<const std::string&>();
    if (s == "tls") return PortRef{NodePort::Tls, 0};
    if (s == "http") return PortRef{NodePort::Http, 0};
    value.fail("expected \"tls\", \"http\" or a port number, got \"" + s + "\"");
  }
  if (!value.json().is_number_integer()) {
    value.fail("expected \"tls\", \"http\" or a port number, got " + value.type_name());
  }
  return PortRef{std::nullopt, value.as_int<uint16_t>(1, 65535, "port")};
}

ProxyProtocol read_proxy_protocol(const JsonValue& value) {
  return value.as_enum<ProxyProtocol>(
      {{"none", ProxyProtocol::None}, {"v1", ProxyProtocol::V1}, {"v2", ProxyProtocol::V2}});
}

SocketAddress read_socket_address(const JsonValue& value, bool allow_wildcard) {
  const std::string text = value.as_string(1, 64);
  std::string error;
  auto addr = SocketAddress::parse(text, {.allow_wildcard = allow_wildcard}, &error);
  if (!addr) value.fail(error);
  return *addr;
}

std::string read_url_path(const JsonValue& value) {
  std::string path = value.as_string(1, 1024);
  const bool ok = path.front() == '/' && std::all_of(path.begin(), path.end(), [](char c) {
                    return c > 0x20 && c < 0x7F && c != '?' && c != '#';
                  });
  if (!ok) {
    value.fail("path \"" + path +
               "\" must start with '/' and hold no space, '?', '#' or "
               "control character");
  }
  return path;
}

}  // namespace edgepin::config
