//===- HalideKernelsTest.cpp - Halide kernels vs the reference kernels ----===//
//
// Each kernel stlm-kernelgen generated for the tests (see CMakeLists.txt)
// against its reference twin in reference/Kernels.h, on random inputs.
// Bound: |c − ref| ≤ 4·K·2⁻²⁴·max|a|·max|b|, the worst-case fp32 rounding of
// a K-term dot product (the reference sums in double); a wrong index or a
// missed panel is off by O(1).
//
//===----------------------------------------------------------------------===//

#include "HalideBuffer.h"
#include "HalideRuntime.h"
#include "reference/Kernels.h"
#include "support/CpuBF16.h"
#include "support/QuantTiles.h"
#include "support/Quantize.h"
#include "test_adamw.h"
#include "test_add.h"
#include "test_attn_causal.h"
#include "test_attn_causal_grad.h"
#include "test_attn_causal_grad_blocked.h"
#include "test_attn_decode.h"
#include "test_attn_decode_grad.h"
#include "test_attn_decode_vec.h"
#include "test_attn_decode_vec_grad.h"
#include "test_attn_decode_wide.h"
#include "test_attn_decode_wide_grad.h"
#include "test_attn_none.h"
#include "test_attn_none_grad.h"
#include "test_attn_none_grad_blocked.h"
#include "test_attn_ragged.h"
#include "test_attn_ragged_gqa.h"
#include "test_attn_ragged_gqa_grad.h"
#include "test_attn_ragged_grad_blocked.h"
#include "test_attn_square.h"
#include "test_attn_square_gqa.h"
#include "test_attn_square_gqa_grad.h"
#include "test_attn_square_grad.h"
#include "test_attn_tiled.h"
#include "test_attn_tiled_grad.h"
#include "test_attn_tiled_grad_blocked.h"
#include "test_attn_wide.h"
#include "test_attn_wide_grad_blocked.h"
#include "test_avx2_attn.h"
#include "test_avx2_attn_decode.h"
#include "test_avx2_attn_decode_grad.h"
#include "test_avx2_attn_grad.h"
#include "test_avx2_attn_grad_blocked.h"
#include "test_avx2_attn_square_gqa_grad.h"
#include "test_avx2_attn_square_grad.h"
#include "test_avx2_bf16_fused.h"
#include "test_avx2_bf16_nn.h"
#include "test_avx2_bf16_nt.h"
#include "test_avx2_bf16_tn.h"
#include "test_avx2_bf16_tn_ragged.h"
#include "test_avx2_mm_fused.h"
#include "test_avx2_mm_gelu_grad.h"
#include "test_avx2_mm_nn.h"
#include "test_avx2_mm_nt.h"
#include "test_avx2_mm_tn.h"
#include "test_avx2_mv.h"
#include "test_avx2_qmm_int8.h"
#include "test_avx2_qmt_int4.h"
#include "test_avx2_qmt_int8.h"
#include "test_avx2_qmv_int4.h"
#include "test_avx2_qmv_int8.h"
#include "test_bf16_fused.h"
#include "test_bf16_mv.h"
#include "test_bf16_nn.h"
#include "test_bf16_nn_wide.h"
#include "test_bf16_nt.h"
#include "test_bf16_nt_shrunk.h"
#include "test_bf16_tn.h"
#include "test_bf16_tn_ragged.h"
#include "test_ce.h"
#include "test_ce_grad.h"
#include "test_chunk_attn.h"
#include "test_chunk_attn_grad.h"
#include "test_chunk_attn_odd.h"
#include "test_chunk_attn_odd_grad.h"
#include "test_chunk_ce_next.h"
#include "test_chunk_ce_next_grad.h"
#include "test_chunk_ce_self.h"
#include "test_chunk_ce_self_grad.h"
#include "test_chunk_ce_self_masked.h"
#include "test_chunk_fixed.h"
#include "test_chunk_given.h"
#include "test_chunk_words.h"
#include "test_distill.h"
#include "test_distill_grad.h"
#include "test_dpbf_bf16_fused.h"
#include "test_dpbf_bf16_nn.h"
#include "test_dpbf_bf16_nt.h"
#include "test_dpbf_bf16_tn.h"
#include "test_dpbf_bf16_tn_ragged.h"
#include "test_embed.h"
#include "test_embed_grad.h"
#include "test_gelu.h"
#include "test_gelu_grad.h"
#include "test_mask.h"
#include "test_mm_fused.h"
#include "test_mm_fused_wide.h"
#include "test_mm_gelu_grad.h"
#include "test_mm_nn_a.h"
#include "test_mm_nn_b.h"
#include "test_mm_nn_c.h"
#include "test_mm_nn_deep.h"
#include "test_mm_nn_wide.h"
#include "test_mm_nt_a.h"
#include "test_mm_nt_b.h"
#include "test_mm_nt_c.h"
#include "test_mm_nt_shrunk.h"
#include "test_mm_nt_wide.h"
#include "test_mm_tn_a.h"
#include "test_mm_tn_b.h"
#include "test_mm_tn_c.h"
#include "test_mm_tn_chunks.h"
#include "test_mm_tn_chunks_rows.h"
#include "test_mm_tn_shrunk.h"
#include "test_mm_tn_wide.h"
#include "test_mv_a.h"
#include "test_mv_b.h"
#include "test_mv_rows16.h"
#include "test_mv_rows2.h"
#include "test_mv_rows4.h"
#include "test_mv_wide.h"
#include "test_pool_masked.h"
#include "test_pool_masked_grad.h"
#include "test_pool_max.h"
#include "test_pool_max_grad.h"
#include "test_pool_mean.h"
#include "test_pool_mean_grad.h"
#include "test_qmm_int4_g4.h"
#include "test_qmm_int8.h"
#include "test_qmm_int8_huge.h"
#include "test_qmt_int4.h"
#include "test_qmt_int4_g8.h"
#include "test_qmt_int4_rows5.h"
#include "test_qmt_int4_rows8.h"
#include "test_qmt_int8.h"
#include "test_qmt_int8_channel.h"
#include "test_qmt_int8_max.h"
#include "test_qmt_int8_rows2.h"
#include "test_qmt_int8_rows3.h"
#include "test_qmt_int8_rows4.h"
#include "test_qmt_int8_rows8.h"
#include "test_qmv_int4.h"
#include "test_qmv_int4_g6.h"
#include "test_qmv_int4_wide.h"
#include "test_qmv_int8.h"
#include "test_qmv_int8_channel.h"
#include "test_qmv_int8_g24.h"
#include "test_qmv_int8_g4.h"
#include "test_qmv_int8_long.h"
#include "test_qmv_int8_row.h"
#include "test_qmv_int8_wide.h"
#include "test_rmsnorm.h"
#include "test_rmsnorm_grad.h"
#include "test_rope.h"
#include "test_rope_grad.h"
#include "test_rope_wide.h"
#include "test_scale.h"
#include "test_sum_leading.h"
#include "test_sum_squares.h"
#include "test_swiglu.h"
#include "test_swiglu_grad.h"
#include "test_wide_bf16_fused.h"
#include "test_wide_bf16_nn.h"
#include "test_wide_bf16_nt.h"
#include "test_wide_bf16_tn.h"
#include "test_wide_bf16_tn_ragged.h"

#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <type_traits>

