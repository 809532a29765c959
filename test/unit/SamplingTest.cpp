//===- SamplingTest.cpp - greedy, temperature, top-k, top-p ---------------===//

#include "support/Sampling.h"

#include "reference/Kernels.h"

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

/// A byte-pool prompt is cut as stlm.chunk cuts it (the reference twin),
/// for every rule, with long words cut at L and UTF-8 never split.
TEST(ChunkGeneration, PromptsAreCutAsTheModelCutsThem) {
  using stlm::sampling::ChunkRule;
  uint64_t s = 5;
  for (ChunkRule rule : {ChunkRule::Fixed, ChunkRule::Words, ChunkRule::Given})
    for (int round = 0; round < 20; ++round) {
      const int64_t L = 3 + round % 5, stride = 1 + round % L;
      std::vector<int32_t> bytes(1 + round * 7);
      for (int32_t &b : bytes) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t r = (s >> 33) % 100;
        b = r < 15   ? ' '
            : r < 20 ? ",.\n\t!"[r - 15]
            : r < 26 ? 0xC3 + r % 2 * 0x1D
                     : 'a' + r % 26;
        if (rule == ChunkRule::Given && (s >> 50) % 3 == 0)
          b += stlm::sampling::kChunkStart;
      }
      std::vector<int32_t> cut;
      ASSERT_TRUE(stlm::sampling::chunkPrompt(rule, stride, L, bytes.data(),
                                              bytes.size(), cut));
      ASSERT_EQ(cut.size() % L, 0u);
      int64_t n = static_cast<int64_t>(bytes.size()), C = n;
      std::vector<int32_t> want(C * L), count(1);
      ASSERT_TRUE(stlm::ref::chunk(
          rule == ChunkRule::Fixed   ? stlm::ref::ChunkMode::Fixed
          : rule == ChunkRule::Words ? stlm::ref::ChunkMode::Words
                                     : stlm::ref::ChunkMode::Given,
          bytes.data(), 1, n, stride, C, L, want.data(), count.data()));
      ASSERT_EQ(static_cast<int64_t>(cut.size()), count[0] * L)
          << "round " << round;
      for (size_t i = 0; i < cut.size(); ++i)
        ASSERT_EQ(cut[i], want[i]) << "round " << round << " at " << i;
    }
  std::vector<int32_t> cut;
  const int32_t bad[2] = {'a', 300}, flagged[2] = {'a', 512 + 'b'};
  size_t at = 9;
  EXPECT_FALSE(
      stlm::sampling::chunkPrompt(ChunkRule::Words, 0, 4, bad, 2, cut, &at));
  EXPECT_EQ(at, 1u);
  EXPECT_FALSE(
      stlm::sampling::chunkPrompt(ChunkRule::Words, 0, 4, flagged, 2, cut));
  EXPECT_TRUE(
      stlm::sampling::chunkPrompt(ChunkRule::Given, 0, 4, flagged, 2, cut));
  EXPECT_EQ(cut,
            (std::vector<int32_t>{'a', 256, 256, 256, 'b', 256, 256, 256}));
}

/// A sampled chunk holds a byte at least and ends at the first pad; the
/// class after the pad (257) is never sampled.
TEST(ChunkGeneration, ChunksEndAtThePad) {
  const int64_t L = 4, V = 258;
  std::vector<float> logits(L * V, 0.0f);
  // Greedy: slot 0 prefers the pad, slot 1 'x', slot 2 the pad, slot 3 'y'.
  logits[0 * V + 256] = 9, logits[0 * V + 'q'] = 5;
  logits[1 * V + 'x'] = 9;
  logits[2 * V + 256] = 9, logits[2 * V + 257] = 20;
  logits[3 * V + 'y'] = 9;
  stlm::sampling::SamplingOptions greedy;
  greedy.temperature = 0;
  uint64_t state = 1;
  int32_t chunk[L];
  EXPECT_EQ(
      stlm::sampling::sampleChunk(logits.data(), L, V, greedy, state, chunk),
      2);
  EXPECT_EQ(chunk[0], 'q');
  EXPECT_EQ(chunk[1], 'x');
  EXPECT_EQ(chunk[2], 256);
  EXPECT_EQ(chunk[3], 256);
  // Sampling: never the end-of-text class, and the same seed the same chunk.
  stlm::sampling::SamplingOptions warm;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    uint64_t a = seed, b = seed;
    int32_t c1[L], c2[L];
    int64_t n1 = stlm::sampling::sampleChunk(logits.data(), L, V, warm, a, c1);
    int64_t n2 = stlm::sampling::sampleChunk(logits.data(), L, V, warm, b, c2);
    ASSERT_EQ(n1, n2);
    ASSERT_GE(n1, 1);
    for (int64_t i = 0; i < L; ++i) {
      EXPECT_EQ(c1[i], c2[i]);
      EXPECT_NE(c1[i], 257);
      EXPECT_EQ(c1[i] == 256, i >= n1);
    }
  }
}

} // namespace
