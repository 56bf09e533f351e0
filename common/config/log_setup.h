#pragma once
// Applies a "log" config object (lb.json, node-proxy.json) to common/log:
// level, format and target. Kept apart from common/log so the logger
// itself knows nothing of the configuration.
#include "config_common.h"

namespace edgepin::log {

// The LOG_* facility value of a configured syslog facility.
int syslog_facility(config::SyslogFacility f);

// Sets level and format, and switches to syslog (ident = the program name
// set by set_program) or back to stderr. Safe to call again on reload.
void apply(const config::LogConfig& c);

}  // namespace edgepin::log
