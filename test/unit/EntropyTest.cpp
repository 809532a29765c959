//===- EntropyTest.cpp - stlm-run entropy's scoring and chunk rules -------===//
//
// train/Entropy against a model whose predictions are known: every byte
// gets a prediction from enough context, the entropies are exact, and the
// global, relative and mean-length rules put starts where they should
// (never inside a UTF-8 character).
//
//===----------------------------------------------------------------------===//

#include "train/Entropy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace {

/// A fake model over bytes: at position p of a window its logits make a
/// uniform distribution over 2^k bytes, k = the byte at p mod 8, so the
/// prediction of the byte after it has exactly k bits of entropy. It also
/// records how much context (window position) each prediction had.
struct FakeModel {
  int64_t B = 3, T = 8, V = 256;
  std::vector<int64_t> contextOf; // by predicted byte, filled per call
  int calls = 0;

  stlm::EntropyModel model() {
    return {B, T, V,
            [this](const std::vector<int32_t> &tokens,
                   std::vector<float> &logits, std::string &) {
              ++calls;
              logits.assign(B * T * V, -1e30f);
              for (int64_t r = 0; r < B * T; ++r) {
                int k = tokens[r] % 8;
                for (int64_t v = 0; v < (int64_t(1) << k); ++v)
                  logits[r * V + v] = 0.0f;
              }
              return true;
            }};
  }
};

std::vector<uint8_t> bytesOf(const std::string &s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}

TEST(Entropy, EveryByteIsScoredExactly) {
  FakeModel fake;
  std::vector<uint8_t> text;
  for (int i = 0; i < 101; ++i)
    text.push_back(static_cast<uint8_t>('a' + (i * 7) % 26));
  std::vector<float> h;
  std::string error;
  ASSERT_TRUE(stlm::byteEntropies(text, fake.model(), h, error, nullptr))
      << error;
  ASSERT_EQ(h.size(), text.size());
  EXPECT_TRUE(std::isnan(h[0]));
  for (size_t j = 1; j < text.size(); ++j)
    EXPECT_NEAR(h[j], text[j - 1] % 8, 1e-5) << "byte " << j;
  // Windows of 8 every 4 bytes: 1 + ceil((100 - 8) / 4) = 24 windows, in
  // batches of 3.
  EXPECT_EQ(fake.calls, 8);
}

TEST(Entropy, ShortTextsAndBadLogits) {
  FakeModel fake;
  std::vector<float> h;
  std::string error;
  ASSERT_TRUE(
      stlm::byteEntropies(bytesOf("a"), fake.model(), h, error, nullptr));
  EXPECT_EQ(h.size(), 1u);
  EXPECT_EQ(fake.calls, 0);
  stlm::EntropyModel nan = fake.model();
  nan.logits = [](const std::vector<int32_t> &, std::vector<float> &l,
                  std::string &) {
    l.assign(3 * 8 * 256, NAN);
    return true;
  };
  EXPECT_FALSE(stlm::byteEntropies(bytesOf("abcdef"), nan, h, error, nullptr));
  EXPECT_NE(error.find("is not finite"), std::string::npos) << error;
  stlm::EntropyModel few = fake.model();
  few.logits = [](const std::vector<int32_t> &, std::vector<float> &l,
                  std::string &) {
    l.assign(5, 0.0f);
    return true;
  };
  EXPECT_FALSE(stlm::byteEntropies(bytesOf("abcdef"), few, h, error, nullptr));
  EXPECT_NE(error.find("logits for a batch"), std::string::npos) << error;
}

TEST(Entropy, GlobalRelativeAndMeanRules) {
  // Entropies by hand; byte 4 continues a UTF-8 character.
  std::vector<uint8_t> text = {'a', 'b', 'c', 'd', 0xA9, 'f', 'g', 'h'};
  std::vector<float> h = {NAN, 1.0f, 3.0f, 2.5f, 4.0f, 0.5f, 2.0f, 2.2f};
  EXPECT_EQ(stlm::entropyStarts(h, text, 1.5, false),
            (std::vector<int64_t>{2, 3, 6, 7}));
  // Rises above 1.0: 1 -> 3 at 2, 0.5 -> 2 at 6 (never at the UTF-8 byte).
  EXPECT_EQ(stlm::entropyStarts(h, text, 1.0, true),
            (std::vector<int64_t>{2, 6}));
  // 8 bytes in chunks of 2 on average: 3 starts, the 3 largest eligible.
  double t = stlm::thresholdForMean(h, text, 2.0);
  EXPECT_EQ(stlm::entropyStarts(h, text, t, false),
            (std::vector<int64_t>{2, 3, 7}));
  // One chunk, and every eligible byte.
  EXPECT_TRUE(stlm::entropyStarts(h, text,
                                  stlm::thresholdForMean(h, text, 100.0), false)
                  .empty());
  EXPECT_EQ(
      stlm::entropyStarts(h, text, stlm::thresholdForMean(h, text, 1.01), false)
          .size(),
      6u);
}

} // namespace