namespace {

using Buffer = Halide::Runtime::Buffer<float>;
using Kernel = int (*)(halide_buffer_t *, halide_buffer_t *,
                       halide_buffer_t *);

/// A row-major [rows, cols] matrix of uniform(-1, 1) values.
Buffer random(int rows, int cols, std::mt19937 &rng, float lo = -1.0f,
              float hi = 1.0f) {
  Buffer m(cols, rows); // Halide: dimension 0 is the column
  std::uniform_real_distribution<float> u(lo, hi);
  m.for_each_value([&](float &v) { v = u(rng); });
  return m;
}

/// A copy of `m` rounded to bfloat16 (the reference side of a bf16 kernel).
Buffer roundedBF16(const Buffer &m) {
  Buffer r = m.copy();
  stlm::ref::roundBF16(r.data(), static_cast<int64_t>(r.number_of_elements()));
  return r;
}

/// Runs `kernel` for form `form` and compares it with the reference. With
/// `bf16`, the kernel rounds its inputs to bfloat16 and the reference gets
/// them rounded (reference/Kernels.h roundBF16): the products are then
/// exact, and only the fp32 sums differ.
void check(const char *form, Kernel kernel, int M, int N, int K,
           bool bf16 = false) {
  std::mt19937 rng(M * 131 + N * 7 + K);
  std::string f = form;
  // nt: a [M,K], b [N,K]; nn: a [M,K], b [K,N]; tn: a [K,M], b [K,N].
  Buffer a = f == "tn" ? random(K, M, rng) : random(M, K, rng);
  Buffer b = f == "nt" ? random(N, K, rng) : random(K, N, rng);
  Buffer c(N, M);
  ASSERT_EQ(kernel(a, b, c), 0) << form;
  if (bf16) {
    a = roundedBF16(a);
    b = roundedBF16(b);
  }

  std::vector<float> ref(M * N), scratch(std::max(M, K) * std::max(N, K));
  if (f == "nt") {
    stlm::ref::linear(a.data(), b.data(), M, K, N, ref.data());
  } else if (f == "nn") {
    // dx = dy · W with dy = a [M, K] and W = b [K, N].
    std::vector<float> x(M * N, 0.0f);
    stlm::ref::linearBackward(x.data(), b.data(), M, N, K, a.data(),
                              ref.data(), scratch.data());
  } else {
    // dW = dyᵀ · x with dy = a [K, M] and x = b [K, N].
    std::vector<float> w(M * N, 0.0f);
    stlm::ref::linearBackward(b.data(), w.data(), K, N, M, a.data(),
                              scratch.data(), ref.data());
  }
  double bound = 4.0 * K * std::ldexp(1.0, -24);
  double worst = 0;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j)
      worst = std::max(worst, std::abs(double(c(j, i)) - ref[i * N + j]));
  EXPECT_LE(worst, bound) << form << " " << M << "x" << N << "x" << K;
  // Not vacuous: the result has the reference's magnitude.
  EXPECT_GT(std::abs(ref[0]) + std::abs(ref[N * M - 1]), 1e-3);
}

TEST(HalideMatMul, NTMatchesReferenceLinear) {
  check("nt", test_mm_nt_a, 64, 64, 40);
  check("nt", test_mm_nt_b, 24, 96, 203);
  check("nt", test_mm_nt_c, 21, 50, 37); // off the tile grid
}

TEST(HalideMatMul, NNMatchesReferenceInputGradient) {
  check("nn", test_mm_nn_a, 64, 64, 40);
  check("nn", test_mm_nn_b, 24, 96, 203);
  check("nn", test_mm_nn_c, 21, 50, 37); // off the tile grid
}

TEST(HalideMatMul, TNMatchesReferenceWeightGradient) {
  check("tn", test_mm_tn_a, 64, 64, 40);
  check("tn", test_mm_tn_b, 24, 96, 203);
  check("tn", test_mm_tn_c, 21, 50, 37); // off the tile grid
  // K in parallel chunks: B packed per panel (M <= N), per chunk (M > N).
  check("tn", test_mm_tn_chunks, 64, 96, 2048);
  check("tn", test_mm_tn_chunks_rows, 96, 64, 1024);
}

TEST(HalideMatMul, PanelsOuterWhenPackedBLeavesL2) {
  // Packed B over 256 KiB (100 × 700 floats, or 100 × 1400 bfloat16):
  // per task, each panel against every tile of its rows, off the tile grid
  // and with two tiles of 8 rows per task; then a K so long that the
  // task's block of A (16 rows) would not stay in L2 and the task
  // shrinks to 8 rows.
  check("nt", test_mm_nt_wide, 203, 100, 700);
  check("nn", test_mm_nn_wide, 203, 100, 700);
  check("tn", test_mm_tn_wide, 203, 100, 700);
  check("nn", test_mm_nn_deep, 136, 40, 5200);
  check("nn", test_bf16_nn_wide, 203, 100, 1400, /*bf16=*/true);
  // On the tile grid, the task shrunk from 32 rows to 24, which do not
  // divide 256: the last task is shifted inwards over its neighbour's
  // rows (tn repacks that block of A).
  check("nt", test_mm_nt_shrunk, 256, 64, 3000);
  check("tn", test_mm_tn_shrunk, 256, 64, 3000);
  check("nt", test_bf16_nt_shrunk, 256, 64, 6000, /*bf16=*/true);
}

using FusedKernel = int (*)(halide_buffer_t *, halide_buffer_t *,
                            halide_buffer_t *, halide_buffer_t *);

/// c = gelu(a · bᵀ) + r, off the tile grid (guarded edge tiles).
void checkFused(FusedKernel kernel, bool bf16 = false, int M = 21, int N = 50,
                int K = 37) {
  std::mt19937 rng(5);
  Buffer a = random(M, K, rng), b = random(N, K, rng), r = random(M, N, rng);
  Buffer c(N, M);
  ASSERT_EQ(kernel(a, b, r, c), 0);
  if (bf16) {
    a = roundedBF16(a);
    b = roundedBF16(b);
  }
  std::vector<float> h(M * N), g(M * N);
  stlm::ref::linear(a.data(), b.data(), M, K, N, h.data());
  stlm::ref::gelu(h.data(), M * N, g.data());
  double worst = 0;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j)
      worst = std::max(worst, std::abs(double(c(j, i)) -
                                       (double(g[i * N + j]) + r(j, i))));
  // The dot product's rounding (as above) plus the erfc approximation.
  EXPECT_LE(worst, 4.0 * K * std::ldexp(1.0, -24) + 1e-6);
}

TEST(HalideMatMul, FusedGeluAndResidualEpilogue) {
  checkFused(test_mm_fused);
  checkFused(test_mm_fused_wide, false, 203, 100, 700); // panels outer
}

// The bf16 matmul has two code paths, chosen when the kernel is generated
// by its Halide target (artifacts use `host`, so by the machine that
// compiles): one vdpbf16ps per accumulator where the target has
// avx512_sapphirerapids (avx512_bf16), else the same schedule widening the
// bfloat16 operands to fp32 and multiplying. Each path is generated for an
// explicit target (CMakeLists.txt) and run where the host has its
// instructions; elsewhere its test is skipped, naming the missing feature.

/// The bf16 kernels of one code path (the shapes of CMakeLists.txt).
struct BF16Path {
  const char *name;
  Kernel nt, nn, tn, tnRagged;
  FusedKernel fused;
  const halide_filter_metadata_t *(*metadata)(); // nt's: its target
};

/// The first feature of `features` (name, present) the host lacks, or null.
const char *
missing(std::initializer_list<std::pair<const char *, bool>> features) {
  for (auto [name, present] : features)
    if (!present)
      return name;
  return nullptr;
}

const char *missingForVdpbf16ps() {
  static const std::string gap = stlm::missingForBF16Dot();
  return gap.empty() ? nullptr : gap.c_str();
}

const char *missingForAVX512() {
  return missing({{"avx512f", __builtin_cpu_supports("avx512f")},
                  {"avx512cd", __builtin_cpu_supports("avx512cd")},
                  {"avx512bw", __builtin_cpu_supports("avx512bw")},
                  {"avx512dq", __builtin_cpu_supports("avx512dq")},
                  {"avx512vl", __builtin_cpu_supports("avx512vl")}});
}

const char *missingForAVX2() {
  return missing({{"avx2", __builtin_cpu_supports("avx2")},
                  {"fma", __builtin_cpu_supports("fma")},
                  {"f16c", __builtin_cpu_supports("f16c")}});
}

/// Whether `metadata`'s target is the vdpbf16ps path.
bool usesVdpbf16ps(const halide_filter_metadata_t *metadata) {
  return std::string(metadata->target).find("avx512_sapphirerapids") !=
         std::string::npos;
}

/// Every form (odd K: a padded pair; off the tile grid), the epilogue, and
/// that the kernel rounds: against unrounded inputs it is off by far more
/// than fp32 rounding (about 2⁻⁹ relative per product).
void checkBF16Path(const BF16Path &path, bool vdpbf16ps) {
  SCOPED_TRACE(path.name);
  std::string target = path.metadata()->target;
  EXPECT_EQ(usesVdpbf16ps(path.metadata()), vdpbf16ps) << target;
  std::printf("bf16 path run: %s (target %s)\n", path.name, target.c_str());
  ::testing::Test::RecordProperty("bf16_path", path.name);
  check("nt", path.nt, 21, 50, 37, true);
  check("nn", path.nn, 24, 96, 203, true);
  check("tn", path.tn, 64, 64, 40, true);
  check("tn", path.tnRagged, 21, 50, 37, true);
  checkFused(path.fused, /*bf16=*/true);

  const int M = 21, N = 50, K = 37;
  std::mt19937 rng(M * 131 + N * 7 + K);
  Buffer a = random(M, K, rng), b = random(N, K, rng), c(N, M);
  ASSERT_EQ(path.nt(a, b, c), 0);
  std::vector<float> ref(M * N);
  stlm::ref::linear(a.data(), b.data(), M, K, N, ref.data());
  double worst = 0;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j)
      worst = std::max(worst, std::abs(double(c(j, i)) - ref[i * N + j]));
  EXPECT_GT(worst, 100 * 4.0 * K * std::ldexp(1.0, -24)) << "not rounded";
  EXPECT_LT(worst, 0.05);
}

