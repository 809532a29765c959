//===- BatchesTest.cpp - windows, target counts and validation pooling ----===//
//
// What train/Batches computes around the compiled functions: a byte-pool
// model's contiguous validation windows (every validation byte read once),
// the bytes a batch consumes, and each objective's counted targets.
//
//===----------------------------------------------------------------------===//

#include "frontend/Data.h"
#include "frontend/Spec.h"
#include "reference/Kernels.h"
#include "train/Batches.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

stlm::ModelSpec specOf(const std::string &yaml) {
  stlm::SpecResult r = stlm::parseSpec(yaml, "test.yaml");
  EXPECT_TRUE(r.spec) << (r.diagnostics.empty() ? ""
                                                : r.diagnostics.front().str());
  return *r.spec;
}

const char *kWords = R"(
name: words
embedder: {kind: byte_pool, chunking: words, chunk_bytes: 6, byte_width: 16,
           encoder_layers: 1, encoder_heads: 2}
core: {layers: 1, width: 32, heads: 2, ffn: swiglu, ffn_width: 48,
       context: 12}
head: {kind: byte_chunk, decoder_layers: 1, decoder_heads: 2}
objectives:
  - {kind: chunk_bytes, mask_pad: true}
  - {kind: reconstruction, weight: 0.5}
train: {batch: 3}
)";

/// Word-like text: words of 1–9 letters between spaces and punctuation.
std::vector<uint8_t> text(size_t n) {
  std::vector<uint8_t> t;
  uint64_t s = 99;
  while (t.size() < n) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    int len = 1 + static_cast<int>((s >> 33) % 9);
    for (int i = 0; i < len && t.size() < n; ++i)
      t.push_back(static_cast<uint8_t>('a' + (s >> (i + 20)) % 26));
    if (t.size() < n)
      t.push_back((s >> 40) % 7 ? ' ' : ',');
  }
  return t;
}

TEST(Batches, ByteWindowsCoverTheValidationSplitOnce) {
  stlm::ModelSpec spec = specOf(kWords);
  stlm::Feed feed = stlm::Feed::forSpec(spec);
  ASSERT_EQ(feed.window, 12 * 6); // T·L bytes
  stlm::TextData data;
  std::string error;
  ASSERT_TRUE(data.assign(text(20000), feed.window, "text", error)) << error;
  std::vector<int64_t> starts = feed.validationStarts(data);
  ASSERT_FALSE(starts.empty());
  EXPECT_EQ(starts[0], 0);
  stlm::Feed one = feed;
  one.batch = 1;
  std::vector<int32_t> row(feed.window);
  int64_t read = 0;
  for (size_t i = 0; i < starts.size(); ++i) {
    data.validationRow(starts[i], feed.window, row.data());
    int64_t used = one.consumedBytes(row);
    EXPECT_GT(used, 0);
    // Each window starts where the last one's chunks ended.
    if (i + 1 < starts.size()) {
      EXPECT_EQ(starts[i] + used, starts[i + 1]) << "window " << i;
    }
    read += used;
  }
  // Every validation byte once: the last window is cut short by 256s.
  EXPECT_EQ(read, data.validationBytes());
  data.validationRow(starts.back(), feed.window, row.data());
  EXPECT_EQ(row.back(), 256);
  // Words of ~5 bytes fill 12 chunks with ~60 of a window's 72 bytes: more
  // windows than non-overlapping 72-byte ones, which dropped the rest.
  EXPECT_GT(static_cast<int64_t>(starts.size()),
            data.validationBytes() / feed.window);
}

TEST(Batches, CountsFollowTheChunkObjectives) {
  stlm::ModelSpec spec = specOf(kWords);
  stlm::Feed feed = stlm::Feed::forSpec(spec);
  stlm::TextData data;
  std::string error;
  ASSERT_TRUE(data.assign(text(20000), feed.window, "text", error)) << error;
  std::vector<int32_t> w(feed.batch * feed.window);
  data.trainBatch(1, 0, feed.batch, w);
  w[feed.window + 20] = 256; // row 1 ends early
  std::vector<stlm::ref::Tensor<float>> args = feed.args(w, 0);
  std::vector<stlm::Counted> c = feed.counts(args);
  ASSERT_EQ(c.size(), 2u);
  // Against the reference's chunking and targets, directly.
  int64_t B = feed.batch, C = 12, L = 6;
  std::vector<int32_t> chunks(B * C * L), count(B), targets(B * C * L);
  std::vector<uint8_t> counted(B * C * L);
  ASSERT_TRUE(stlm::ref::chunk(stlm::ref::ChunkMode::Words, w.data(), B,
                               feed.window, 0, C, L, chunks.data(),
                               count.data()));
  EXPECT_LT(count[1], C);
  for (bool next : {true, false}) {
    stlm::ref::chunkTargets(chunks.data(), B, C, L, count.data(), next,
                            /*maskPad=*/next, targets.data(), counted.data());
    int64_t n = 0;
    for (uint8_t f : counted)
      n += f;
    const stlm::Counted &got = c[next ? 0 : 1];
    EXPECT_EQ(got.targets, n);
    EXPECT_EQ(got.bytes, stlm::ref::chunkRealBytes(chunks.data(), B, C, L,
                                                   count.data(), next));
    // The end markers are targets, not bytes; unmasked pads too.
    EXPECT_GT(got.targets, got.bytes);
  }
  // The bytes a batch consumes: its chunks' real bytes.
  EXPECT_EQ(feed.consumedBytes(w), c[1].bytes);
  EXPECT_EQ(feed.perByteObjective(), 0);
}

