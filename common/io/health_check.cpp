#include "health_check.h"

#include <random>

#include "log.h"
#include "time_util.h"

namespace edgepin::health {

const char* to_string(Outcome o) {
  switch (o) {
#define EDGEPIN_X(name, text) \
  case Outcome::name:         \
    return text;
    EDGEPIN_HEALTH_OUTCOMES(EDGEPIN_X)
#undef EDGEPIN_X
  }
  return "?";
}

class HealthChecker::Target {
 public:
  Target(event_base* base, TargetSettings settings, std::unique_ptr<Probe> probe)
      : settings_(std::move(settings)), probe_(std::move(probe)) {
    HealthState& state = *settings_.state;
    switch (settings_.start) {
      case Start::Up:
        // As if the server had just come up; the verdict in place is left
        // alone (a restarted checker of a down server brings it back after
        // one success).
        successes_ = settings_.rise;
        break;
      case Start::FirstCheck:
        state.store(false);
        first_ = true;
        break;
      case Start::Keep: {
        const bool up = state.load();
        successes_ = up ? settings_.rise : 0;
        failures_ = up ? 0 : settings_.fall;
        break;
      }
    }
    seen_reports_ = state.reports();
    state.add_checker();
    tick_.reset(evtimer_new(base, tick_cb, this));
    deadline_.reset(evtimer_new(base, deadline_cb, this));
    probe_->attach(base, [this](Result r) { finish(r); });
  }

  ~Target() {
    // The loop is stopped: no callback runs any more.
    probe_->cancel();
    settings_.state->remove_checker();
  }

  void schedule_first(std::mt19937& rng) {
    timeval first{0, 0};
    if (settings_.spread_first) {
      const int64_t us =
          std::chrono::duration_cast<std::chrono::microseconds>(settings_.interval).count();
      if (us > 0)
        first = to_timeval(
            std::chrono::microseconds(static_cast<int64_t>(rng() % static_cast<uint64_t>(us))));
    }
    evtimer_add(tick_.get(), &first);
  }

  const TargetCounters& counters() const { return counters_; }

 private:
  static void tick_cb(evutil_socket_t, short, void* arg) { static_cast<Target*>(arg)->begin(); }
  static void deadline_cb(evutil_socket_t, short, void* arg) {
    auto* t = static_cast<Target*>(arg);
    t->probe_->cancel();
    t->finish(Result{Outcome::Timeout, 0});
  }

  void begin() {
    started_ = std::chrono::steady_clock::now();
    in_check_ = true;
    // Armed first: the probe may finish from inside begin().
    const timeval timeout = to_timeval(settings_.timeout);
    evtimer_add(deadline_.get(), &timeout);
    probe_->begin();
  }

  void finish(Result r) {
    if (!in_check_) return;  // a probe that reports after a cancel
    in_check_ = false;
    evtimer_del(deadline_.get());
    const auto took = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - started_);
    counters_.checks.add();
    if (r.outcome != Outcome::Ok) counters_.failed_checks.add();
    if (settings_.on_result) settings_.on_result(r, took);
    judge(r, took);
    const timeval interval = to_timeval(settings_.interval);
    evtimer_add(tick_.get(), &interval);
  }

  void judge(Result r, std::chrono::microseconds took) {
    HealthState& state = *settings_.state;
    // A passive report since the last check: down now, and `rise`
    // successes from here on bring it back.
    if (const uint64_t reports = state.reports(); reports != seen_reports_) {
      seen_reports_ = reports;
      successes_ = 0;
      failures_ = settings_.fall;
    }
    std::string detail = to_string(r.outcome);
    // Appended piece by piece: GCC 12 at -O3 reports a false -Wrestrict
    // for `"literal" + std::to_string(...)` here.
    if (r.detail) {
      detail += ' ';
      detail += std::to_string(r.detail);
    }
    detail += ", ";
    detail += std::to_string(took.count() / 1000);
    detail += " ms";
    const bool ok = r.outcome == Outcome::Ok;
    const std::string kind = probe_->kind();
    if (first_) {
      first_ = false;
      successes_ = ok ? settings_.rise : 0;
      failures_ = ok ? 0 : settings_.fall;
      if (ok)
        set_up();
      else
        state.store(false);
      (ok ? log::info : log::warning)(settings_.label + " is " + (ok ? "UP" : "DOWN") + " (first " +
                                      kind + " check: " + detail + ")");
      return;
    }
    const bool was_up = state.load();
    if (ok) {
      failures_ = 0;
      if (++successes_ >= settings_.rise && !was_up && set_up()) {
        counters_.went_up.add();
        log::warning(settings_.label + " is UP (" + kind + " check passed " +
                     std::to_string(successes_) + " times, last: " + detail + ")");
      }
    } else {
      successes_ = 0;
      if (++failures_ >= settings_.fall && was_up) {
        state.store(false);
        counters_.went_down.add();
        log::warning(settings_.label + " is DOWN (" + kind + " check: " + detail + ", " +
                     std::to_string(failures_) + " failures in a row)");
      }
    }
  }

  // Marks the target up unless a passive report came in meanwhile (the
  // report wins: the data path saw a failure after this check began).
  bool set_up() {
    HealthState& state = *settings_.state;
    state.store(true);
    if (state.reports() == seen_reports_) return true;
    state.store(false);
    seen_reports_ = state.reports();
    successes_ = 0;
    failures_ = settings_.fall;
    return false;
  }

  TargetSettings settings_;
  std::unique_ptr<Probe> probe_;
  EventPtr tick_;
  EventPtr deadline_;
  TargetCounters counters_;
  std::chrono::steady_clock::time_point started_;
  uint64_t seen_reports_ = 0;
  uint32_t successes_ = 0;
  uint32_t failures_ = 0;
  bool first_ = false;
  bool in_check_ = false;
};

HealthChecker::HealthChecker(std::string thread_name) : loop_(std::move(thread_name)) {}

HealthChecker::~HealthChecker() {
  stop();
  targets_.clear();
}

size_t HealthChecker::add(TargetSettings settings, std::unique_ptr<Probe> probe) {
  targets_.push_back(std::make_unique<Target>(loop_.base(), std::move(settings), std::move(probe)));
  return targets_.size() - 1;
}

void HealthChecker::start() {
  if (started_) return;
  started_ = true;
  std::mt19937 rng(std::random_device{}());
  for (auto& t : targets_) t->schedule_first(rng);
  loop_.start();
}

void HealthChecker::stop() { loop_.stop(); }

const TargetCounters& HealthChecker::counters(size_t index) const {
  return targets_.at(index)->counters();
}

}  // namespace edgepin::health