TEST(HalideBF16, Vdpbf16psPath) {
  if (const char *feature = missingForVdpbf16ps())
    GTEST_SKIP() << "the host has no " << feature
                 << ": the vdpbf16ps path (avx512_sapphirerapids) is not run";
  checkBF16Path({"vdpbf16ps (avx512_sapphirerapids)", test_dpbf_bf16_nt,
                 test_dpbf_bf16_nn, test_dpbf_bf16_tn, test_dpbf_bf16_tn_ragged,
                 test_dpbf_bf16_fused, test_dpbf_bf16_nt_metadata},
                /*vdpbf16ps=*/true);
}

TEST(HalideBF16, WideningFallbackAVX512) {
  if (const char *feature = missingForAVX512())
    GTEST_SKIP() << "the host has no " << feature
                 << ": the AVX-512 widening fallback is not run";
  checkBF16Path({"widening fallback, AVX-512 (no avx512_bf16)",
                 test_wide_bf16_nt, test_wide_bf16_nn, test_wide_bf16_tn,
                 test_wide_bf16_tn_ragged, test_wide_bf16_fused,
                 test_wide_bf16_nt_metadata},
                /*vdpbf16ps=*/false);
}

TEST(HalideBF16, WideningFallbackAVX2) {
  if (const char *feature = missingForAVX2())
    GTEST_SKIP() << "the host has no " << feature
                 << ": the AVX2 widening fallback is not run";
  checkBF16Path({"widening fallback, AVX2", test_avx2_bf16_nt,
                 test_avx2_bf16_nn, test_avx2_bf16_tn,
                 test_avx2_bf16_tn_ragged, test_avx2_bf16_fused,
                 test_avx2_bf16_nt_metadata},
                /*vdpbf16ps=*/false);
}

TEST(HalideBF16, HostTargetPath) {
  // The kernels for `host`, as an artifact built here has them: whichever
  // path this machine's target took (said in the output), and the matvec
  // of generation (rounded inputs, fp32 multiplies on every target).
  bool vdpbf16ps = usesVdpbf16ps(test_bf16_nt_metadata());
  checkBF16Path({vdpbf16ps ? "host: vdpbf16ps" : "host: widening fallback",
                 test_bf16_nt, test_bf16_nn, test_bf16_tn, test_bf16_tn_ragged,
                 test_bf16_fused, test_bf16_nt_metadata},
                vdpbf16ps);
  check("nt", test_bf16_mv, 3, 100, 203, true);
}

/// c = (a · b) ⊙ GELU'(h) (nn: dx of a linear whose input was gelu(h)), off
/// the tile grid.
void checkGeluGradEpilogue(FusedKernel kernel) {
  const int M = 21, N = 50, K = 37;
  std::mt19937 rng(6);
  Buffer a = random(M, K, rng), b = random(K, N, rng),
         h = random(M, N, rng, -3, 3);
  Buffer c(N, M);
  ASSERT_EQ(kernel(a, b, h, c), 0);
  std::vector<float> prod(M * N), hv(M * N), want(M * N);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double sum = 0;
      for (int k = 0; k < K; ++k)
        sum += double(a(k, i)) * b(j, k);
      prod[i * N + j] = float(sum);
      hv[i * N + j] = h(j, i);
    }
  stlm::ref::geluBackward(hv.data(), M * N, prod.data(), want.data());
  double worst = 0;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j)
      worst = std::max(worst, std::abs(double(c(j, i)) - want[i * N + j]));
  EXPECT_LE(worst, 4.0 * K * std::ldexp(1.0, -24) + 1e-6);
  EXPECT_GT(std::abs(want[0]) + std::abs(want[M * N - 1]), 1e-3);
}

TEST(HalideMatMul, GeluGradientEpilogue) {
  checkGeluGradEpilogue(test_mm_gelu_grad);
}

TEST(HalideAVX2, MatMulFormsEpilogueAndMatVec) {
  // The AVX2 schedules (8-float vectors, 16-wide panels), on this host.
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
    GTEST_SKIP() << "the host has no AVX2/FMA";
  check("nt", test_avx2_mm_nt, 21, 50, 37);
  check("nn", test_avx2_mm_nn, 24, 96, 203);
  check("tn", test_avx2_mm_tn, 21, 50, 37);
  checkFused(test_avx2_mm_fused);
  checkGeluGradEpilogue(test_avx2_mm_gelu_grad);
  check("nt", test_avx2_mv, 3, 100, 203);
}

TEST(HalideMatVec, MatchesReferenceLinear) {
  check("nt", test_mv_a, 1, 96, 64);
  check("nt", test_mv_wide, 1, 324, 203); // one row: runs of 4 vectors, a tail
  check("nt", test_mv_b, 3, 100, 203);
  check("nt", test_mv_rows4, 8, 100, 203);
  check("nt", test_mv_rows2, 6, 36, 64);
  check("nt", test_mv_rows16, 16, 68, 48);
}

/// stlm_qmatvec_int8/int4 against support/Quantize.h's matvec, its twin:
/// equal bit for bit (the same integer sums, the same f32 operations in the
/// same order). Rows of `a` include exact halves after scaling (they round
/// away from zero), a zero row, and the weights a zero group. `Tiled`: the
/// stlm_qmatvec_tiled_* kernels, given the weights and scales as
/// support/QuantTiles.h arranges them. `extreme`: row 0 of `a` and weight
/// row 0 all their largest positive value instead (every product at its
/// largest, so a group's sums reach their bound: int8's (q + 128)·x
/// 255 · 127 · group).
template <stlm::quant::Scheme scheme, bool Tiled = false, typename Kernel>
void checkQuantizedMatVec(Kernel kernel, int M, int N, int K, int G,
                          bool extreme = false) {
  SCOPED_TRACE(std::string(Tiled ? "tiled " : "") +
               stlm::quant::schemeName(scheme) + " m=" + std::to_string(M) +
               " n=" + std::to_string(N) + " k=" + std::to_string(K) +
               " group=" + std::to_string(G));
  std::mt19937 rng(M * 1000 + N * 10 + K);
  Buffer wf = random(N, K, rng, -0.05f, 0.05f);
  for (int x = 0; x < G; ++x)
    wf(x, 1) = 0.0f; // row 1's first group
  Buffer a = random(M, K, rng, -3.0f, 3.0f);
  // Row 0: max 127, so s = 1 and a value of 63.5 or -0.5 is a half.
  a(0, 0) = 127.0f;
  a(1 % K, 0) = 63.5f;
  a(2 % K, 0) = -0.5f;
  if (M > 1)
    for (int x = 0; x < K; ++x)
      a(x, M - 1) = 0.0f; // the last row is zero
  // Extremes: row 2 of a is all ±127 once quantized, and weight row 2 all
  // its group's largest magnitude, so that products of 4 reach 4·255·127
  // (int8's q + 128) and nothing may saturate.
  if (M > 3)
    for (int x = 0; x < K; ++x)
      a(x, 2) = x % 3 == 0 ? -3.0f : 3.0f;
  if (N > 2)
    for (int x = 0; x < K; ++x)
      wf(x, 2) = x % 5 == 0 ? -0.05f : 0.05f;
  if (extreme)
    for (int x = 0; x < K; ++x)
      a(x, 0) = 3.0f, wf(x, 0) = 0.05f;
  stlm::quant::QTensor q = stlm::quant::quantize(wf.data(), N, K, {scheme, G});
  Buffer c(N, M);
  constexpr bool int8 = scheme == stlm::quant::Scheme::Int8;
  using Weight = std::conditional_t<int8, int8_t, uint8_t>;
  if constexpr (Tiled) {
    ASSERT_TRUE(stlm::quant::tilesFor(!int8, N, K, G));
    Halide::Runtime::Buffer<Weight> w(static_cast<int>(q.data.size()));
    Halide::Runtime::Buffer<float> scale(static_cast<int>(q.scales.size()));
    stlm::quant::packTiles(!int8, q.data.data(), N, K,
                           reinterpret_cast<uint8_t *>(w.data()));
    stlm::quant::packTileScales(
        reinterpret_cast<const uint8_t *>(q.scales.data()), N, K / G, 4,
        reinterpret_cast<uint8_t *>(scale.data()));
    ASSERT_EQ(kernel(a, w, scale, c), 0);
  } else {
    Buffer scale(K / G, N);
    std::copy(q.scales.begin(), q.scales.end(), scale.data());
    Halide::Runtime::Buffer<Weight> w(int8 ? K : K / 2, N);
    std::memcpy(w.data(), q.data.data(), q.data.size());
    ASSERT_EQ(kernel(a, w, scale, c), 0);
  }
  std::vector<float> y(N);
  int nonzero = 0;
  for (int i = 0; i < M; ++i) {
    stlm::quant::matvec(q, a.data() + i * K, y.data());
    for (int j = 0; j < N; ++j) {
      EXPECT_EQ(c(j, i), y[j]) << "row " << i << ", output " << j;
      nonzero += y[j] != 0.0f;
    }
  }
  EXPECT_GT(nonzero, N / 2); // not vacuous
}

