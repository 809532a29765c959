//===- matmul.cpp - Halide matmul throughput against the machine's peak ---===//
//
// Times the three matmul forms at M=4096, N=1024, K=256 (an FFN projection
// of a 16 × 256-token batch), the tn form at M=256, N=1024, K=4096 (that
// projection's weight gradient: the same FLOPs, the batch as the
// reduction) and, in the same run, the machine's fp32 FMA
// peak: every thread running independent FMA chains on the widest vectors
// the host has, after a warm-up, best of 5, measured before and after the
// matmuls (the higher is used; a large gap means the machine was busy).
// Prints medians, GFLOP/s and the fraction of the measured peak (and of the
// 480 GFLOP/s the design notes quote for this machine type). Each form's
// result is checked against dot products computed here, on random inputs.
//
//   stlm-bench-matmul [--peak] [--threads N]
//
// --peak measures only the FMA peak (best of 5 after a warm-up) and prints
// {"fma_peak_gflops": G, "threads": N}: the yardstick bench/ref3m.sh holds
// the PyTorch peer's matmul speed against.
//
//===----------------------------------------------------------------------===//

#include "HalideBuffer.h"
#include "HalideRuntime.h"
#include "bench_mm_nn.h"
#include "bench_mm_nt.h"
#include "bench_mm_tn.h"
#include "bench_mm_tn_dw.h"
#include "bench_mm_nn_bf16.h"
#include "bench_mm_nt_bf16.h"
#include "bench_mm_tn_bf16.h"
#include "bench_mm_tn_dw_bf16.h"
#include "kernel_bench.h"
#include "reference/Kernels.h"

#include <immintrin.h>
#include <cstdlib>
#include <string>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <thread>
#include <utility>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kM = 4096, kN = 1024, kK = 256;
constexpr int kDwM = 256, kDwN = 1024, kDwK = 4096;

using stlm::bench::median;

// FMA chains: 16 independent accumulators hide the latency; no memory.
__attribute__((target("avx512f"))) double fmaLoop512(long iters) {
  __m512 acc[16];
  for (__m512 &v : acc)
    v = _mm512_set1_ps(0.0f);
  __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
  for (long i = 0; i < iters; ++i)
    for (__m512 &v : acc)
      v = _mm512_fmadd_ps(a, v, b);
  float out[16];
  float s = 0;
  for (__m512 &v : acc) {
    _mm512_storeu_ps(out, v);
    s += out[0];
  }
  return s;
}

__attribute__((target("avx2,fma"))) double fmaLoop256(long iters) {
  __m256 acc[16];
  for (__m256 &v : acc)
    v = _mm256_set1_ps(0.0f);
  __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
  for (long i = 0; i < iters; ++i)
    for (__m256 &v : acc)
      v = _mm256_fmadd_ps(a, v, b);
  float out[8];
  float s = 0;
  for (__m256 &v : acc) {
    _mm256_storeu_ps(out, v);
    s += out[0];
  }
  return s;
}

/// FLOP/s of `threads` threads running FMA chains concurrently.
double peakFlops(int threads) {
  bool wide = __builtin_cpu_supports("avx512f");
  const long iters = 50'000'000;
  double flopsPerThread = iters * 16.0 * (wide ? 16 : 8) * 2;
  std::vector<std::thread> pool;
  std::vector<double> sink(threads);
  Clock::time_point a = Clock::now();
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      sink[t] = wide ? fmaLoop512(iters) : fmaLoop256(iters);
    });
  for (std::thread &t : pool)
    t.join();
  double s = std::chrono::duration<double>(Clock::now() - a).count();
  if (sink[0] == 12345.0)
    std::printf(" ");
  return threads * flopsPerThread / s;
}

/// Best of `runs` peak measurements after one warm-up.
double bestPeak(int threads, int runs) {
  peakFlops(threads);
  double best = 0;
  for (int r = 0; r < runs; ++r)
    best = std::max(best, peakFlops(threads));
  return best;
}

using Buffer = Halide::Runtime::Buffer<float>;

/// c[i, j] against Σ_k A(i, k) · B(k, j) at a few entries (c is M × N,
/// the reduction K).
template <typename A, typename B>
bool checkEntries(const char *form, const Buffer &c, A aAt, B bAt, int M = kM,
                  int N = kN, int K = kK) {
  const std::pair<int, int> probes[] = {
      {0, 0}, {M - 1, N - 1}, {1234 % M, 567 % N}, {17, 1000 % N}};
  for (auto [i, j] : probes) {
    double want = 0;
    for (int k = 0; k < K; ++k)
      want += double(aAt(i, k)) * bAt(k, j);
    if (std::abs(c(j, i) - want) > 1e-3 * (1 + std::abs(want))) {
      std::fprintf(stderr, "%s: wrong result at [%d, %d]: %g, expected %g\n",
                   form, i, j, c(j, i), want);
      return false;
    }
  }
  return true;
}

} // namespace

