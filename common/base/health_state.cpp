#include "health_state.h"

#include <string>

#include "log.h"

namespace edgepin {

bool HealthState::report_failure(std::string_view who, std::string_view why) {
  if (checkers_.load() <= 0) {
    ignored_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  // Counted before the verdict flips: a checker that sees the verdict down
  // also sees a new report count and restarts its run of successes.
  reports_.fetch_add(1);
  if (!up_.exchange(false)) return false;
  passive_downs_.fetch_add(1, std::memory_order_relaxed);
  log::warning(std::string(who) + " is DOWN (reported by the data path: " + std::string(why) + ")");
  return true;
}

}  // namespace edgepin