TEST(HalideQuantized, MatVecMatchesTheIntegerReferenceBitForBit) {
  using stlm::quant::Scheme;
  // The byte dot product schedule: groups of 1, 2, 8 and 32 four-byte
  // lanes, several at once or one.
  checkQuantizedMatVec<Scheme::Int8>(test_qmv_int8, 3, 40, 96, 32);
  checkQuantizedMatVec<Scheme::Int8>(test_qmv_int8_wide, 3, 40, 256, 32);
  checkQuantizedMatVec<Scheme::Int8>(test_qmv_int8_g4, 2, 20, 64, 4);
  checkQuantizedMatVec<Scheme::Int8>(test_qmv_int8_row, 1, 17, 128, 128);
  // Groups of 6 lanes (2 at a time) and of 128 (64 at a time).
  checkQuantizedMatVec<Scheme::Int8>(test_qmv_int8_g24, 2, 8, 48, 24);
  checkQuantizedMatVec<Scheme::Int8>(test_qmv_int8_long, 1, 16, 512, 512);
  checkQuantizedMatVec<Scheme::Int4>(test_qmv_int4, 2, 24, 64, 16);
  checkQuantizedMatVec<Scheme::Int4>(test_qmv_int4_wide, 3, 40, 512, 32);
  // The plain schedule: a row that is no whole number of vectors, a
  // group that is no whole number of lanes.
  checkQuantizedMatVec<Scheme::Int8>(test_qmv_int8_channel, 1, 17, 200, 200);
  checkQuantizedMatVec<Scheme::Int4>(test_qmv_int4_g6, 2, 10, 48, 6);
  // Several rows, one after another.
  checkQuantizedMatVec<Scheme::Int8>(test_qmm_int8, 8, 32, 256, 32);
  checkQuantizedMatVec<Scheme::Int4>(test_qmm_int4_g4, 4, 16, 32, 4);
  // A group of 131072 inputs, the most whose int32 sums are exact.
  checkQuantizedMatVec<Scheme::Int8>(test_qmm_int8_huge, 4, 16, 131072, 131072);
}

TEST(HalideQuantized, TiledMatVecMatchesTheIntegerReferenceBitForBit) {
  using stlm::quant::Scheme;
  // One row (decode), and rows in tiles of 8, 4, 2 and 1 (an odd count).
  checkQuantizedMatVec<Scheme::Int8, true>(test_qmt_int8, 1, 48, 256, 32);
  checkQuantizedMatVec<Scheme::Int8, true>(test_qmt_int8, 1, 48, 256, 32,
                                           /*extreme=*/true);
  checkQuantizedMatVec<Scheme::Int8, true>(test_qmt_int8_rows8, 8, 32, 256, 32);
  checkQuantizedMatVec<Scheme::Int8, true>(test_qmt_int8_rows4, 12, 48, 96, 32);
  checkQuantizedMatVec<Scheme::Int8, true>(test_qmt_int8_rows2, 6, 16, 64, 4);
  checkQuantizedMatVec<Scheme::Int8, true>(test_qmt_int8_rows3, 3, 32, 96, 32);
  // A scale per output; the largest group whose (q + 128)·x sums are
  // exact in int32.
  checkQuantizedMatVec<Scheme::Int8, true>(test_qmt_int8_channel, 1, 16, 512,
                                           512);
  checkQuantizedMatVec<Scheme::Int8, true>(test_qmt_int8_max, 4, 16, 65536,
                                           65536, /*extreme=*/true);
  checkQuantizedMatVec<Scheme::Int4, true>(test_qmt_int4, 1, 32, 256, 32);
  checkQuantizedMatVec<Scheme::Int4, true>(test_qmt_int4, 1, 32, 256, 32,
                                           /*extreme=*/true);
  checkQuantizedMatVec<Scheme::Int4, true>(test_qmt_int4_rows8, 8, 16, 128, 16);
  checkQuantizedMatVec<Scheme::Int4, true>(test_qmt_int4_g8, 2, 16, 64, 8);
  checkQuantizedMatVec<Scheme::Int4, true>(test_qmt_int4_rows5, 5, 48, 512, 64);
}

TEST(HalideQuantized, TilesArrangeAndRestoreTheWeights) {
  // Each byte lands where tileOffset says, int8 + 128 and int4's inputs
  // 8kk + b and 8kk + 4 + b in one byte; unpacking restores the rows.
  using namespace stlm::quant;
  std::mt19937 rng(5);
  for (bool int4 : {false, true}) {
    const int64_t out = 32, in = 64, bytes = out * (int4 ? in / 2 : in);
    std::vector<uint8_t> rows(bytes), tiles(bytes), back(bytes, 0xA5);
    for (uint8_t &b : rows)
      b = static_cast<uint8_t>(rng());
    packTiles(int4, rows.data(), out, in, tiles.data());
    for (int64_t o = 0; o < out; ++o)
      for (int64_t x = 0; x < in; ++x) {
        int64_t kk = x / tileInputs(int4), b = x % 4;
        uint8_t tile = tiles[tileOffset(int4, in, o, kk, b)];
        if (!int4) {
          EXPECT_EQ(static_cast<int>(tile),
                    static_cast<int8_t>(rows[o * in + x]) + 128);
          continue;
        }
        int nibble = (rows[o * (in / 2) + x / 2] >> (4 * (x % 2))) & 15;
        EXPECT_EQ((tile >> (x % 8 < 4 ? 0 : 4)) & 15, nibble)
            << "output " << o << ", input " << x;
      }
    unpackTiles(int4, tiles.data(), out, in, back.data());
    EXPECT_EQ(back, rows);
  }
  std::vector<float> scales(48 * 3), tiled(scales.size()), again(scales.size());
  for (size_t i = 0; i < scales.size(); ++i)
    scales[i] = static_cast<float>(i);
  packTileScales(reinterpret_cast<uint8_t *>(scales.data()), 48, 3, 4,
                 reinterpret_cast<uint8_t *>(tiled.data()));
  EXPECT_EQ(tiled[16 * 2 + 5], scales[5 * 3 + 2]);   // output 5, group 2
  EXPECT_EQ(tiled[48 + 16 + 1], scales[17 * 3 + 1]); // output 17, group 1
  unpackTileScales(reinterpret_cast<uint8_t *>(tiled.data()), 48, 3, 4,
                   reinterpret_cast<uint8_t *>(again.data()));
  EXPECT_EQ(again, scales);
  EXPECT_TRUE(tilesFor(false, 32, 96, 4));
  EXPECT_FALSE(tilesFor(false, 24, 96, 32));         // outputs not whole blocks
  EXPECT_FALSE(tilesFor(true, 32, 96, 4));           // int4 columns of 8 inputs
  EXPECT_FALSE(tilesFor(false, 16, 131072, 131072)); // int32 would overflow
}

TEST(HalideAVX2, QuantizedMatVec) {
  // Without VNNI (no vpdpbusd): widening multiply-adds, which must not
  // saturate (row 2 of the 8-row case is all ±127 against ±127 weights).
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
    GTEST_SKIP() << "the host has no AVX2/FMA";
  using stlm::quant::Scheme;
  checkQuantizedMatVec<Scheme::Int8>(test_avx2_qmm_int8, 8, 32, 256, 32);
  checkQuantizedMatVec<Scheme::Int8>(test_avx2_qmv_int8, 3, 40, 256, 32);
  checkQuantizedMatVec<Scheme::Int4>(test_avx2_qmv_int4, 3, 40, 512, 32);
  checkQuantizedMatVec<Scheme::Int8, true>(test_avx2_qmt_int8, 8, 32, 256, 32);
  checkQuantizedMatVec<Scheme::Int4, true>(test_avx2_qmt_int4, 1, 32, 256, 32);
}

std::string lastHalideError;

TEST(HalideMatMul, RefusesMisalignedBuffers) {
  halide_error_handler_t previous =
      halide_set_error_handler([](void *, const char *msg) {
        lastHalideError = msg;
      });
  std::vector<float> storage(64 * 40 + 1);
  Buffer a(storage.data() + 1, 40, 64); // 4 bytes past an aligned start
  std::mt19937 rng(2);
  Buffer b = random(64, 40, rng), c(64, 64);
  if (reinterpret_cast<uintptr_t>(a.data()) % 64 != 0) {
    EXPECT_NE(test_mm_nt_a(a, b, c), 0);
    EXPECT_NE(lastHalideError.find("aligned"), std::string::npos)
        << lastHalideError;
  }
  halide_set_error_handler(previous);
}

