//===- bandwidth.cpp - the read bandwidth at a buffer size --------------===//
//
//   stlm-bench-bandwidth BYTES [--threads T] [--rounds R]
//
// The rate at which T threads (default 2) read a buffer of BYTES bytes
// that they read again and again, as batch-1 generation reads a model's
// weights once per token: for a buffer that fits a cache level, that
// level's bandwidth, else memory's. Each thread (the main one among them)
// sums its own contiguous slice with vector loads (the compiler's, from
// the sum of 64-bit words); a round is 8 passes, timed between barriers. Prints
// one JSON object: bytes, threads, the median GB/s over R rounds (default 15)
// after one warm-up, and the best.
//
//===----------------------------------------------------------------------===//

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {
/// Threads wait at `arriveAndWait` until all `count` have arrived (a
/// spinning barrier: the rounds are short).
class Barrier {
public:
  explicit Barrier(int count) : count(count) {}
  void arriveAndWait() {
    int gen = generation.load();
    if (arrived.fetch_add(1) + 1 == count) {
      arrived = 0;
      generation.fetch_add(1);
      return;
    }
    while (generation.load() == gen)
      std::this_thread::yield();
  }

private:
  const int count;
  std::atomic<int> arrived{0}, generation{0};
};
} // namespace

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: stlm-bench-bandwidth BYTES [--threads T] "
                         "[--rounds R]\n");
    return 2;
  }
  char *end = nullptr;
  long long bytes = std::strtoll(argv[1], &end, 10);
  if (*end != '\0' || bytes < 4096 || bytes > (1LL << 36)) {
    std::fprintf(stderr,
                 "stlm-bench-bandwidth: error: BYTES must be a "
                 "number from 4096 to 2^36, not '%s'\n",
                 argv[1]);
    return 2;
  }
  int threads = 2, rounds = 15;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads"))
      threads = std::max(1, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--rounds"))
      rounds = std::max(1, std::atoi(argv[i + 1]));
  }
  // Whole 64-byte lines for each thread's slice.
  threads = std::min<long long>(threads, bytes / 64);
  size_t words = static_cast<size_t>(bytes) / 64 / threads * threads * 8;
  auto *data = static_cast<uint64_t *>(std::aligned_alloc(64, words * 8));
  if (!data) {
    std::fprintf(stderr,
                 "stlm-bench-bandwidth: error: cannot allocate %lld "
                 "bytes\n",
                 bytes);
    return 1;
  }
  for (size_t i = 0; i < words; ++i)
    data[i] = i;
  constexpr int kPasses = 8;
  // The main thread reads slice 0 and times each round between barriers;
  // threads 1.. read the others.
  Barrier sync(threads);
  std::atomic<uint64_t> sink{0};
  size_t slice = words / threads;
  auto round = [&](int t) {
    const uint64_t *p = data + t * slice;
    uint64_t sum = 0;
    for (int pass = 0; pass < kPasses; ++pass) {
      for (size_t i = 0; i < slice; ++i)
        sum += p[i];
      // Each pass reads the memory again (not one pass times 8).
      asm volatile("" : "+r"(sum) : : "memory");
    }
    sink += sum;
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (int r = 0; r <= rounds; ++r) {
        sync.arriveAndWait();
        round(t);
        sync.arriveAndWait();
      }
    });
  std::vector<double> rates;
  for (int r = 0; r <= rounds; ++r) {
    sync.arriveAndWait();
    auto t0 = std::chrono::steady_clock::now();
    round(0);
    sync.arriveAndWait();
    double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    if (r > 0)
      rates.push_back(words * 8.0 * kPasses / s / 1e9);
  }
  for (std::thread &t : pool)
    t.join();
  std::sort(rates.begin(), rates.end());
  std::printf("{\"bytes\": %lld, \"threads\": %d, \"gb_per_s\": %.2f, "
              "\"best_gb_per_s\": %.2f, \"checksum\": %llu}\n",
              static_cast<long long>(words * 8), threads,
              rates[rates.size() / 2], rates.back(),
              static_cast<unsigned long long>(sink.load() & 0xff));
  std::free(data);
  return 0;
}