int main(int argc, char **argv) {
  stlm::bench::useScratchHeap();
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  bool peakOnly = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--peak") {
      peakOnly = true;
    } else if (arg == "--threads" && i + 1 < argc && std::atoi(argv[i + 1]) > 0) {
      threads = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: stlm-bench-matmul [--peak] [--threads N]\n");
      return 2;
    }
  }
  if (peakOnly) {
    std::printf("{\"fma_peak_gflops\": %.1f, \"threads\": %d}\n",
                bestPeak(threads, 5) / 1e9, threads);
    return 0;
  }
  // Random inputs: a [M, K] (and its transpose), b [N, K] (and [K, N]).
  Buffer a(kK, kM), bT(kK, kN), b(kN, kK), aT(kM, kK), c(kN, kM);
  uint32_t state = 12345;
  auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return (state >> 8) * (1.0f / 16777216.0f) - 0.5f;
  };
  a.for_each_element([&](int k, int i) { a(k, i) = aT(i, k) = next(); });
  b.for_each_element([&](int j, int k) { b(j, k) = bT(k, j) = next(); });
  auto A = [&](int i, int k) { return a(k, i); };
  auto B = [&](int k, int j) { return b(j, k); };

  // The weight gradient of the same projection: dW[N', M'] = dyᵀ · x with
  // the batch's 4096 rows as the reduction (tn at M=256, N=1024, K=4096).
  Buffer x(kDwM, kDwK), dy(kDwN, kDwK), dw(kDwN, kDwM);
  x.for_each_value([&](float &v) { v = next(); });
  dy.for_each_value([&](float &v) { v = next(); });

  double peakBefore = bestPeak(threads, 5);
  double flop = 2.0 * kM * kN * kK;
  struct Case {
    const char *name;
    double seconds;
    bool ok;
  } cases[4];
  cases[0] = {"nt  c = a·bᵀ   (linear)",
              median(21, [&] { bench_mm_nt(a, bT, c); }),
              checkEntries("nt", c, A, B)};
  cases[1] = {"nn  c = a·b    (dx)", median(21, [&] { bench_mm_nn(a, b, c); }),
              checkEntries("nn", c, A, B)};
  cases[2] = {"tn  c = aᵀ·b", median(21, [&] { bench_mm_tn(aT, b, c); }),
              checkEntries("tn", c, A, B)};
  cases[3] = {"tn  dW = xᵀ·dy (K=4096)",
              median(21, [&] { bench_mm_tn_dw(x, dy, dw); }),
              checkEntries(
                  "tn dW", dw, [&](int i, int k) { return x(i, k); },
                  [&](int k, int j) { return dy(j, k); }, kDwM, kDwN, kDwK)};
  // bf16: the kernels round their inputs; the probes compare with sums of
  // the rounded inputs (each product exact).
  auto bf = [](float v) { return stlm::ref::roundBF16(v); };
  auto Abf = [&](int i, int k) { return bf(A(i, k)); };
  auto Bbf = [&](int k, int j) { return bf(B(k, j)); };
  Case bf16[4];
  bf16[0] = {"nt  bf16", median(21, [&] { bench_mm_nt_bf16(a, bT, c); }),
             checkEntries("nt bf16", c, Abf, Bbf)};
  bf16[1] = {"nn  bf16", median(21, [&] { bench_mm_nn_bf16(a, b, c); }),
             checkEntries("nn bf16", c, Abf, Bbf)};
  bf16[2] = {"tn  bf16", median(21, [&] { bench_mm_tn_bf16(aT, b, c); }),
             checkEntries("tn bf16", c, Abf, Bbf)};
  bf16[3] = {"tn  dW bf16 (K=4096)",
             median(21, [&] { bench_mm_tn_dw_bf16(x, dy, dw); }),
             checkEntries(
                 "tn dW bf16", dw, [&](int i, int k) { return bf(x(i, k)); },
                 [&](int k, int j) { return bf(dy(j, k)); }, kDwM, kDwN,
                 kDwK)};
  double peakAfter = bestPeak(threads, 5);
  double peak = std::max(peakBefore, peakAfter);

  std::printf("machine: %d threads, measured fp32 FMA peak %.0f GFLOP/s "
              "(before %.0f, after %.0f)\n",
              threads, peak / 1e9, peakBefore / 1e9, peakAfter / 1e9);
  std::printf("matmul M=%d N=%d K=%d, and the tn weight gradient M=%d "
              "N=%d K=%d (median of 21 runs)\n",
              kM, kN, kK, kDwM, kDwN, kDwK);
  bool ok = true;
  for (const Case &k : cases) {
    double rate = flop / k.seconds;
    std::printf("  %-24s %7.3f ms  %6.0f GFLOP/s  %5.1f %% of measured peak"
                "  (%5.1f %% of 480)%s\n",
                k.name, k.seconds * 1e3, rate / 1e9, 100 * rate / peak,
                100 * rate / 480e9,
                rate > peak ? "  [above the peak: the measurement is noisy]"
                            : "");
    ok &= k.ok;
  }
  std::printf("bf16 inputs, fp32 accumulation (vdpbf16ps: twice the FMA's "
              "products per instruction; percentages of the fp32 peak)\n");
  for (int i = 0; i < 4; ++i) {
    double rate = flop / bf16[i].seconds;
    std::printf("  %-24s %7.3f ms  %6.0f GFLOP/s  %5.1f %% of the fp32 peak"
                "  (%4.2fx the fp32 kernel)\n",
                bf16[i].name, bf16[i].seconds * 1e3, rate / 1e9,
                100 * rate / peak, cases[i].seconds / bf16[i].seconds);
    ok &= bf16[i].ok;
  }
  if (peakAfter < 0.9 * peakBefore || peakBefore < 0.9 * peakAfter)
    std::printf("warning: the peak moved by more than 10 %% during the run; "
                "the machine is busy\n");
  return ok ? 0 : 1;
}