TEST(HalideMatMul, RejectsBuffersOfTheWrongShape) {
  // Errors come back as a status and a message, not an abort.
  halide_error_handler_t previous =
      halide_set_error_handler([](void *, const char *msg) {
        lastHalideError = msg;
      });
  std::mt19937 rng(1);
  Buffer a = random(64, 41, rng), b = random(64, 40, rng), c(64, 64);
  // The kernel is specialised to k = 40; a 41-wide a is refused.
  EXPECT_NE(test_mm_nt_a(a, b, c), 0);
  EXPECT_NE(lastHalideError.find("a.extent.0 (41) == 40"), std::string::npos)
      << lastHalideError;
  halide_set_error_handler(previous);
}

/// n uniform(lo, hi) floats.
std::vector<float> uniform(int n, float lo, float hi, std::mt19937 &rng) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float &x : v)
    x = u(rng);
  return v;
}

/// An aligned Halide buffer (kernels require 64-byte alignment) with the
/// given extents (dimension 0 fastest) holding `v`, row-major.
template <typename T>
Halide::Runtime::Buffer<T> in(const std::vector<T> &v,
                              std::vector<int> extents) {
  Halide::Runtime::Buffer<T> b(extents);
  EXPECT_EQ(b.number_of_elements(), v.size());
  std::memcpy(b.data(), v.data(), v.size() * sizeof(T));
  return b;
}
template <typename T> Halide::Runtime::Buffer<T> in(const std::vector<T> &v) {
  return in(v, {int(v.size())});
}
/// The contents of a dense buffer, row-major.
std::vector<float> out(const Buffer &b) {
  return std::vector<float>(b.data(), b.data() + b.number_of_elements());
}

/// Every |got − want| ≤ tol · (1 + |want|).
void expectClose(const std::vector<float> &got, const std::vector<float> &want,
                 double tol, const char *what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double e = std::abs(double(got[i]) - want[i]) / (1 + std::abs(want[i]));
    if (e > worst)
      worst = e, at = i;
  }
  EXPECT_LE(worst, tol) << what << ": element " << at << " is " << got[at]
                        << ", reference " << want[at];
}

TEST(HalideElementwise, SwiGLUAndGradient) {
  std::mt19937 rng(3);
  const int n = 40001;
  auto g = uniform(n, -6, 6, rng), u = uniform(n, -2, 2, rng),
       dy = uniform(n, -1, 1, rng);
  std::vector<float> ry(n), rdg(n), rdu(n);
  Buffer y(n), dg(n), du(n);
  ASSERT_EQ(test_swiglu(in(g), in(u), y), 0);
  stlm::ref::swiglu(g.data(), u.data(), n, ry.data());
  expectClose(out(y), ry, 1e-6, "swiglu");
  ASSERT_EQ(test_swiglu_grad(in(g), in(u), in(dy), dg, du), 0);
  stlm::ref::swigluBackward(g.data(), u.data(), n, dy.data(), rdg.data(),
                            rdu.data());
  expectClose(out(dg), rdg, 1e-6, "swiglu dgate");
  expectClose(out(du), rdu, 1e-6, "swiglu dup");
}

TEST(HalideElementwise, GELUAndGradient) {
  std::mt19937 rng(4);
  const int n = 40001;
  auto x = uniform(n, -9, 6, rng), dy = uniform(n, -1, 1, rng);
  std::vector<float> ry(n), rdx(n);
  Buffer y(n), dx(n);
  ASSERT_EQ(test_gelu(in(x), y), 0);
  stlm::ref::gelu(x.data(), n, ry.data());
  expectClose(out(y), ry, 1e-6, "gelu"); // erf approximation: 1.5e-7
  ASSERT_EQ(test_gelu_grad(in(x), in(dy), dx), 0);
  stlm::ref::geluBackward(x.data(), n, dy.data(), rdx.data());
  expectClose(out(dx), rdx, 2e-6, "gelu grad");
  // The negative tail keeps its relative accuracy (no 1 − erf cancellation):
  // within 1 % down to x = −7, the A&S formula's own accuracy there (it was
  // 4 % off at −5 and 0 instead of −6e-9 at −6 through 1 − erf).
  std::vector<float> tail = {-4.0f, -5.0f, -6.0f, -7.0f};
  std::vector<float> rt(tail.size());
  Buffer ty(n);
  std::vector<float> padded(n, 0.0f);
  std::copy(tail.begin(), tail.end(), padded.begin());
  ASSERT_EQ(test_gelu(in(padded), ty), 0);
  stlm::ref::gelu(tail.data(), int(tail.size()), rt.data());
  for (size_t i = 0; i < tail.size(); ++i)
    EXPECT_NEAR(ty(int(i)) / rt[i], 1.0, 1e-2) << "gelu(" << tail[i] << ")";
}

TEST(HalideElementwise, AdamWMatchesReference) {
  std::mt19937 rng(5);
  const int n = 40001;
  auto p = uniform(n, -1, 1, rng), g = uniform(n, -1, 1, rng),
       m = uniform(n, -0.1f, 0.1f, rng), v = uniform(n, 0, 0.01f, rng);
  Buffer np(n), nm(n), nv(n);
  for (int step : {1, 7, 1500}) {
    ASSERT_EQ(test_adamw(in(p), in(g), in(m), in(v), 3e-3f, 0.1f, step, np,
                         nm, nv),
              0);
    std::vector<float> rp = p, rm = m, rv = v;
    stlm::ref::adamw(rp.data(), g.data(), rm.data(), rv.data(), n, 3e-3f, step,
                     0.9, 0.95, 1e-8, 0.1);
    expectClose(out(np), rp, 1e-6, "adamw p");
    expectClose(out(nm), rm, 1e-6, "adamw m");
    expectClose(out(nv), rv, 1e-6, "adamw v");
  }
}

TEST(HalideElementwise, AddScaleAndReductions) {
  std::mt19937 rng(10);
  const int n = 40000, m = 20;
  auto x = uniform(n, -1, 1, rng), r = uniform(m, -1, 1, rng);
  Buffer y(n);
  ASSERT_EQ(test_add(in(x), in(r), y), 0);
  std::vector<float> want(n);
  for (int i = 0; i < n; ++i)
    want[i] = x[i] + r[i % m];
  expectClose(out(y), want, 0, "add with a repeated operand");

  auto z = uniform(40001, -1, 1, rng);
  Buffer zs(40001);
  ASSERT_EQ(test_scale(in(z), -0.25f, zs), 0);
  for (size_t i = 0; i < z.size(); ++i)
    z[i] *= -0.25f;
  expectClose(out(zs), z, 0, "scale");

  Halide::Runtime::Buffer<double> sq = Halide::Runtime::Buffer<double>::make_scalar();
  ASSERT_EQ(test_sum_squares(in(z), sq), 0);
  double wantSq = 0;
  for (float v : z)
    wantSq += double(v) * v;
  EXPECT_NEAR(sq(), wantSq, 1e-9 * wantSq);

  const int R = 37, W = 20;
  auto g = uniform(R * W, -1, 1, rng);
  Buffer s(W);
  ASSERT_EQ(test_sum_leading(in(g), s), 0);
  std::vector<float> ws(W);
  stlm::ref::sumLeading(g.data(), R, W, ws.data());
  expectClose(out(s), ws, 1e-6, "sum_leading");
}

TEST(HalideLayers, RMSNormAndGradient) {
  std::mt19937 rng(6);
  const int R = 40, D = 20;
  auto x = uniform(R * D, -2, 2, rng), g = uniform(D, 0.5f, 1.5f, rng),
       dy = uniform(R * D, -1, 1, rng);
  std::vector<float> ry(R * D), rdx(R * D), rdg(D);
  Buffer y(D, R), dx(D, R), dg(D);
  ASSERT_EQ(test_rmsnorm(in(x, {D, R}), in(g), y), 0);
  stlm::ref::rmsnorm(x.data(), g.data(), R, D, 1e-5, ry.data());
  expectClose(out(y), ry, 2e-6, "rmsnorm");
  ASSERT_EQ(test_rmsnorm_grad(in(x, {D, R}), in(g), in(dy, {D, R}), dx, dg), 0);
  stlm::ref::rmsnormBackward(x.data(), g.data(), R, D, 1e-5, dy.data(),
                             rdx.data(), rdg.data());
  expectClose(out(dx), rdx, 5e-6, "rmsnorm dx");
  expectClose(out(dg), rdg, 5e-6, "rmsnorm dg");
}

