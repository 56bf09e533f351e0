#include "log_setup.h"

#include <syslog.h>

namespace edgepin::log {

int syslog_facility(config::SyslogFacility f) {
  switch (f) {
    case config::SyslogFacility::Daemon:
      return LOG_DAEMON;
    case config::SyslogFacility::User:
      return LOG_USER;
    case config::SyslogFacility::Local0:
      return LOG_LOCAL0;
    case config::SyslogFacility::Local1:
      return LOG_LOCAL1;
    case config::SyslogFacility::Local2:
      return LOG_LOCAL2;
    case config::SyslogFacility::Local3:
      return LOG_LOCAL3;
    case config::SyslogFacility::Local4:
      return LOG_LOCAL4;
    case config::SyslogFacility::Local5:
      return LOG_LOCAL5;
    case config::SyslogFacility::Local6:
      return LOG_LOCAL6;
    case config::SyslogFacility::Local7:
      return LOG_LOCAL7;
  }
  return LOG_DAEMON;
}

void apply(const config::LogConfig& c) {
  set_level(c.level);
  set_format(c.format);
  if (c.target == config::LogTarget::Syslog)
    use_syslog(syslog_facility(c.facility));
  else
    use_stderr();
}

}  // namespace edgepin::log
