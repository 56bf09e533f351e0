#include "time_util.h"

#include <cstdio>

namespace edgepin {

std::string format_duration(int64_t s) {
  if (s < 0) s = 0;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%lldd %02lldh%02lldm%02llds", static_cast<long long>(s / 86400),
                static_cast<long long>(s / 3600 % 24), static_cast<long long>(s / 60 % 60),
                static_cast<long long>(s % 60));
  return buf;
}

}  // namespace edgepin