TEST(HalideLayers, RoPEAndInverseAtOffsets) {
  std::mt19937 rng(7);
  const int B = 2, T = 5, W = 40, hd = 8;
  auto x = uniform(B * T * W, -1, 1, rng);
  for (int offset : {0, 3, 200}) {
    std::vector<float> ry(x.size()), rdx(x.size());
    Buffer y(W, T, B), dx(W, T, B);
    ASSERT_EQ(test_rope(in(x, {W, T, B}), offset, y), 0);
    stlm::ref::rope(x.data(), B, T, W, hd, 10000.0, offset, ry.data());
    expectClose(out(y), ry, 1e-6, "rope");
    ASSERT_EQ(test_rope_grad(in(x, {W, T, B}), offset, dx), 0);
    stlm::ref::ropeBackward(x.data(), B, T, W, hd, 10000.0, offset,
                            rdx.data());
    expectClose(out(dx), rdx, 1e-6, "rope inverse");
    if (offset == 3) {
      // Offset 0 takes its angles from the kernel's table, other offsets
      // compute them: the same positions (3 + t here, t there) must give
      // the same bits, given the same inputs.
      std::vector<float> shifted(x.size());
      for (int b = 0; b < B; ++b)
        for (int t = 0; t + 3 < T; ++t)
          for (int w = 0; w < W; ++w)
            shifted[(b * T + t + 3) * W + w] = x[(b * T + t) * W + w];
      Buffer ys(W, T, B), dxs(W, T, B);
      ASSERT_EQ(test_rope(in(shifted, {W, T, B}), 0, ys), 0);
      ASSERT_EQ(test_rope_grad(in(shifted, {W, T, B}), 0, dxs), 0);
      std::vector<float> a = out(y), ad = out(dx), s = out(ys), sd = out(dxs);
      for (int b = 0; b < B; ++b)
        for (int t = 0; t + 3 < T; ++t)
          for (int w = 0; w < W; ++w) {
            int i = (b * T + t) * W + w, j = (b * T + t + 3) * W + w;
            ASSERT_EQ(a[i], s[j]) << "rope at position " << t + 3;
            ASSERT_EQ(ad[i], sd[j]) << "rope inverse at position " << t + 3;
          }
    }
  }
  // Whole vectors of columns (no tail), several heads.
  const int W2 = 64, hd2 = 16;
  auto x2 = uniform(B * T * W2, -1, 1, rng);
  std::vector<float> ry2(x2.size());
  Buffer y2(W2, T, B);
  ASSERT_EQ(test_rope_wide(in(x2, {W2, T, B}), 5, y2), 0);
  stlm::ref::rope(x2.data(), B, T, W2, hd2, 10000.0, 5, ry2.data());
  expectClose(out(y2), ry2, 1e-6, "rope (whole vectors)");
}

TEST(HalideLayers, EmbeddingGatherAndScatter) {
  std::mt19937 rng(8);
  const int V = 20, D = 24, N = 30;
  auto table = uniform(V * D, -1, 1, rng), dy = uniform(N * D, -1, 1, rng);
  std::vector<int32_t> ids(N);
  for (int32_t &i : ids)
    i = static_cast<int32_t>(rng() % 7); // repeats: the scatter must add
  std::vector<float> ref(N * D), rdt(V * D);
  Buffer o(D, N), dt(D, V);
  ASSERT_EQ(test_embed(in(table, {D, V}), in(ids), o), 0);
  ASSERT_TRUE(stlm::ref::embed(table.data(), V, D, ids.data(), N, ref.data()));
  expectClose(out(o), ref, 0, "embed");
  ASSERT_EQ(test_embed_grad(in(ids), in(dy, {D, N}), dt), 0);
  stlm::ref::embedBackward(ids.data(), N, V, D, dy.data(), rdt.data());
  expectClose(out(dt), rdt, 1e-6, "embed scatter-add");
}

TEST(HalideLayers, CrossEntropyAndGradient) {
  std::mt19937 rng(9);
  const int P = 30, V = 37;
  auto logits = uniform(P * V, -4, 4, rng);
  std::vector<int32_t> targets(P);
  for (int32_t &t : targets)
    t = static_cast<int32_t>(rng() % V);
  Buffer lb = in(logits, {V, P});
  Halide::Runtime::Buffer<int32_t> tb = in(targets);
  for (int pattern = 0; pattern < 3; ++pattern) {
    // All counted; every other row; none (loss and gradient 0).
    std::vector<uint8_t> counted(P);
    std::unique_ptr<bool[]> c(new bool[P]);
    for (int p = 0; p < P; ++p)
      c[p] = counted[p] = pattern == 0 || (pattern == 1 && p % 2 == 0);
    Halide::Runtime::Buffer<uint8_t> cb = in(counted);
    Halide::Runtime::Buffer<float> loss = Halide::Runtime::Buffer<float>::make_scalar();
    ASSERT_EQ(test_ce(lb, tb, cb, loss), 0);
    float ref = 0;
    ASSERT_TRUE(stlm::ref::crossEntropy(logits.data(), targets.data(), c.get(),
                                        P, V, &ref));
    expectClose({loss()}, {ref}, 1e-6, "cross-entropy");
    std::vector<float> rd(P * V);
    Buffer db(V, P);
    ASSERT_EQ(test_ce_grad(lb, tb, cb, 0.75f, db), 0);
    stlm::ref::crossEntropyBackward(logits.data(), targets.data(), c.get(), P,
                                    V, 0.75f, rd.data());
    expectClose(out(db), rd, 1e-6, "cross-entropy grad");
  }
}

TEST(HalideLayers, DistillationAndGradient) {
  // Teacher rows from sharp to flat, one with a logit far below the others
  // (its probability underflows: 0 · log 0 adds nothing).
  std::mt19937 rng(12);
  const int P = 37, V = 100;
  const double tau = 2.5, alpha = 0.3;
  auto logits = uniform(P * V, -4, 4, rng);
  auto teacher = uniform(P * V, -4, 4, rng);
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v)
      teacher[p * V + v] *= 0.25f + 0.25f * (p % 8);
  teacher[5 * V + 3] = -1e4f;
  std::vector<int32_t> targets(P);
  for (int32_t &t : targets)
    t = static_cast<int32_t>(rng() % V);
  Buffer lb = in(logits, {V, P}), tb = in(teacher, {V, P});
  Halide::Runtime::Buffer<int32_t> yb = in(targets);
  Halide::Runtime::Buffer<float> loss =
      Halide::Runtime::Buffer<float>::make_scalar();
  ASSERT_EQ(test_distill(lb, tb, yb, loss), 0);
  float ref = 0;
  ASSERT_TRUE(stlm::ref::distill(logits.data(), teacher.data(), targets.data(),
                                 P, V, tau, alpha, &ref));
  expectClose({loss()}, {ref}, 1e-6, "distillation");
  EXPECT_GT(ref, 0.1f); // not vacuous: both terms are large
  Buffer db(V, P);
  ASSERT_EQ(test_distill_grad(lb, tb, yb, 0.75f, db), 0);
  std::vector<float> rd(P * V);
  stlm::ref::distillBackward(logits.data(), teacher.data(), targets.data(), P,
                             V, tau, alpha, 0.75f, rd.data());
  expectClose(out(db), rd, 1e-6, "distillation grad");
}

TEST(HalideKernels, MaskTokensMatchesTheReferenceBitForBit) {
  const int N = 1001; // not a multiple of the vector width
  std::mt19937 rng(11);
  std::vector<int32_t> ids(N);
  for (int32_t &t : ids)
    t = static_cast<int32_t>(rng() % 256);
  Halide::Runtime::Buffer<int32_t> ib = in(ids);
  for (int32_t seed : {0, 1, -1, 1337, INT32_MAX, INT32_MIN}) {
    Halide::Runtime::Buffer<int32_t> mb(N);
    Halide::Runtime::Buffer<uint8_t> kb(N);
    ASSERT_EQ(test_mask(ib, seed, mb, kb), 0);
    std::vector<int32_t> masked(N);
    std::unique_ptr<bool[]> mask(new bool[N]);
    stlm::ref::maskTokens(ids.data(), N, seed, 0.3, 7, masked.data(),
                          mask.get());
    int hits = 0;
    for (int i = 0; i < N; ++i) {
      ASSERT_EQ(kb(i), mask[i] ? 1 : 0) << "seed " << seed << " at " << i;
      ASSERT_EQ(mb(i), masked[i]) << "seed " << seed << " at " << i;
      hits += mask[i];
    }
    // About 30 % of the positions (a wrong variate is far off).
    EXPECT_GT(hits, 240) << "seed " << seed;
    EXPECT_LT(hits, 360) << "seed " << seed;
  }
}