TEST(Batches, TokenModelsCountEveryPosition) {
  stlm::ModelSpec spec = specOf(R"(
name: tok
embedder: {kind: token}
core: {layers: 1, width: 8, heads: 2, ffn: gelu, ffn_width: 16, context: 8}
objectives:
  - {kind: masked_next_token, mask_prob: 0.5, weight: 1.0}
  - {kind: next_token, weight: 0.5}
train: {batch: 4}
)");
  stlm::Feed feed = stlm::Feed::forSpec(spec);
  std::vector<int32_t> w(feed.batch * feed.window, 'a');
  std::vector<stlm::ref::Tensor<float>> args = feed.args(w, 12345);
  std::vector<stlm::Counted> c = feed.counts(args);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[1].targets, 32);
  EXPECT_EQ(c[1].bytes, 32);
  // The masked positions of seed 12345 (about half).
  EXPECT_GT(c[0].targets, 4);
  EXPECT_LT(c[0].targets, 28);
  EXPECT_EQ(feed.perByteObjective(), 1);
  EXPECT_EQ(feed.consumedBytes(w), 32);
}

} // namespace

TEST(Batches, GivenChunkStartsRideOnTheBytes) {
  // Chunks start every 4 bytes (the side file's offsets), so a window of
  // T·L = 12·6 bytes consumes 12 chunks of 4 bytes: 48 of its 72.
  std::string yaml = kWords;
  yaml.replace(yaml.find("chunking: words"), 15, "chunking: given");
  stlm::Feed feed = stlm::Feed::forSpec(specOf(yaml));
  stlm::TextData data;
  std::string error;
  ASSERT_TRUE(data.assign(text(2000), feed.window, "text", error)) << error;
  std::string side = "# every 4th byte\n";
  for (int at = 4; at < 2000; at += 4)
    side += std::to_string(at) + (at % 8 ? "\n" : "  # a comment\n");
  ASSERT_TRUE(data.assignChunkStarts(side, "side", error)) << error;
  EXPECT_EQ(data.chunkStartCount(), 500);
  std::vector<int32_t> w;
  data.trainBatch(3, 0, feed.batch, w);
  int flagged = 0;
  for (int32_t x : w)
    flagged += x >= stlm::TextData::kChunkStartFlag;
  // Any window of 72 bytes holds 18 starts of every 4th byte.
  EXPECT_EQ(flagged, feed.batch * feed.window / 4);
  // Each row's first chunk runs to the next start (1-4 bytes), then 11
  // whole chunks of 4.
  EXPECT_GE(feed.consumedBytes(w), feed.batch * 45);
  EXPECT_LE(feed.consumedBytes(w), feed.batch * 48);
  std::vector<int64_t> starts = feed.validationStarts(data);
  ASSERT_GE(starts.size(), 2u);
  EXPECT_EQ(starts[0], 0);
  // The validation split begins at byte 1800, a start: chunks align.
  EXPECT_EQ(starts[1], 48);
  // Without the side file's starts the same bytes chunk differently.
  stlm::TextData plain;
  ASSERT_TRUE(plain.assign(text(2000), feed.window, "text", error));
  std::vector<int32_t> v;
  plain.trainBatch(3, 0, feed.batch, v);
  EXPECT_EQ(feed.consumedBytes(v), feed.batch * 72); // cut at L = 6 only
}

TEST(Batches, ChunkStartsAreCheckedLineByLine) {
  stlm::TextData data;
  std::string error;
  ASSERT_TRUE(data.assign(text(200), 10, "text", error)) << error;
  struct Case {
    const char *side, *message;
  } cases[] = {
      {"3\n7\nx\n", "f:3: 'x' is not a byte offset"},
      {"3\n\n3\n", "f:3: offset 3 is not after the previous one, 3 (line 1)"},
      {"200\n", "f:1: offset 200 is past the data's last byte (199)"},
      {"1 2\n", "f:1: '1 2' is not a byte offset"},
      {"+5\n", "f:1: '+5' is not a byte offset"},
  };
  for (const Case &c : cases) {
    error.clear();
    EXPECT_FALSE(data.assignChunkStarts(c.side, "f", error)) << c.side;
    EXPECT_EQ(error.rfind(c.message, 0), 0u) << error;
  }
  EXPECT_FALSE(data.hasChunkStarts()); // a refused file leaves none
  ASSERT_TRUE(data.assignChunkStarts("0\n199 # the last byte\n", "f", error));
  EXPECT_EQ(data.chunkStartCount(), 2);
}
