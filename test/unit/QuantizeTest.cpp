//===- QuantizeTest.cpp - int8/int4 weights and the integer matvec --------===//
//
// support/Quantize.h against hand-computed values: the scales, the stored
// integers (int4's nibble order), exact dequantization where the values
// are representable, the error bound elsewhere, and the matvec's integer
// arithmetic.
//
//===----------------------------------------------------------------------===//

#include "support/Quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace stlm::quant;

namespace {

TEST(Quantize, Int8GroupsByHand) {
  // One row, two groups of 4: scales 127/127 = 1 and 2.54/127 = 0.02.
  const float w[8] = {127, -63.4f, 0.5f, -0.49f, 2.54f, -1.2f, 0, 0.04f};
  QTensor q = quantize(w, 1, 8, {Scheme::Int8, 4});
  ASSERT_EQ(q.scales.size(), 2u);
  EXPECT_FLOAT_EQ(q.scales[0], 1.0f);
  EXPECT_FLOAT_EQ(q.scales[1], 2.54f / 127);
  // Halves round away from zero.
  const int32_t expected[8] = {127, -63, 1, 0, 127, -60, 0, 2};
  for (int k = 0; k < 8; ++k)
    EXPECT_EQ(q.q(0, k), expected[k]) << "k " << k;
  EXPECT_EQ(q.dataShape(), (std::vector<int64_t>{1, 8}));
  EXPECT_EQ(static_cast<int8_t>(q.data[1]), -63); // two's complement bytes
}

TEST(Quantize, Int4PacksTwoNibblesLowFirst) {
  // d = 7 / 7 = 1: the integers are the values.
  const float w[4] = {7, -7, 3, -2.5f};
  QTensor q = quantize(w, 1, 4, {Scheme::Int4, 4});
  EXPECT_FLOAT_EQ(q.scales[0], 1.0f);
  ASSERT_EQ(q.data.size(), 2u);
  EXPECT_EQ(q.data[0], (7 + 8) | ((-7 + 8) << 4));
  EXPECT_EQ(q.data[1], (3 + 8) | ((-3 + 8) << 4));
  EXPECT_EQ(q.q(0, 3), -3);
  EXPECT_EQ(q.dataShape(), (std::vector<int64_t>{1, 2}));
}

TEST(Quantize, ZeroGroupsAndRoundTrips) {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0.0f, 0.02f);
  const int64_t out = 5, in = 64;
  std::vector<float> w(out * in);
  for (float &x : w)
    x = n(rng);
  std::fill(w.begin() + in, w.begin() + in + 32, 0.0f); // row 1, group 0
  for (Scheme s : {Scheme::Int8, Scheme::Int4}) {
    QTensor q = quantize(w.data(), out, in, {s, 32});
    EXPECT_EQ(q.scales[2], 0.0f); // the zero group
    std::vector<float> back = dequantize(q);
    for (int64_t o = 0; o < out; ++o)
      for (int64_t k = 0; k < in; ++k) {
        float d = q.scales[o * 2 + k / 32];
        // Within half a step of the weight.
        EXPECT_LE(std::fabs(back[o * in + k] - w[o * in + k]),
                  0.5f * d + 1e-9f);
      }
  }
}

TEST(Quantize, GroupProblems) {
  EXPECT_EQ(groupProblem({Scheme::Int8, 32}, 128), "");
  EXPECT_EQ(groupProblem({Scheme::Int8, 128}, 128), ""); // per channel
  EXPECT_EQ(groupProblem({Scheme::Int8, 48}, 128),
            "128 inputs are not a whole number of groups of 48");
  EXPECT_EQ(groupProblem({Scheme::Int4, 3}, 96),
            "an int4 group packs two inputs a byte, so it must be even, not 3");
  EXPECT_EQ(groupProblem({Scheme::Int8, 0}, 96),
            "the group must be at least 1, not 0");
  EXPECT_EQ(parseScheme("int4"), Scheme::Int4);
  EXPECT_FALSE(parseScheme("int2"));
}

TEST(Quantize, MatvecIsTheGroupedIntegerSum) {
  // Weights and inputs on their grids, so every step is exact: x's scale
  // is 127/127 = 1, the weights' 1 and 0.5.
  const float w[2 * 4] = {1,    2,      -3, 4, //
                          0.5f, -63.5f, 1,  0};
  QTensor q = quantize(w, 2, 4, {Scheme::Int8, 2});
  const float x[4] = {127, -1, 2, 0};
  int8_t qx[4];
  EXPECT_FLOAT_EQ(quantizeRow(x, 4, qx), 1.0f);
  float y[2];
  matvec(q, x, y);
  // Row 0's groups have d = 2/127 and 4/127 (off the grid): the integer
  // dots are q00·127 + 127·(−1) and (−95)·2 + q03·0, each scaled once.
  int32_t q00 = q.q(0, 0), q01 = q.q(0, 1), q02 = q.q(0, 2);
  EXPECT_EQ(q01, 127);
  EXPECT_EQ(q02, -95);
  float expected0 = (q.scales[0] * 1.0f) * float(q00 * 127 + q01 * -1) +
                    (q.scales[1] * 1.0f) * float(q02 * 2);
  EXPECT_EQ(y[0], expected0);
  // Row 1 on its grid: d = 63.5/127 = 0.5 and 1/127.
  EXPECT_EQ(q.q(1, 0), 1);
  EXPECT_EQ(q.q(1, 1), -127);
  EXPECT_EQ(y[1],
            0.5f * float(1 * 127 + -127 * -1) + (1.0f / 127) * float(127 * 2));
  // A zero row gives zeros.
  const float zero[4] = {0, 0, 0, 0};
  matvec(q, zero, y);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 0.0f);
}

TEST(Quantize, MatvecTracksTheFloatProduct) {
  std::mt19937 rng(11);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const int64_t out = 48, in = 256;
  std::vector<float> w(out * in), x(in);
  for (float &v : w)
    v = 0.02f * n(rng);
  for (float &v : x)
    v = n(rng);
  for (auto [s, tolerance] :
       {std::pair{Scheme::Int8, 0.02}, {Scheme::Int4, 0.2}}) {
    QTensor q = quantize(w.data(), out, in, {s, 32});
    std::vector<float> y(out);
    matvec(q, x.data(), y.data());
    double err = 0, norm = 0;
    for (int64_t o = 0; o < out; ++o) {
      double exact = 0;
      for (int64_t k = 0; k < in; ++k)
        exact += double(w[o * in + k]) * x[k];
      err += (y[o] - exact) * (y[o] - exact);
      norm += exact * exact;
    }
    EXPECT_LT(std::sqrt(err / norm), tolerance) << schemeName(s);
  }
}

} // namespace