/// Rows of word-like bytes: letters, spaces, punctuation, a control byte
/// and UTF-8 (bytes >= 128 never open a chunk), so chunks end at
/// separators, are cut at L and leave pad slots.
std::vector<int32_t> wordBytes(int n, std::mt19937 &rng) {
  std::vector<int32_t> v(n);
  for (int32_t &x : v) {
    unsigned r = rng() % 100;
    x = r < 14   ? ' '
        : r < 17 ? ",.;"[r - 14]
        : r < 18 ? 1 // a control byte separates too
        : r < 24 ? 0xc3 + (r % 2) * 0x1c // UTF-8 lead/continuation-like
        : r < 30 ? '0' + r % 10
                 : 'a' + r % 26;
  }
  return v;
}

TEST(HalideChunks, ChunkingMatchesTheReference) {
  std::mt19937 rng(21);
  const int B = 3, N = 61;
  using IBuf = Halide::Runtime::Buffer<int32_t>;
  using stlm::ref::ChunkMode;
  for (ChunkMode mode :
       {ChunkMode::Words, ChunkMode::Fixed, ChunkMode::Given}) {
    bool fixed = mode == ChunkMode::Fixed;
    const char *name = fixed                      ? "fixed"
                       : mode == ChunkMode::Words ? "words"
                                                  : "given";
    const int C = fixed ? 21 : 14, L = fixed ? 4 : 5;
    for (int round = 0; round < 4; ++round) {
      std::vector<int32_t> bytes = wordBytes(B * N, rng);
      if (round == 3) // one long word: cut every L bytes, capacity spent
        std::fill(bytes.begin(), bytes.begin() + N, 'x');
      if (mode == ChunkMode::Given) // starts where an outside rule put them
        for (int32_t &x : bytes)
          if (rng() % 4 == 0)
            x += stlm::ref::kChunkStartFlag;
      if (round == 2) { // rows that end early (256): mid-row, and at once
        std::fill(bytes.begin() + N + 30, bytes.begin() + 2 * N, 256);
        bytes[N + 40] = 'q'; // after the end: not read
        std::fill(bytes.begin() + 2 * N, bytes.end(), 256);
      }
      IBuf chunks(L, C, B), count(B);
      int rc = mode == ChunkMode::Fixed
                   ? test_chunk_fixed(in(bytes, {N, B}), chunks, count)
               : mode == ChunkMode::Words
                   ? test_chunk_words(in(bytes, {N, B}), chunks, count)
                   : test_chunk_given(in(bytes, {N, B}), chunks, count);
      ASSERT_EQ(rc, 0);
      std::vector<int32_t> want(B * C * L), wantCount(B);
      ASSERT_TRUE(stlm::ref::chunk(mode, bytes.data(), B, N, 3, C, L,
                                   want.data(), wantCount.data()));
      for (int b = 0; b < B; ++b) {
        ASSERT_EQ(count(b), wantCount[b]) << "row " << b << " round " << round;
        for (int c = 0; c < C; ++c)
          for (int s = 0; s < L; ++s)
            ASSERT_EQ(chunks(s, c, b), want[(b * C + c) * L + s])
                << name << " row " << b << " chunk " << c << " slot " << s
                << " round " << round;
      }
      // Not vacuous: chunks of several sizes, pads, and (words, given,
      // with C < N) a row that ran out of capacity.
      int pads = 0;
      for (int i = 0; i < B * C * L; ++i)
        pads += want[i] == 256;
      EXPECT_GT(pads, 0);
    }
  }
}

TEST(HalideChunks, PoolingAndGradients) {
  std::mt19937 rng(22);
  const int R = 11, L = 6, D = 20;
  auto x = uniform(R * L * D, -1, 1, rng), dy = uniform(R * D, -1, 1, rng);
  // Ties: in row 0 two slots hold the same values (max picks the first).
  std::copy(x.begin(), x.begin() + D, x.begin() + 3 * D);
  std::vector<int32_t> ids(R * L);
  for (int r = 0; r < R; ++r)
    for (int s = 0; s < L; ++s) // row r holds r % (L + 1) bytes, then pad
      ids[r * L + s] = s < r % (L + 1) ? 'a' + s : 256;
  Buffer xb = in(x, {D, L, R}), dyb = in(dy, {D, R});
  Halide::Runtime::Buffer<int32_t> ib = in(ids, {L, R});
  using PoolKind = stlm::ref::PoolKind;
  for (PoolKind kind : {PoolKind::Mean, PoolKind::Max, PoolKind::MaskedMean}) {
    const int32_t *refIds = kind == PoolKind::MaskedMean ? ids.data() : nullptr;
    Buffer y(D, R), dx(D, L, R);
    int fwd = kind == PoolKind::Mean  ? test_pool_mean(xb, y)
              : kind == PoolKind::Max ? test_pool_max(xb, y)
                                      : test_pool_masked(xb, ib, y);
    int bwd = kind == PoolKind::Mean  ? test_pool_mean_grad(xb, dyb, dx)
              : kind == PoolKind::Max ? test_pool_max_grad(xb, dyb, dx)
                                      : test_pool_masked_grad(ib, dyb, dx);
    ASSERT_EQ(fwd, 0);
    ASSERT_EQ(bwd, 0);
    std::vector<float> ry(R * D), rdx(R * L * D);
    stlm::ref::pool(kind, x.data(), refIds, R, L, D, ry.data());
    stlm::ref::poolBackward(kind, x.data(), refIds, R, L, D, dy.data(),
                            rdx.data());
    const char *name = kind == PoolKind::Mean  ? "mean"
                       : kind == PoolKind::Max ? "max"
                                               : "masked mean";
    expectClose(out(y), ry, 1e-6, name);
    expectClose(out(dx), rdx, 1e-6, name);
  }
}

TEST(HalideChunks, ChunkObjectivesMatchTheReference) {
  // Logits [B, C, L, 258] against chunk targets (ref::chunkTargets) and the
  // plain cross-entropy: next chunk with end markers, the chunk itself
  // with and without pads counted; counts that stop early, one of 0.
  std::mt19937 rng(23);
  const int B = 2, C = 7, L = 6, V = 258, P = B * C * L;
  auto logits = uniform(P * V, -4, 4, rng);
  std::vector<int32_t> chunks(P, 256);
  for (int c = 0; c < B * C; ++c)
    for (int s = 0; s < 1 + int(rng() % L); ++s) // full chunks too
      chunks[c * L + s] = 'a' + int(rng() % 26);
  Buffer lb = in(logits, {V, P});
  Halide::Runtime::Buffer<int32_t> cb = in(chunks);
  using ChunkCE = int (*)(halide_buffer_t *, halide_buffer_t *,
                          halide_buffer_t *, halide_buffer_t *);
  using ChunkCEGrad = int (*)(halide_buffer_t *, halide_buffer_t *,
                              halide_buffer_t *, float, halide_buffer_t *);
  struct Case {
    ChunkCE loss;
    ChunkCEGrad grad;
    bool next, maskPad;
  };
  for (const Case &k : {Case{test_chunk_ce_next, test_chunk_ce_next_grad,
                             true, true},
                        Case{test_chunk_ce_self, test_chunk_ce_self_grad,
                             false, false},
                        Case{test_chunk_ce_self_masked, nullptr, false,
                             true}})
    for (std::vector<int32_t> count : {std::vector<int32_t>{C, C},
                                       std::vector<int32_t>{4, 0}}) {
      std::vector<int32_t> targets(P);
      std::vector<uint8_t> counted(P);
      stlm::ref::chunkTargets(chunks.data(), B, C, L, count.data(), k.next,
                              k.maskPad, targets.data(), counted.data());
      std::unique_ptr<bool[]> c(new bool[P]);
      int n = 0;
      for (int p = 0; p < P; ++p)
        n += c[p] = counted[p];
      EXPECT_GT(n, 0);
      float ref = 0;
      ASSERT_TRUE(stlm::ref::crossEntropy(logits.data(), targets.data(),
                                          c.get(), P, V, &ref));
      auto loss = Halide::Runtime::Buffer<float>::make_scalar();
      ASSERT_EQ(k.loss(lb, cb, in(count), loss), 0);
      std::string what = std::string(k.next ? "next" : "self") +
                         (k.maskPad ? ", pads masked" : ", pads counted") +
                         ", count " + std::to_string(count[1]);
      expectClose({loss()}, {ref}, 1e-6, what.c_str());
      if (!k.grad)
        continue;
      std::vector<float> rd(P * V);
      Buffer db(V, P);
      ASSERT_EQ(k.grad(lb, cb, in(count), 0.75f, db), 0);
      stlm::ref::crossEntropyBackward(logits.data(), targets.data(), c.get(),
                                      P, V, 0.75f, rd.data());
      expectClose(out(db), rd, 1e-6, (what + " grad").c_str());
    }
}

