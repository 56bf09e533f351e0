#pragma once
// A statistics counter written by one thread and read by any: the owner
// increments with a plain load+store (no locked instruction on the hot
// path), readers see a value that is at most a few increments old. Per-thread
// counters are summed on read (docs/architecture.md, "Ownership and shared
// state").
#include <atomic>
#include <cstdint>

namespace edgepin {

class Counter {
 public:
  void add(uint64_t n = 1) {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void sub(uint64_t n = 1) {
    v_.store(v_.load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
  }
  uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

}  // namespace edgepin
