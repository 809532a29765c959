//===- attention.cpp - attention backward schedules; decode steps ---------===//
//
// Times the two attention backward schedules (docs/kernels.md) on the
// ref-3m training shape (16 × 256 tokens, 4 heads of 64, causal), on
// stlm-10m's (the same tokens, 6 query heads over 2 kv heads) and on a
// long context (1 × 4096 tokens, 4 heads), with the forward pass as the
// yardstick, and reports each call's peak Halide heap: the materialised
// schedule holds 2·B·H·T·S probabilities, the blocked one a block × T or S
// per thread. Checks that both schedules give the same gradients. Then
// times a decode step's attention (one query against the cache) at
// ref-3m's and stlm-100m's shapes and a few positions; `--decode` times
// only that.
//
//===----------------------------------------------------------------------===//

#include "HalideBuffer.h"
#include "HalideRuntime.h"
#include "bench_attn_decode_100m.h"
#include "bench_attn_decode_3m.h"
#include "bench_attn_fwd.h"
#include "bench_attn_gqa_fwd.h"
#include "bench_attn_gqa_grad.h"
#include "bench_attn_gqa_grad_blocked.h"
#include "bench_attn_grad.h"
#include "bench_attn_grad_blocked.h"
#include "bench_attn_long_fwd.h"
#include "bench_attn_long_grad.h"
#include "bench_attn_long_grad_blocked.h"
#include "kernel_bench.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <vector>

namespace {

using Buffer = Halide::Runtime::Buffer<float>;

using stlm::bench::median;

template <typename F> size_t peakBytes(F f) {
  stlm::bench::heapPeak = stlm::bench::heapCurrent.load();
  f();
  return stlm::bench::heapPeak;
}

using Fwd = int (*)(halide_buffer_t *, halide_buffer_t *, halide_buffer_t *,
                    int32_t, halide_buffer_t *);
using Bwd = int (*)(halide_buffer_t *, halide_buffer_t *, halide_buffer_t *,
                    halide_buffer_t *, int32_t, halide_buffer_t *,
                    halide_buffer_t *, halide_buffer_t *);

double maxDiff(const Buffer &a, const Buffer &b) {
  double d = 0;
  for (size_t i = 0; i < a.number_of_elements(); ++i)
    d = std::max(d, double(std::abs(a.data()[i] - b.data()[i])));
  return d;
}

bool run(const char *name, Fwd fwd, Bwd materialised, Bwd blocked, int B, int T,
         int H, int KV, int hd, int reps) {
  int W = H * hd, WK = KV * hd;
  Buffer q(W, T, B), k(WK, T, B), v(WK, T, B), dy(W, T, B), y(W, T, B);
  uint32_t state = 777;
  for (Buffer *x : {&q, &k, &v, &dy})
    x->for_each_value([&](float &f) {
      state = state * 1664525u + 1013904223u;
      f = (state >> 8) * (1.0f / 16777216.0f) - 0.5f;
    });
  Buffer dq[2] = {Buffer(W, T, B), Buffer(W, T, B)},
         dk[2] = {Buffer(WK, T, B), Buffer(WK, T, B)},
         dv[2] = {Buffer(WK, T, B), Buffer(WK, T, B)};
  Bwd bwd[2] = {materialised, blocked};
  int offset = 0;
  fwd(q, k, v, offset, y); // warm-up
  double tf = median(reps, [&] { fwd(q, k, v, offset, y); });
  std::printf("%s: B=%d T=S=%d heads=%d kv_heads=%d head_dim=%d, causal "
              "(median of %d)\n",
              name, B, T, H, KV, hd, reps);
  std::printf("  forward                %9.2f ms\n", tf * 1e3);
  const char *label[2] = {"backward, materialised", "backward, blocked     "};
  for (int i = 0; i < 2; ++i) {
    auto call = [&] { bwd[i](q, k, v, dy, offset, dq[i], dk[i], dv[i]); };
    size_t bytes = peakBytes(call);
    double tb = median(reps, call);
    std::printf("  %s %9.2f ms  (%.2f× forward)  peak heap %8.1f MiB\n",
                label[i], tb * 1e3, tb / tf, bytes / 1048576.0);
  }
  double d = std::max({maxDiff(dq[0], dq[1]), maxDiff(dk[0], dk[1]),
                       maxDiff(dv[0], dv[1])});
  std::printf("  largest difference between the schedules: %.2g\n", d);
  return d < 1e-4;
}

/// A decode step's attention (one query against a cache of S keys) at
/// positions `at`: microseconds a call, medians of `reps`.
void decode(const char *name, Fwd fwd, int S, int H, int KV, int hd,
            std::initializer_list<int> at, int reps) {
  int W = H * hd, WK = KV * hd;
  Buffer q(W, 1, 1), k(WK, S, 1), v(WK, S, 1), y(W, 1, 1);
  uint32_t state = 99;
  for (Buffer *x : {&q, &k, &v})
    x->for_each_value([&](float &f) {
      state = state * 1664525u + 1013904223u;
      f = (state >> 8) * (1.0f / 16777216.0f) - 0.5f;
    });
  std::printf("%s decode step: S=%d heads=%d kv_heads=%d head_dim=%d "
              "(median of %d)\n",
              name, S, H, KV, hd, reps);
  for (int position : at) {
    fwd(q, k, v, position, y); // warm-up
    double t = median(reps, [&] { fwd(q, k, v, position, y); });
    std::printf("  position %4d %9.2f us\n", position, t * 1e6);
  }
}

} // namespace

int main(int argc, char **argv) {
  stlm::bench::useScratchHeap();
  bool onlyDecode = argc > 1 && std::string(argv[1]) == "--decode";
  bool ok = onlyDecode || run("ref-3m", bench_attn_fwd, bench_attn_grad,
                              bench_attn_grad_blocked, 16, 256, 4, 4, 64, 11);
  ok &= onlyDecode || run("stlm-10m", bench_attn_gqa_fwd, bench_attn_gqa_grad,
                          bench_attn_gqa_grad_blocked, 16, 256, 6, 2, 64, 11);
  ok &= onlyDecode ||
        run("long context", bench_attn_long_fwd, bench_attn_long_grad,
            bench_attn_long_grad_blocked, 1, 4096, 4, 4, 64, 3);
  decode("ref-3m", bench_attn_decode_3m, 256, 4, 4, 64, {15, 127, 255}, 201);
  decode("stlm-100m", bench_attn_decode_100m, 512, 12, 4, 64, {15, 255, 511},
         201);
  return ok ? 0 : 1;
}