using AttnFwd = int (*)(halide_buffer_t *, halide_buffer_t *,
                        halide_buffer_t *, int32_t, halide_buffer_t *);
using AttnBwd = int (*)(halide_buffer_t *, halide_buffer_t *,
                        halide_buffer_t *, halide_buffer_t *, int32_t,
                        halide_buffer_t *, halide_buffer_t *,
                        halide_buffer_t *);

/// Attention forward and backward against the reference at `offset`.
void checkAttention(AttnFwd fwd, AttnBwd bwd, bool causal, int B, int T,
                    int S, int H, int K, int hd, int offset) {
  std::mt19937 rng(B * 100 + T * 10 + offset + 50);
  int W = H * hd, WK = K * hd;
  auto q = uniform(B * T * W, -1, 1, rng), k = uniform(B * S * WK, -1, 1, rng),
       v = uniform(B * S * WK, -1, 1, rng), dy = uniform(B * T * W, -1, 1, rng);
  std::vector<float> ry(q.size()), rdq(q.size()), rdk(k.size()),
      rdv(v.size());
  Buffer y(W, T, B), dq(W, T, B), dk(WK, S, B), dv(WK, S, B);
  ASSERT_EQ(fwd(in(q, {W, T, B}), in(k, {WK, S, B}), in(v, {WK, S, B}), offset,
                y),
            0);
  stlm::ref::attention(causal, q.data(), k.data(), v.data(), B, T, S, H, K,
                       hd, offset, ry.data());
  std::string what = std::string(causal ? "causal" : "none") + " attention, "
                     "offset " + std::to_string(offset);
  expectClose(out(y), ry, 2e-6, (what + ": y").c_str());
  ASSERT_EQ(bwd(in(q, {W, T, B}), in(k, {WK, S, B}), in(v, {WK, S, B}),
                in(dy, {W, T, B}), offset, dq, dk, dv),
            0);
  stlm::ref::attentionBackward(causal, q.data(), k.data(), v.data(), B, T, S,
                               H, K, hd, offset, dy.data(), rdq.data(),
                               rdk.data(), rdv.data());
  expectClose(out(dq), rdq, 5e-6, (what + ": dq").c_str());
  expectClose(out(dk), rdk, 5e-6, (what + ": dk").c_str());
  expectClose(out(dv), rdv, 5e-6, (what + ": dv").c_str());
}

TEST(HalideAttention, CausalGroupedHeadsAtEveryOffset) {
  // 4 query heads over 2 kv heads, 21 queries (two blocks of 16) against 23
  // keys: the plain offset S − T, a partly filled cache, and queries that
  // see no key.
  for (int offset : {2, 0, -5})
    checkAttention(test_attn_causal, test_attn_causal_grad, true, 2, 21, 23, 4,
                   2, 8, offset);
}

TEST(HalideAttention, RegisterTiledBlocks) {
  // Whole blocks of 16 queries and keys in tiles of 32 (the schedule of
  // training shapes), with a cache offset and the plain S − T.
  for (int offset : {32, 7, 0})
    checkAttention(test_attn_tiled, test_attn_tiled_grad, true, 2, 32, 64, 2,
                   1, 32, offset);
}

TEST(HalideAVX2, AttentionRegisterTiles) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
    GTEST_SKIP() << "the host has no AVX2/FMA";
  for (int offset : {32, 7, 0})
    checkAttention(test_avx2_attn, test_avx2_attn_grad, true, 2, 32, 64, 2, 1,
                   32, offset);
  for (int offset : {32, 7, 0})
    checkAttention(test_avx2_attn, test_avx2_attn_grad_blocked, true, 2, 32,
                   64, 2, 1, 32, offset);
  // A decode step on 8-float vectors: heads of two.
  for (int offset : {0, 7, 8, 39})
    checkAttention(test_avx2_attn_decode, test_avx2_attn_decode_grad, true, 2,
                   1, 40, 4, 2, 16, offset);
}

TEST(HalideAttention, BatchwiseBackward) {
  // As many queries as keys, a kv head per query head: the materialised
  // backward one batch element at a time (training's shape), with the
  // plain offset and a partly visible one.
  for (int offset : {0, 5, -3})
    checkAttention(test_attn_square, test_attn_square_grad, true, 2, 48, 48, 2,
                   2, 32, offset);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    for (int offset : {0, 5})
      checkAttention(test_attn_square, test_avx2_attn_square_grad, true, 2, 48,
                     48, 2, 2, 32, offset);
}

TEST(HalideAttention, BatchwiseBackwardGroupedHeads) {
  // Three query heads per kv head (stlm-10m's grouping and head width):
  // per kv head, its group's dq tiles and its own dk and dv in one loop;
  // and 21 queries and keys (off the blocks of 16 and the row tiles).
  for (int offset : {0, 5, -3})
    checkAttention(test_attn_square_gqa, test_attn_square_gqa_grad, true, 2, 48,
                   48, 6, 2, 64, offset);
  for (int offset : {0, 4})
    checkAttention(test_attn_ragged_gqa, test_attn_ragged_gqa_grad, true, 2, 21,
                   21, 6, 2, 16, offset);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    for (int offset : {0, 5})
      checkAttention(test_attn_square_gqa, test_avx2_attn_square_gqa_grad, true,
                     2, 48, 48, 6, 2, 64, offset);
}

TEST(HalideAttention, BidirectionalInsideChunks) {
  checkAttention(test_attn_none, test_attn_none_grad, false, 3, 6, 6, 2, 2, 16,
                 0);
}

// The blocked backward (long contexts): statistics saved by the query pass,
// probabilities recomputed per block of keys.
TEST(HalideAttention, ChunkAttentionAcrossChunkLanes) {
  // Attention inside chunks, a chunk per vector lane: 37 chunks (two
  // whole blocks of 16 and a ragged one), 4 heads over 2 kv heads of
  // width 24 (not a vector); and odd sizes (5 slots, heads of 3).
  checkAttention(test_chunk_attn, test_chunk_attn_grad, false, 37, 8, 8, 4,
                 2, 24, 0);
  checkAttention(test_chunk_attn_odd, test_chunk_attn_odd_grad, false, 5, 5,
                 5, 2, 2, 3, 0);
}

TEST(HalideAttention, BlockedBackwardRaggedGroupedHeads) {
  for (int offset : {2, 0, -5})
    checkAttention(test_attn_causal, test_attn_causal_grad_blocked, true, 2,
                   21, 23, 4, 2, 8, offset);
}

TEST(HalideAttention, BlockedBackwardRegisterTiles) {
  for (int offset : {32, 7, 0})
    checkAttention(test_attn_tiled, test_attn_tiled_grad_blocked, true, 2, 32,
                   64, 2, 1, 32, offset);
  // Head width 64 (4 vectors per row, 4-row tiles), 2 query heads per kv
  // head; key blocks on the grid and one ragged block of keys.
  for (int offset : {48, 13, 0})
    checkAttention(test_attn_wide, test_attn_wide_grad_blocked, true, 2, 48,
                   96, 4, 2, 64, offset);
  for (int offset : {32, 0})
    checkAttention(test_attn_ragged, test_attn_ragged_grad_blocked, true, 2,
                   48, 80, 4, 2, 64, offset);
}

TEST(HalideAttention, OneQueryAgainstACache) {
  // A decode step: one query at every fill of a 40-key cache (the keys it
  // sees are fewer than a vector until position 15).
  for (int offset : {0, 5, 15, 16, 39})
    checkAttention(test_attn_decode, test_attn_decode_grad, true, 1, 1, 40, 4,
                   2, 16, offset);
  // Two queries of three sequences against a cache of whole vectors, which
  // the causal kernels read only up to the last key a query sees: within
  // the first vector, at its edge, past it, and the whole cache (or none).
  for (int offset : {0, 5, 14, 15, 16, 40, 62, -2})
    checkAttention(test_attn_decode_vec, test_attn_decode_vec_grad, true, 3, 2,
                   64, 4, 2, 16, offset);
  // Heads of 4 vectors (each score a vector of partial sums over 64
  // channels, then its lanes), three query heads to a kv head, three
  // queries; from offset 170 (171 keys × 384 channels) the heads run in
  // parallel.
  for (int offset : {0, 13, 169, 170, 197})
    checkAttention(test_attn_decode_wide, test_attn_decode_wide_grad, true, 2,
                   3, 200, 6, 2, 64, offset);
}

TEST(HalideAttention, BlockedBackwardBidirectional) {
  checkAttention(test_attn_none, test_attn_none_grad_blocked, false, 3, 6, 6,
                 2, 2, 16, 0);
}

} // namespace
