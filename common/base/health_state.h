#pragma once
// The health verdict of one checked thing (an lb server, the node's Tomcat,
// a peer node) as the data path reads it, and the passive hook the data
// path calls when it sees that thing fail.
//
//   - up() is what routing reads: one relaxed atomic load.
//   - report_failure() (any thread) marks it down at once: a connect that
//     failed on the data path is evidence enough, and waiting for `fall`
//     active checks would send more users to it (HAProxy's observe/
//     on-error mark-down, Envoy's outlier detection). Only the call that
//     takes it down logs and counts the transition; later reports while it
//     is down are only counted. The active checker (health_check.h) then
//     brings it back after `rise` successes in a row, counted from the
//     report on.
//   - Without an active checker nothing could bring it back, so a report
//     is then counted and ignored.
// load()/store() keep the std::atomic<bool> spelling the code used before.
#include <atomic>
#include <cstdint>
#include <string_view>

namespace edgepin {

class HealthState {
 public:
  explicit HealthState(bool up) : up_(up) {}
  HealthState(const HealthState&) = delete;
  HealthState& operator=(const HealthState&) = delete;

  bool up() const { return up_.load(std::memory_order_relaxed); }
  bool load(std::memory_order order = std::memory_order_seq_cst) const { return up_.load(order); }
  void store(bool up, std::memory_order order = std::memory_order_seq_cst) { up_.store(up, order); }
  HealthState& operator=(bool up) {
    store(up);
    return *this;
  }
  operator bool() const {
    return load();
  }  // NOLINT(google-explicit-constructor): atomic<bool>'s spelling

  // Passive hook: `who` names the target in the log line ("server node2",
  // "Tomcat at 127.0.0.1:8080"), `why` is what the data path saw
  // ("connect refused"). Returns true if this call marked it down.
  bool report_failure(std::string_view who, std::string_view why);

  // For the active checkers: each one counts itself in while it checks this
  // target (a reload may start the new one before the old one is gone);
  // reports are ignored while none does. `reports()` changes with every
  // accepted report, so a checker knows to restart its run of successes.
  void add_checker() { checkers_.fetch_add(1); }
  void remove_checker() { checkers_.fetch_sub(1); }
  uint64_t reports() const { return reports_.load(); }
  // Transitions to down made by report_failure (for stats).
  uint64_t passive_downs() const { return passive_downs_.load(std::memory_order_relaxed); }
  // Reports ignored because nothing actively checks this target.
  uint64_t ignored_reports() const { return ignored_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> up_;
  std::atomic<int> checkers_{0};
  std::atomic<uint64_t> reports_{0};
  std::atomic<uint64_t> passive_downs_{0};
  std::atomic<uint64_t> ignored_{0};
};

}  // namespace edgepin
