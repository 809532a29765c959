//===- SamplingTest.cpp - greedy, temperature, top-k, top-p ---------------===//

#include "support/Sampling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

using stlm::sampling::sample;
using stlm::sampling::SamplingOptions;
using stlm::sampling::validate;

namespace {

// log-probabilities of [0.5, 0.3, 0.15, 0.05].
const std::vector<float> kLogits = {std::log(0.5f), std::log(0.3f),
                                    std::log(0.15f), std::log(0.05f)};

std::map<int32_t, int> histogram(const SamplingOptions &o, int draws,
                                 uint64_t seed = 1) {
  std::map<int32_t, int> h;
  uint64_t state = seed;
  for (int i = 0; i < draws; ++i)
    ++h[sample(kLogits.data(), 4, o, state)];
  return h;
}

TEST(Sampling, GreedyTakesTheFirstMaximum) {
  std::vector<float> tie = {1.0f, 3.0f, 3.0f, 0.0f};
  uint64_t state = 9;
  SamplingOptions greedy;
  greedy.temperature = 0;
  EXPECT_EQ(sample(tie.data(), 4, greedy, state), 1);
  EXPECT_EQ(state, 9u) << "greedy draws no random number";
  SamplingOptions topOne;
  topOne.topK = 1;
  EXPECT_EQ(sample(tie.data(), 4, topOne, state), 1);
}

TEST(Sampling, FollowsTheSoftmaxAtTemperatureOne) {
  std::map<int32_t, int> h = histogram(SamplingOptions(), 40000);
  const double p[] = {0.5, 0.3, 0.15, 0.05};
  for (int v = 0; v < 4; ++v) // 40000 draws: standard error < 0.0025
    EXPECT_NEAR(h[v] / 40000.0, p[v], 0.012) << "token " << v;
}

TEST(Sampling, LowTemperatureSharpens) {
  SamplingOptions cold;
  cold.temperature = 0.25; // p ∝ p^4: 0.5 → 0.86
  std::map<int32_t, int> h = histogram(cold, 20000);
  EXPECT_GT(h[0] / 20000.0, 0.8);
}

TEST(Sampling, TopKAndTopPRestrictTheSupport) {
  SamplingOptions k2;
  k2.topK = 2;
  std::map<int32_t, int> h = histogram(k2, 20000);
  EXPECT_EQ(h.count(2) + h.count(3), 0u);
  EXPECT_NEAR(h[0] / 20000.0, 0.5 / 0.8, 0.015); // renormalised

  SamplingOptions p7;
  p7.topP = 0.7; // 0.5 < 0.7 <= 0.5 + 0.3: tokens 0 and 1
  h = histogram(p7, 20000);
  EXPECT_EQ(h.count(2) + h.count(3), 0u);
  EXPECT_GT(h[1], 0);

  SamplingOptions p4;
  p4.topP = 0.4; // the first token alone already holds 0.5
  h = histogram(p4, 1000);
  EXPECT_EQ(h[0], 1000);
}

TEST(Sampling, IsDeterministicInTheSeed) {
  EXPECT_EQ(histogram(SamplingOptions(), 500, 42),
            histogram(SamplingOptions(), 500, 42));
  std::vector<int32_t> a, b;
  uint64_t sa = 1, sb = 2;
  for (int i = 0; i < 64; ++i) {
    a.push_back(sample(kLogits.data(), 4, SamplingOptions(), sa));
    b.push_back(sample(kLogits.data(), 4, SamplingOptions(), sb));
  }
  EXPECT_NE(a, b);
}

TEST(Sampling, RejectsBadOptions) {
  SamplingOptions o;
  o.topP = 0;
  EXPECT_NE(validate(o), "");
  o.topP = 1.5;
  EXPECT_NE(validate(o), "");
  o = SamplingOptions();
  o.topK = -1;
  EXPECT_NE(validate(o), "");
  o = SamplingOptions();
  o.temperature = INFINITY;
  EXPECT_NE(validate(o), "");
  EXPECT_EQ(validate(SamplingOptions()), "");
}

} // namespace
