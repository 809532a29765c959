//===- attention.cpp - attention backward: materialised against blocked --===//
//
// Times the two attention backward schedules (docs/kernels.md) on the
// ref-3m training shape (16 × 256 tokens, 4 heads of 64, causal), on
// stlm-10m's (the same tokens, 6 query heads over 2 kv heads) and on a
// long context (1 × 4096 tokens, 4 heads), with the forward pass as the
// yardstick, and reports each call's peak Halide heap: the materialised
// schedule holds 2·B·H·T·S probabilities, the blocked one a block × T or S
// per thread. Checks that both schedules give the same gradients.
//
//===----------------------------------------------------------------------===//

#include "HalideBuffer.h"
#include "HalideRuntime.h"
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

} // namespace

int main() {
  stlm::bench::useScratchHeap();
  bool ok = run("ref-3m", bench_attn_fwd, bench_attn_grad,
                bench_attn_grad_blocked, 16, 256, 4, 4, 64, 11);
  ok &= run("stlm-10m", bench_attn_gqa_fwd, bench_attn_gqa_grad,
            bench_attn_gqa_grad_blocked, 16, 256, 6, 2, 64, 11);
  ok &= run("long context", bench_attn_long_fwd, bench_attn_long_grad,
            bench_attn_long_grad_blocked, 1, 4096, 4, 4, 64, 3);
  return ok ? 0 : 1;
}
