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
#include "test_mm_nn_a.h"
#include "test_mm_nn_b.h"
#include "test_mm_nt_a.h"
#include "test_mm_nt_b.h"
#include "test_mm_tn_a.h"
#include "test_mm_tn_b.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace {

using Buffer = Halide::Runtime::Buffer<float>;
using Kernel = int (*)(halide_buffer_t *, halide_buffer_t *,
                       halide_buffer_t *);

/// A row-major [rows, cols] matrix of uniform(-1, 1) values.
Buffer random(int rows, int cols, std::mt19937 &rng) {
  Buffer m(cols, rows); // Halide: dimension 0 is the column
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  m.for_each_value([&](float &v) { v = u(rng); });
  return m;
}

/// Runs `kernel` for form `form` and compares it with the reference.
void check(const char *form, Kernel kernel, int M, int N, int K) {
  std::mt19937 rng(M * 131 + N * 7 + K);
  std::string f = form;
  // nt: a [M,K], b [N,K]; nn: a [M,K], b [K,N]; tn: a [K,M], b [K,N].
  Buffer a = f == "tn" ? random(K, M, rng) : random(M, K, rng);
  Buffer b = f == "nt" ? random(N, K, rng) : random(K, N, rng);
  Buffer c(N, M);
  ASSERT_EQ(kernel(a, b, c), 0) << form;

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
}

TEST(HalideMatMul, NNMatchesReferenceInputGradient) {
  check("nn", test_mm_nn_a, 64, 64, 40);
  check("nn", test_mm_nn_b, 24, 96, 203);
}

TEST(HalideMatMul, TNMatchesReferenceWeightGradient) {
  check("tn", test_mm_tn_a, 64, 64, 40);
  check("tn", test_mm_tn_b, 24, 96, 203);
}

std::string lastHalideError;

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

} // namespace
