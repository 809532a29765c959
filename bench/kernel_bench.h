//===- kernel_bench.h - what the kernel benchmarks share ------------------===//
//
// The median of repeated timings, and Halide's heap for the kernel
// benchmarks, allocated like the runtime's
// scratch cache (runtime/src/Runtime.cpp) so that a kernel costs here what
// it costs in an artifact: a size header, small blocks straight from the C
// heap without a lock, freed blocks of 256 KiB or more kept for reuse (no
// page faults for fresh memory on every call). Counts the current and
// peak bytes.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_BENCH_KERNEL_BENCH_H
#define STLM_BENCH_KERNEL_BENCH_H

#include "HalideRuntime.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace stlm::bench {

/// The median wall time of `reps` calls of `f`, in seconds.
template <typename F> double median(int reps, F f) {
  using Clock = std::chrono::steady_clock;
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    Clock::time_point a = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

constexpr size_t kHeader = 128, kMinCached = 256 << 10;
inline std::mutex heapLock;
inline std::unordered_multimap<size_t, char *> spare;
inline std::atomic<size_t> heapCurrent{0}, heapPeak{0};

inline void *scratchMalloc(void *, size_t bytes) {
  size_t size = (bytes + kHeader - 1) / kHeader * kHeader;
  size_t now = heapCurrent += size;
  for (size_t seen = heapPeak;
       now > seen && !heapPeak.compare_exchange_weak(seen, now);)
    ;
  char *base = nullptr;
  if (size >= kMinCached) {
    std::lock_guard<std::mutex> g(heapLock);
    if (auto it = spare.find(size); it != spare.end()) {
      base = it->second;
      spare.erase(it);
    }
  }
  if (!base) {
    base = static_cast<char *>(std::aligned_alloc(kHeader, size + kHeader));
    *reinterpret_cast<size_t *>(base) = size;
  }
  return base + kHeader;
}

inline void scratchFree(void *, void *p) {
  char *base = static_cast<char *>(p) - kHeader;
  size_t size = *reinterpret_cast<size_t *>(base);
  heapCurrent -= size;
  if (size < kMinCached) {
    std::free(base);
    return;
  }
  std::lock_guard<std::mutex> g(heapLock);
  spare.emplace(size, base);
}

inline void useScratchHeap() {
  halide_set_custom_malloc(scratchMalloc);
  halide_set_custom_free(scratchFree);
}

} // namespace stlm::bench

#endif // STLM_BENCH_KERNEL_BENCH_H
