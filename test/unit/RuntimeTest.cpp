//===- RuntimeTest.cpp - the C runtime refuses bad artifacts --------------===//
//
// stlm_open on hand-made stlm_artifact descriptors (stub entry points, a
// manifest written here): every malformed artifact is a status and a
// message, never a crash, and a model opened from a good one refuses bad
// generation requests before running anything.
//
//===----------------------------------------------------------------------===//

#include "stlm/stlm.h"
#include "support/QuantTiles.h"
#include "support/SafeTensors.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

/// The seeds the batch entry points were called with, in order.
std::vector<int32_t> seenSeeds;

int32_t step(void *, void *, const int32_t *, const int32_t *,
             const int32_t *seed, float *) {
  seenSeeds.push_back(*seed);
  return 0;
}
int32_t apply(void *, void *, float *out) {
  out[0] = out[1] = 0;
  return 0;
}
int32_t infer(void *, void *, const int32_t *, float *) { return 0; }
int32_t decode(void *, void *, const int32_t *, const int32_t *, float *) {
  return 0;
}
void *setter(void *) { return nullptr; }
int threads(int) { return 0; }

const char *kGood = R"({"format": "stlm-artifact", "version": 4,
  "model": "fake", "vocab": 16, "accumulate": 1, "spec": "{}",
  "weights_size": 64, "arena_size": 64, "inputs": [[2, 4], [2, 4]],
  "params": [{"name": "w", "dtype": "F32", "shape": [4], "offset": 0}],
  "state": [{"name": "opt.m.w", "dtype": "F32", "shape": [4], "offset": 16},
            {"name": "opt.v.w", "dtype": "F32", "shape": [4], "offset": 32},
            {"name": "step", "dtype": "I32", "shape": [], "offset": 48}]})";

stlm_artifact artifact(const char *manifest) {
  stlm_artifact a{};
  a.abi_version = STLM_ABI_VERSION;
  a.manifest = manifest;
  a.train_step = step;
  a.grad = step;
  a.eval = step;
  a.logits = infer;
  a.prefill = infer;
  a.decode_step = decode;
  a.set_error_handler = setter;
  a.set_num_threads = threads;
  a.set_custom_malloc = setter;
  a.set_custom_free = setter;
  return a;
}

/// Opens `a`, expects `status` and a message containing `text`.
void expectRefused(const stlm_artifact &a, stlm_status status,
                   const std::string &text) {
  stlm_model *m = nullptr;
  EXPECT_EQ(stlm_open(&a, &m), status);
  ASSERT_NE(m, nullptr);
  EXPECT_NE(std::string(stlm_error_message(m)).find(text), std::string::npos)
      << stlm_error_message(m);
  stlm_close(m);
}

TEST(Runtime, OpensAGoodArtifact) {
  stlm_artifact a = artifact(kGood);
  stlm_model *m = nullptr;
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  EXPECT_EQ(stlm_vocab(m), 16);
  EXPECT_EQ(stlm_batch(m), 2);
  EXPECT_EQ(stlm_context(m), 4);
  EXPECT_EQ(stlm_accumulate(m), 1);
  stlm_close(m);
}

/// A safetensors file in memory: tensor "w" of `shape` (values 1, 2, ...)
/// and __metadata__.step.
std::vector<unsigned char> checkpointBytes(int64_t n, const char *step) {
  std::string header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[" +
                       std::to_string(n) + "],\"data_offsets\":[0," +
                       std::to_string(4 * n) +
                       "]},\"__metadata__\":{\"step\":\"" + step + "\"}}";
  std::vector<unsigned char> bytes(8);
  uint64_t length = header.size();
  std::memcpy(bytes.data(), &length, 8);
  bytes.insert(bytes.end(), header.begin(), header.end());
  for (int64_t i = 0; i < n; ++i) {
    float v = static_cast<float>(i + 1);
    unsigned char b[4];
    std::memcpy(b, &v, 4);
    bytes.insert(bytes.end(), b, b + 4);
  }
  return bytes;
}

TEST(Runtime, OpensWithItsEmbeddedCheckpoint) {
  std::vector<unsigned char> file = checkpointBytes(4, "7");
  stlm_artifact a = artifact(kGood);
  a.weights_file = file.data();
  a.weights_file_size = static_cast<int64_t>(file.size());
  stlm_model *m = nullptr;
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  float w[4] = {};
  ASSERT_EQ(stlm_read(m, "w", w, 4), STLM_OK);
  EXPECT_EQ(w[0], 1.0f);
  EXPECT_EQ(w[3], 4.0f);
  EXPECT_EQ(stlm_step(m), 7);
  stlm_close(m);
}

TEST(Runtime, RefusesABadEmbeddedCheckpoint) {
  stlm_artifact a = artifact(kGood);
  std::vector<unsigned char> garbage(100, 'x');
  a.weights_file = garbage.data();
  a.weights_file_size = static_cast<int64_t>(garbage.size());
  expectRefused(a, STLM_ERROR_FORMAT,
                "the checkpoint embedded in 'fake': not a safetensors file");
  std::vector<unsigned char> other = checkpointBytes(3, "0");
  a.weights_file = other.data();
  a.weights_file_size = static_cast<int64_t>(other.size());
  expectRefused(a, STLM_ERROR_MISMATCH, "'w' is F32 of another shape");
  a.weights_file = nullptr;
  a.weights_file_size = 16;
  expectRefused(a, STLM_ERROR_FORMAT, "embedded in 'fake' has no bytes");
}

TEST(Runtime, RefusesAManifestWithoutOptimizerStateOrStep) {
  std::string noMoment = kGood;
  noMoment.replace(noMoment.find("opt.v.w"), 7, "opt.x.w");
  stlm_artifact a = artifact(noMoment.c_str());
  expectRefused(a, STLM_ERROR_FORMAT,
                "lacks the optimizer state 'opt.v.w'");
  std::string noStep = kGood;
  noStep.replace(noStep.find("\"step\""), 6, "\"stop\"");
  a = artifact(noStep.c_str());
  expectRefused(a, STLM_ERROR_FORMAT, "lacks the step counter");
}

TEST(Runtime, RefusesAnotherAbiVersion) {
  stlm_artifact a = artifact(kGood);
  a.abi_version = 1;
  expectRefused(a, STLM_ERROR_FORMAT, "ABI version 1");
}

TEST(Runtime, RefusesMissingEntryPoints) {
  stlm_artifact a = artifact(kGood);
  a.decode_step = nullptr;
  expectRefused(a, STLM_ERROR_FORMAT, "lacks entry points");
  a = artifact(kGood);
  a.train_step = nullptr; // and no accumulate/apply either
  expectRefused(a, STLM_ERROR_FORMAT, "lacks entry points");
}

TEST(Runtime, RefusesCorruptManifests) {
  stlm_artifact a = artifact("{\"format\": ");
  expectRefused(a, STLM_ERROR_FORMAT, "manifest is corrupt");
  a = artifact(R"({"format": "stlm-artifact", "version": 1})");
  expectRefused(a, STLM_ERROR_FORMAT, "version 4 manifest");
  std::string outside = kGood;
  outside.replace(outside.find("\"offset\": 0"), 11, "\"offset\": 60");
  a = artifact(outside.c_str());
  expectRefused(a, STLM_ERROR_FORMAT, "places 'w' outside its buffers");
  std::string accumulating = kGood;
  accumulating.replace(accumulating.find("\"accumulate\": 1"), 15,
                       "\"accumulate\": 4");
  a = artifact(accumulating.c_str());
  expectRefused(a, STLM_ERROR_FORMAT, "does not match its training entry");

  // Sizes past any spec's, and shapes and offsets whose bounds would
  // overflow (each slipped through the old checks as a wrapped product).
  std::string wide = kGood;
  wide.replace(wide.find("[[2, 4], [2, 4]]"), 16,
               "[[1099511627776, 4], [1099511627776, 4]]");
  a = artifact(wide.c_str());
  expectRefused(a, STLM_ERROR_FORMAT,
                "a batch of 1099511627776 windows of 4 positions, outside");
  for (const char *slot :
       {R"("shape": [4611686018427387904, 4], "offset": 0)",
        R"("shape": [-4, -1], "offset": 0)",
        R"("shape": [4], "offset": 9223372036854775800)"}) {
    const std::string good = R"("shape": [4], "offset": 0)";
    std::string bad = kGood;
    bad.replace(bad.find(good), good.size(), slot);
    a = artifact(bad.c_str());
    expectRefused(a, STLM_ERROR_FORMAT, "places 'w' outside its buffers");
  }
  std::string negative = kGood;
  negative.replace(negative.find("\"arena_size\": 64"), 16,
                   "\"arena_size\": -64");
  a = artifact(negative.c_str());
  expectRefused(a, STLM_ERROR_FORMAT, "negative buffer size");
}

/// A quantized model's manifest: an I8 payload and its F32 scales, no
/// optimizer state or step.
const char *kQuantized = R"({"format": "stlm-artifact", "version": 4,
  "model": "fake", "vocab": 16, "accumulate": 1, "spec": "{}",
  "quantization": {"scheme": "int8", "group": 32},
  "weights_size": 128, "arena_size": 64, "inputs": [[2, 4], [2, 4]],
  "params": [{"name": "w", "dtype": "I8", "shape": [2, 32], "offset": 0},
             {"name": "w.scale", "dtype": "F32", "shape": [2, 1],
              "offset": 64}],
  "state": []})";

/// Its artifact: inference entry points only.
stlm_artifact quantizedArtifact(const char *manifest) {
  stlm_artifact a = artifact(manifest);
  a.train_step = nullptr;
  a.grad = nullptr;
  return a;
}

TEST(Runtime, OpensAQuantizedModelThatInfersOnly) {
  stlm_artifact a = quantizedArtifact(kQuantized);
  stlm_model *m = nullptr;
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  EXPECT_STREQ(stlm_quantization(m), "int8, group 32");
  std::vector<int32_t> tokens(8, 1);
  float loss = 0;
  EXPECT_EQ(stlm_eval(m, tokens.data(), tokens.data(), &loss), STLM_OK);
  auto refused = [&](stlm_status got, const char *call) {
    EXPECT_EQ(got, STLM_ERROR_ARGUMENT) << call;
    EXPECT_NE(std::string(stlm_error_message(m))
                  .find(std::string(call) + ": 'fake' is quantized (int8, "
                                            "group 32) and infers only"),
              std::string::npos)
        << stlm_error_message(m);
  };
  stlm_step_result r;
  refused(stlm_train_step(m, tokens.data(), tokens.data(), &r),
          "stlm_train_step");
  refused(stlm_grad(m, tokens.data(), tokens.data(), &loss), "stlm_grad");
  refused(stlm_set_allreduce(
              m, 2, [](float *, size_t, void *) { return 0; }, nullptr),
          "stlm_set_allreduce");
  EXPECT_EQ(stlm_save(m, "/nonexistent/q.safetensors"), STLM_ERROR_ARGUMENT);
  // Its scales are float tensors; its payload is not.
  EXPECT_EQ(stlm_tensor_size(m, "w.scale"), 2);
  EXPECT_EQ(stlm_tensor_size(m, "w"), -1);
  stlm_close(m);
  // A float model has no quantization.
  a = artifact(kGood);
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK);
  EXPECT_EQ(stlm_quantization(m), nullptr);
  stlm_close(m);
}

TEST(Runtime, RefusesABadQuantizedManifest) {
  // Training entry points in a quantized artifact, or none in a float one.
  stlm_artifact a = artifact(kQuantized);
  expectRefused(a, STLM_ERROR_FORMAT,
                "quantized but has training entry points");
  a = quantizedArtifact(kGood);
  expectRefused(a, STLM_ERROR_FORMAT, "lacks entry points");
  for (const char *bad : {R"({"scheme": "int3", "group": 32})",
                          R"({"scheme": "int8", "group": 0})",
                          R"({"scheme": "int8"})", R"("int8")"}) {
    std::string manifest = kQuantized;
    const std::string good = R"({"scheme": "int8", "group": 32})";
    manifest.replace(manifest.find(good), good.size(), bad);
    a = quantizedArtifact(manifest.c_str());
    expectRefused(a, STLM_ERROR_FORMAT,
                  bad == std::string(R"({"scheme": "int8"})")
                      ? "manifest is corrupt"
                      : "has a bad quantization");
  }
  // An I8 slot only as a quantized model's parameter; its bytes in the
  // blob.
  std::string floatI8 = kGood;
  floatI8.replace(floatI8.find(R"("dtype": "F32", "shape": [4])"), 28,
                  R"("dtype": "I8", "shape": [4])");
  a = artifact(floatI8.c_str());
  expectRefused(a, STLM_ERROR_FORMAT, "gives 'w' the dtype I8");
  std::string outside = kQuantized;
  outside.replace(outside.find(R"("shape": [2, 32])"), 16,
                  R"("shape": [4, 64])");
  a = quantizedArtifact(outside.c_str());
  expectRefused(a, STLM_ERROR_FORMAT, "places 'w' outside its buffers");
  // A step counter, where there is one, is an I32 scalar (stlm_step reads
  // four bytes).
  std::string byteStep = kQuantized;
  byteStep.replace(byteStep.find(R"("state": [])"), 11,
                   R"("state": [{"name": "step", "dtype": "F32", "shape": [0],
                     "offset": 128}])");
  a = quantizedArtifact(byteStep.c_str());
  expectRefused(a, STLM_ERROR_FORMAT, "lacks the step counter (an I32");
}

TEST(Runtime, RefusesABadDecodeBatch) {
  // Batched generation: both entry points with the manifest's
  // decode_batch, or neither.
  auto withBatch = [](const char *value) {
    std::string m = kGood;
    m.insert(m.find(R"("inputs")"),
             std::string(R"("decode_batch": )") + value + ", ");
    return m;
  };
  std::string four = withBatch("4");
  stlm_artifact a = artifact(four.c_str());
  a.prefill_batch = infer;
  a.decode_batch = decode;
  stlm_model *m = nullptr;
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  EXPECT_EQ(stlm_decode_batch(m), 4);
  stlm_close(m);
  a.decode_batch = nullptr;
  expectRefused(a, STLM_ERROR_FORMAT,
                "batched generation entry points do not match");
  a = artifact(kGood);
  a.prefill_batch = infer;
  a.decode_batch = decode;
  expectRefused(a, STLM_ERROR_FORMAT,
                "batched generation entry points do not match");
  for (const char *bad : {"1", "0", "-3", "5000", "\"4\"", "2.5"}) {
    std::string manifest = withBatch(bad);
    a = artifact(manifest.c_str());
    a.prefill_batch = infer;
    a.decode_batch = decode;
    expectRefused(a, STLM_ERROR_FORMAT, "has a bad decode_batch");
  }
  // Without the option, batched generation says how to get it.
  a = artifact(kGood);
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  EXPECT_EQ(stlm_decode_batch(m), 0);
  const int32_t prompt[] = {1, 2};
  const int32_t *prompts[] = {prompt};
  size_t lens[] = {2}, produced[] = {7};
  EXPECT_EQ(stlm_generate_batch(m, 1, prompts, lens, 4, nullptr, nullptr,
                                nullptr, produced),
            STLM_ERROR_ARGUMENT);
  EXPECT_EQ(produced[0], 0u);
  EXPECT_NE(std::string(stlm_error_message(m))
                .find("compile it with stlm-compile --decode-batch N"),
            std::string::npos)
      << stlm_error_message(m);
  stlm_close(m);
}

TEST(Runtime, LoadsOnlyACheckpointQuantizedAlike) {
  stlm_artifact a = quantizedArtifact(kQuantized);
  stlm_model *m = nullptr;
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  std::vector<int8_t> payload(64, 3);
  std::vector<float> scales = {0.5f, 0.25f};
  std::string dir = ::testing::TempDir();
  auto write = [&](const std::string &name, stlm::DType dtype,
                   const char *quantization) {
    std::string path = dir + "/" + name + ".safetensors", error;
    std::map<std::string, std::string> meta;
    if (quantization)
      meta["stlm_quantization"] = quantization;
    EXPECT_TRUE(stlm::writeSafeTensors(
        path,
        {{"w", dtype, {2, 32}, payload.data(), payload.size()},
         {"w.scale", stlm::DType::F32, {2, 1}, scales.data(), 8}},
        meta, error))
        << error;
    return path;
  };
  auto load = [&](const std::string &path, stlm_status want,
                  const std::string &says) {
    EXPECT_EQ(stlm_load(m, path.c_str()), want) << stlm_error_message(m);
    EXPECT_NE(std::string(stlm_error_message(m)).find(says), std::string::npos)
        << stlm_error_message(m);
  };
  std::string good =
      write("good", stlm::DType::I8, R"({"group":32,"scheme":"int8"})");
  EXPECT_EQ(stlm_load(m, good.c_str()), STLM_OK) << stlm_error_message(m);
  std::vector<float> read(2);
  ASSERT_EQ(stlm_read(m, "w.scale", read.data(), 2), STLM_OK);
  EXPECT_EQ(read, scales);
  load(write("float", stlm::DType::I8, nullptr), STLM_ERROR_MISMATCH,
       "holds float weights; 'fake' is quantized (int8, group 32): quantize "
       "the checkpoint first");
  load(write("group", stlm::DType::I8, R"({"group":16,"scheme":"int8"})"),
       STLM_ERROR_MISMATCH,
       "is quantized int8, group 16; 'fake' was compiled for int8, group 32");
  load(write("bad", stlm::DType::I8, R"({"scheme":"int8"})"), STLM_ERROR_FORMAT,
       "__metadata__.stlm_quantization is not a "
       "quantization");
  load(write("dtype", stlm::DType::U8, R"({"group":32,"scheme":"int8"})"),
       STLM_ERROR_MISMATCH, "'w' is U8 [2, 32], the model's I8 [2, 32]");
  stlm_close(m);
  // A float model refuses a quantized checkpoint.
  a = artifact(kGood);
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK);
  load(good, STLM_ERROR_MISMATCH,
       "is quantized (int8, group 32); 'fake' computes with float weights");
  stlm_close(m);
}

/// The weights blob @logits was last called with.
const uint8_t *seenWeights = nullptr;
int32_t inferSeeingWeights(void *weights, void *, const int32_t *, float *) {
  seenWeights = static_cast<const uint8_t *>(weights);
  return 0;
}

/// A quantized model whose weight and scales the kernels read in tiles.
const char *kTiled = R"({"format": "stlm-artifact", "version": 4,
  "model": "fake", "vocab": 16, "accumulate": 1, "spec": "{}",
  "quantization": {"scheme": "int4", "group": 8},
  "weights_size": 512, "arena_size": 64, "inputs": [[2, 4], [2, 4]],
  "params": [{"name": "w", "dtype": "U8", "shape": [32, 8], "offset": 0,
              "layout": "tiles16"},
             {"name": "w.scale", "dtype": "F32", "shape": [32, 2],
              "offset": 256, "layout": "tiles16"}],
  "state": []})";

TEST(Runtime, LoadsQuantizedWeightsIntoTheKernelsTiles) {
  stlm_artifact a = quantizedArtifact(kTiled);
  a.logits = inferSeeingWeights;
  stlm_model *m = nullptr;
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  // Row-major int4 bytes and scales, as a quantized checkpoint has them.
  std::vector<uint8_t> payload(32 * 8);
  for (size_t i = 0; i < payload.size(); ++i)
    payload[i] = static_cast<uint8_t>(i * 37 + 11);
  std::vector<float> scales(64);
  for (size_t i = 0; i < scales.size(); ++i)
    scales[i] = 0.5f + static_cast<float>(i);
  std::string path = ::testing::TempDir() + "/tiled.safetensors", error;
  ASSERT_TRUE(stlm::writeSafeTensors(
      path,
      {{"w", stlm::DType::U8, {32, 8}, payload.data(), payload.size()},
       {"w.scale", stlm::DType::F32, {32, 2}, scales.data(), 256}},
      {{"stlm_quantization", R"({"group":8,"scheme":"int4"})"}}, error))
      << error;
  ASSERT_EQ(stlm_load(m, path.c_str()), STLM_OK) << stlm_error_message(m);
  std::vector<float> logits(static_cast<size_t>(stlm_logits_size(m)));
  std::vector<int32_t> tokens(8, 1);
  ASSERT_EQ(stlm_logits(m, tokens.data(), logits.data()), STLM_OK);
  ASSERT_NE(seenWeights, nullptr);
  // The blob holds the tiles; the scales read back in rows.
  std::vector<uint8_t> tiles(payload.size());
  stlm::quant::packTiles(true, payload.data(), 32, 16, tiles.data());
  EXPECT_EQ(std::vector<uint8_t>(seenWeights, seenWeights + tiles.size()),
            tiles);
  EXPECT_NE(tiles, payload); // not vacuous
  std::vector<float> read(64), tiledScales(64);
  std::memcpy(tiledScales.data(), seenWeights + 256, 256);
  EXPECT_EQ(tiledScales[1], scales[2]); // output 1, group 0
  ASSERT_EQ(stlm_read(m, "w.scale", read.data(), 64), STLM_OK);
  EXPECT_EQ(read, scales);
  // A scale written goes to its place in the tiles.
  scales[2 * 5 + 1] = -3.0f;
  ASSERT_EQ(stlm_write(m, "w.scale", scales.data(), 64), STLM_OK);
  ASSERT_EQ(stlm_logits(m, tokens.data(), logits.data()), STLM_OK);
  std::memcpy(tiledScales.data(), seenWeights + 256, 256);
  EXPECT_EQ(tiledScales[16 + 5], -3.0f); // output 5, group 1
  ASSERT_EQ(stlm_read(m, "w.scale", read.data(), 64), STLM_OK);
  EXPECT_EQ(read, scales);
  stlm_close(m);
}

TEST(Runtime, RefusesALayoutAWeightCannotHave) {
  auto refused = [](const std::string &from, const std::string &to,
                    const std::string &says) {
    std::string manifest = kTiled;
    manifest.replace(manifest.find(from), from.size(), to);
    stlm_artifact a = quantizedArtifact(manifest.c_str());
    expectRefused(a, STLM_ERROR_FORMAT, says);
  };
  const std::string cannot = "a layout it cannot have";
  // An unknown layout; outputs that are no whole number of blocks; an
  // int4 group of 4 (a tile column holds 8 inputs); a layout that is not
  // a string; an int8 payload in an int4 model; a layout on state.
  refused(R"("offset": 0,
              "layout": "tiles16")",
          R"("offset": 0, "layout": "tiles8")", cannot);
  refused(R"("shape": [32, 8])", R"("shape": [24, 8])", cannot);
  refused(R"("group": 8})", R"("group": 4})", cannot);
  refused(R"("shape": [32, 2],
              "offset": 256, "layout": "tiles16")",
          R"("shape": [32, 2], "offset": 256, "layout": 16)", cannot);
  refused(R"("dtype": "U8")", R"("dtype": "I8")", cannot);
  refused(R"("state": [])",
          R"("state": [{"name": "s", "dtype": "F32", "shape": [16, 1],
                        "offset": 448, "layout": "tiles16"}])",
          cannot);
  // Tiles in pairs: a weight's scales tiled too, and of its shape; a
  // tiled float tensor only as a tiled weight's scales.
  const std::string pair = "without its pair";
  refused(R"("offset": 256, "layout": "tiles16")", R"("offset": 256)",
          "tiles 'w' " + pair);
  refused(R"("shape": [32, 2],
              "offset": 256)",
          R"("shape": [32, 1], "offset": 256)", "tiles 'w' " + pair);
  refused(R"("offset": 0,
              "layout": "tiles16")",
          R"("offset": 0)", "tiles 'w.scale' " + pair);
  refused(R"("name": "w.scale")", R"("name": "w.scales")", "tiles 'w' " + pair);
  std::string manifest = kGood;
  manifest.replace(manifest.find(R"("offset": 0})"), 12,
                   R"("offset": 0, "layout": "tiles16"})");
  stlm_artifact a = artifact(manifest.c_str());
  expectRefused(a, STLM_ERROR_FORMAT, "gives 'w' " + cannot);
}

TEST(Runtime, RefusesInputsThatAreNotABatch) {
  for (const char *inputs :
       {R"([[2, 4]])", R"([[2, 4], [2, 5]])", R"([[2, 4], [2, 4], [2]])",
        R"([[2, 4], [2, 4], [], []])"}) {
    std::string manifest = kGood;
    manifest.replace(manifest.find("[[2, 4], [2, 4]]"), 16, inputs);
    stlm_artifact a = artifact(manifest.c_str());
    expectRefused(a, STLM_ERROR_FORMAT, "inputs are not [batch, context]");
  }
  // A byte-pool model (the manifest gives its chunks) takes one input,
  // [batch, context] bytes, and its chunk shape must fit the row.
  for (const char *inputs : {R"([[2, 4], [2, 4]])", R"([[2, 4, 1]])"}) {
    std::string manifest = kGood;
    manifest.replace(manifest.find("[[2, 4], [2, 4]]"), 16, inputs);
    manifest.replace(manifest.find("\"inputs\""), 0,
                     "\"chunks\": [2, 2], ");
    stlm_artifact a = artifact(manifest.c_str());
    expectRefused(a, STLM_ERROR_FORMAT, "not the [batch, context] bytes");
  }
  std::string pool = kGood;
  pool.replace(pool.find("[[2, 4], [2, 4]]"), 16, "[[2, 4]]");
  pool.replace(pool.find("\"inputs\""), 0, "\"chunks\": [5, 2], ");
  stlm_artifact a = artifact(pool.c_str());
  expectRefused(a, STLM_ERROR_FORMAT, "gives 5 chunks of 2 bytes");
  // How it chunks: a known mode, a stride for `fixed` only (within the
  // slots), `given` exactly with chunk starts.
  for (const char *chunking :
       {R"("chunking": {"mode": "bytes"}, )",
        R"("chunking": {"mode": "fixed"}, )",
        R"("chunking": {"mode": "fixed", "stride": 3}, )",
        R"("chunking": {"mode": "given"}, )",
        R"("chunking": {"mode": "words"}, "chunk_starts": true, )",
        R"("chunking": 7, )"}) {
    std::string bad = kGood;
    bad.replace(bad.find("[[2, 4], [2, 4]]"), 16, "[[2, 4]]");
    bad.replace(bad.find("\"inputs\""), 0,
                std::string("\"chunks\": [2, 2], ") + chunking);
    a = artifact(bad.c_str());
    expectRefused(a, STLM_ERROR_FORMAT, "bad chunking");
  }
}

TEST(Runtime, PassesEachMicroBatchItsMaskSeed) {
  std::string masked = kGood;
  masked.replace(masked.find("[[2, 4], [2, 4]]"), 16, "[[2, 4], [2, 4], []]");
  stlm_artifact a = artifact(masked.c_str());
  stlm_model *m = nullptr;
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  EXPECT_EQ(stlm_uses_seed(m), 1);
  int32_t batch[8] = {};
  float loss = 0;
  stlm_step_result r;
  seenSeeds.clear();
  int32_t seed = 77;
  ASSERT_EQ(stlm_train_step_seeded(m, batch, batch, &seed, &r), STLM_OK);
  ASSERT_EQ(stlm_grad_seeded(m, batch, batch, 78, &loss), STLM_OK);
  ASSERT_EQ(stlm_eval_seeded(m, batch, batch, 79, &loss), STLM_OK);
  ASSERT_EQ(stlm_train_step(m, batch, batch, &r), STLM_OK);
  ASSERT_EQ(stlm_eval(m, batch, batch, &loss), STLM_OK);
  EXPECT_EQ(seenSeeds, (std::vector<int32_t>{77, 78, 79, 0, 0}));
  EXPECT_EQ(stlm_train_step_seeded(m, batch, batch, nullptr, &r),
            STLM_ERROR_ARGUMENT);
  stlm_close(m);

  // With accumulation, micro-batch i gets seeds[i].
  std::string accumulating = masked;
  accumulating.replace(accumulating.find("\"accumulate\": 1"), 15,
                       "\"accumulate\": 3");
  a = artifact(accumulating.c_str());
  a.train_step = nullptr;
  a.accumulate = step;
  a.apply = apply;
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  int32_t tokens[24] = {}, seeds[3] = {5, 6, 7};
  seenSeeds.clear();
  ASSERT_EQ(stlm_train_step_seeded(m, tokens, tokens, seeds, &r), STLM_OK);
  EXPECT_EQ(seenSeeds, (std::vector<int32_t>{5, 6, 7}));
  // A bad id in the last micro-batch: refused before any is summed.
  tokens[20] = 99;
  seenSeeds.clear();
  EXPECT_EQ(stlm_train_step_seeded(m, tokens, tokens, seeds, &r),
            STLM_ERROR_ARGUMENT);
  EXPECT_TRUE(seenSeeds.empty());
  stlm_close(m);

  a = artifact(kGood);
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  EXPECT_EQ(stlm_uses_seed(m), 0);
  stlm_close(m);
}

TEST(Runtime, RefusesIdsOutsideTheVocabulary) {
  stlm_artifact a = artifact(kGood);
  stlm_model *m = nullptr;
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  int32_t good[8] = {0, 1, 2, 3, 15, 14, 13, 12};
  int32_t high[8] = {0, 1, 2, 3, 16, 0, 0, 0};
  int32_t negative[8] = {0, 0, -1, 0, 0, 0, 0, 0};
  float loss = 0, logits[2 * 4 * 16];
  stlm_step_result r;
  seenSeeds.clear();
  EXPECT_EQ(stlm_train_step(m, high, good, &r), STLM_ERROR_ARGUMENT);
  EXPECT_STREQ(stlm_error_message(m), "train step: token 16 at position 4 is "
                                      "outside the vocabulary of 16");
  EXPECT_EQ(stlm_eval(m, good, negative, &loss), STLM_ERROR_ARGUMENT);
  EXPECT_STREQ(stlm_error_message(m), "evaluation: target -1 at position 2 "
                                      "is outside the vocabulary of 16");
  EXPECT_EQ(stlm_grad(m, negative, good, &loss), STLM_ERROR_ARGUMENT);
  EXPECT_EQ(stlm_logits(m, high, logits), STLM_ERROR_ARGUMENT);
  EXPECT_TRUE(seenSeeds.empty()) << "no entry point ran";
  EXPECT_EQ(stlm_eval(m, good, good, &loss), STLM_OK);
  stlm_close(m);
}

/// A data-parallel artifact (split_step, accumulate 1): grad_acc.w and
/// loss_acc right after the optimizer state. Its accumulate adds 1, 2, 3, 4
/// to the sums and returns a loss of 2.5; its apply records the sums it
/// finds, then clears them, as the compiled one does.
const char *kSplit = R"({"format": "stlm-artifact", "version": 4,
  "model": "fake", "vocab": 16, "accumulate": 1, "split_step": true,
  "spec": "{}", "weights_size": 128, "arena_size": 64,
  "inputs": [[2, 4], [2, 4]],
  "params": [{"name": "w", "dtype": "F32", "shape": [4], "offset": 0}],
  "state": [{"name": "opt.m.w", "dtype": "F32", "shape": [4], "offset": 16},
            {"name": "opt.v.w", "dtype": "F32", "shape": [4], "offset": 32},
            {"name": "step", "dtype": "I32", "shape": [], "offset": 48},
            {"name": "grad_acc.w", "dtype": "F32", "shape": [4],
             "offset": 64},
            {"name": "loss_acc", "dtype": "F32", "shape": [], "offset": 80}]})";

std::vector<float> appliedSums;
int32_t splitAccumulate(void *weights, void *, const int32_t *,
                        const int32_t *, const int32_t *, float *loss) {
  float *sums = reinterpret_cast<float *>(static_cast<char *>(weights) + 64);
  for (int i = 0; i < 4; ++i)
    sums[i] += static_cast<float>(i + 1);
  *loss = 2.5f;
  return 0;
}
int32_t splitApply(void *weights, void *, float *out) {
  float *sums = reinterpret_cast<float *>(static_cast<char *>(weights) + 64);
  appliedSums.assign(sums, sums + 4);
  std::memset(sums, 0, 16);
  out[0] = 0.5f, out[1] = 0.25f;
  return 0;
}

stlm_artifact splitArtifact(const char *manifest) {
  stlm_artifact a = artifact(manifest);
  a.train_step = nullptr;
  a.accumulate = splitAccumulate;
  a.apply = splitApply;
  return a;
}

/// What the hook saw, and the other rank it pretends to be.
struct FakeRanks {
  std::vector<std::vector<float>> calls;
  std::vector<float> other; // the other rank's buffer, added in
  int result = 0;
};
int fakeAllreduce(float *data, size_t count, void *user) {
  auto *f = static_cast<FakeRanks *>(user);
  f->calls.emplace_back(data, data + count);
  for (size_t i = 0; i < count && i < f->other.size(); ++i)
    data[i] += f->other[i];
  return f->result;
}

TEST(Runtime, AllReducesTheGradientSumsAndLossAsOneBuffer) {
  stlm_artifact a = splitArtifact(kSplit);
  stlm_model *m = nullptr;
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  int32_t batch[8] = {};
  stlm_step_result r;
  // Alone, a split step is the plain accumulate + apply.
  appliedSums.clear();
  ASSERT_EQ(stlm_train_step(m, batch, batch, &r), STLM_OK)
      << stlm_error_message(m);
  EXPECT_EQ(appliedSums, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(r.loss, 2.5f);

  // Two ranks: one hook call over grad_acc.w and loss_acc (5 floats), the
  // other rank's sums added, then the mean over the ranks applied.
  FakeRanks ranks;
  ranks.other = {3, 4, 5, 6, 0.5f};
  ASSERT_EQ(stlm_set_allreduce(m, 2, fakeAllreduce, &ranks), STLM_OK)
      << stlm_error_message(m);
  ASSERT_EQ(stlm_train_step(m, batch, batch, &r), STLM_OK)
      << stlm_error_message(m);
  ASSERT_EQ(ranks.calls.size(), 1u);
  EXPECT_EQ(ranks.calls[0], (std::vector<float>{1, 2, 3, 4, 2.5f}));
  EXPECT_EQ(appliedSums, (std::vector<float>{2, 3, 4, 5}));
  EXPECT_EQ(r.loss, 1.5f); // (2.5 + 0.5) / 2 ranks
  EXPECT_EQ(r.grad_norm, 0.5f);
  EXPECT_EQ(r.lr, 0.25f);

  // A failing hook: no update, and the sums start from zero again.
  ranks.result = 3;
  appliedSums.clear();
  EXPECT_EQ(stlm_train_step(m, batch, batch, &r), STLM_ERROR_COLLECTIVE);
  EXPECT_NE(std::string(stlm_error_message(m)).find("all-reduce hook failed"),
            std::string::npos)
      << stlm_error_message(m);
  EXPECT_TRUE(appliedSums.empty());
  ranks.result = 0;
  ranks.other.clear();
  ASSERT_EQ(stlm_set_allreduce(m, 1, fakeAllreduce, &ranks), STLM_OK);
  ASSERT_EQ(stlm_train_step(m, batch, batch, &r), STLM_OK);
  EXPECT_EQ(appliedSums, (std::vector<float>{1, 2, 3, 4}));

  // A null hook turns it off; a bad rank count is refused.
  ranks.calls.clear();
  ASSERT_EQ(stlm_set_allreduce(m, 0, nullptr, nullptr), STLM_OK);
  ASSERT_EQ(stlm_train_step(m, batch, batch, &r), STLM_OK);
  EXPECT_TRUE(ranks.calls.empty());
  EXPECT_EQ(stlm_set_allreduce(m, 0, fakeAllreduce, &ranks),
            STLM_ERROR_ARGUMENT);
  stlm_close(m);
}

TEST(Runtime, RefusesDataParallelWithoutASplitStep) {
  FakeRanks ranks;
  // A fused train_step.
  stlm_artifact a = artifact(kGood);
  stlm_model *m = nullptr;
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  EXPECT_EQ(stlm_set_allreduce(m, 2, fakeAllreduce, &ranks),
            STLM_ERROR_ARGUMENT);
  EXPECT_NE(std::string(stlm_error_message(m)).find("stlm-compile "
                                                    "--data-parallel"),
            std::string::npos)
      << stlm_error_message(m);
  stlm_close(m);

  // split_step with a train_step, or without accumulate and apply.
  a = artifact(kSplit);
  expectRefused(a, STLM_ERROR_FORMAT, "does not match its training entry");
  a = splitArtifact(kSplit);
  a.apply = nullptr;
  expectRefused(a, STLM_ERROR_FORMAT, "lacks entry points");

  // No loss_acc (an artifact of an older compiler).
  std::string noLoss = kSplit;
  noLoss.replace(noLoss.find(R"(,
            {"name": "loss_acc")"),
                 std::string(R"(,
            {"name": "loss_acc", "dtype": "F32", "shape": [], "offset": 80})")
                     .size(),
                 "");
  a = splitArtifact(noLoss.c_str());
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  EXPECT_EQ(stlm_set_allreduce(m, 2, fakeAllreduce, &ranks),
            STLM_ERROR_FORMAT);
  EXPECT_NE(std::string(stlm_error_message(m)).find("no loss_acc"),
            std::string::npos)
      << stlm_error_message(m);
  stlm_close(m);

  // Something else between the sums and loss_acc.
  std::string apart = kSplit;
  apart.replace(apart.find(R"("offset": 80})"), 13, R"("offset": 96})");
  apart.replace(apart.find(R"("name": "step", "dtype": "I32", "shape": [], "offset": 48)"),
                std::string(R"("name": "step", "dtype": "I32", "shape": [], "offset": 48)").size(),
                R"("name": "step", "dtype": "I32", "shape": [], "offset": 84)");
  a = splitArtifact(apart.c_str());
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  EXPECT_EQ(stlm_set_allreduce(m, 2, fakeAllreduce, &ranks),
            STLM_ERROR_FORMAT);
  EXPECT_NE(std::string(stlm_error_message(m)).find("'step' lies between"),
            std::string::npos)
      << stlm_error_message(m);
  stlm_close(m);

  // Integer sums, or a KV cache inside the range.
  std::string ints = kSplit;
  ints.replace(ints.find(R"("grad_acc.w", "dtype": "F32")"),
               std::string(R"("grad_acc.w", "dtype": "F32")").size(),
               R"("grad_acc.w", "dtype": "I32")");
  a = splitArtifact(ints.c_str());
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  EXPECT_EQ(stlm_set_allreduce(m, 2, fakeAllreduce, &ranks),
            STLM_ERROR_FORMAT);
  EXPECT_NE(std::string(stlm_error_message(m))
                .find("'grad_acc.w' is not a float tensor"),
            std::string::npos)
      << stlm_error_message(m);
  stlm_close(m);
  std::string cached = apart; // loss_acc at 96: a cache at 84 lies between
  cached.replace(cached.find(R"("name": "step", "dtype": "I32", "shape": [], "offset": 84)"),
                 std::string(R"("name": "step", "dtype": "I32", "shape": [], "offset": 84)").size(),
                 R"("name": "step", "dtype": "I32", "shape": [], "offset": 48)");
  cached.replace(cached.rfind('}'), 1,
                 R"(, "cache": [{"name": "kv.0.k", "dtype": "F32", "shape": [2], "offset": 84}]})");
  a = splitArtifact(cached.c_str());
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  EXPECT_EQ(stlm_set_allreduce(m, 2, fakeAllreduce, &ranks),
            STLM_ERROR_FORMAT);
  EXPECT_NE(std::string(stlm_error_message(m)).find("a KV cache lies "
                                                    "between them"),
            std::string::npos)
      << stlm_error_message(m);
  stlm_close(m);
  EXPECT_TRUE(ranks.calls.empty());
}

TEST(Runtime, RefusesNullAndForeignLibraries) {
  stlm_model *m = nullptr;
  EXPECT_EQ(stlm_open(nullptr, &m), STLM_ERROR_ARGUMENT);
  stlm_close(m);
  m = nullptr;
  EXPECT_EQ(stlm_open_library("/nonexistent/libx.so", nullptr, &m),
            STLM_ERROR_IO);
  stlm_close(m);
  m = nullptr;
  EXPECT_EQ(stlm_open_library("libm.so.6", "m", &m), STLM_ERROR_FORMAT);
  EXPECT_NE(std::string(stlm_error_message(m)).find("not an stlm artifact"),
            std::string::npos)
      << stlm_error_message(m);
  stlm_close(m);
}

TEST(Runtime, RefusesBadGenerationRequests) {
  stlm_artifact a = artifact(kGood);
  stlm_model *m = nullptr;
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK);
  int32_t prompt[2] = {1, 2};
  stlm_sampling bad = {1.0f, 0, 0.0f, 1}; // top_p 0
  EXPECT_EQ(stlm_generate(m, prompt, 2, 4, &bad, nullptr, nullptr, nullptr),
            STLM_ERROR_ARGUMENT);
  EXPECT_NE(std::string(stlm_error_message(m)).find("top-p"),
            std::string::npos);
  stlm_sampling negative = {1.0f, -3, 1.0f, 1};
  EXPECT_EQ(stlm_generate(m, prompt, 2, 4, &negative, nullptr, nullptr,
                          nullptr),
            STLM_ERROR_ARGUMENT);
  int32_t outside = 16;
  EXPECT_EQ(stlm_generate(m, &outside, 1, 4, nullptr, nullptr, nullptr,
                          nullptr),
            STLM_ERROR_ARGUMENT);
  EXPECT_EQ(stlm_logits(m, nullptr, nullptr), STLM_ERROR_ARGUMENT);
  stlm_close(m);
}


//===----------------------------------------------------------------------===//
// A device artifact (stlm_device) on a fake device: the context holds its
// own copy of the weights blob, so these tests see what the runtime moves
// between host and device, and when.
//===----------------------------------------------------------------------===//

struct FakeDevice {
  std::vector<float> weights = std::vector<float>(16, 0.0f); // 64 bytes
  std::vector<float> arena = std::vector<float>(16, 0.0f);
  int uploads = 0, downloads = 0;
  bool failCopies = false;
  std::string message;
};
FakeDevice *lastDevice = nullptr;
bool failOpen = false;

void *fakeOpen(char *error, size_t size) {
  if (failOpen) {
    std::snprintf(error, size, "no fake device here");
    return nullptr;
  }
  return lastDevice = new FakeDevice;
}
void fakeClose(void *c) {
  if (lastDevice == c)
    lastDevice = nullptr;
  delete static_cast<FakeDevice *>(c);
}
int32_t fakeCopy(void *ctx, int32_t buffer, int64_t offset, void *host,
                 int64_t bytes, int32_t toDevice) {
  auto *d = static_cast<FakeDevice *>(ctx);
  if (d->failCopies) {
    d->message = "the fake device lost its memory";
    return -1;
  }
  char *dev = reinterpret_cast<char *>(buffer == 0 ? d->weights.data()
                                                   : d->arena.data()) +
              offset;
  if (toDevice) {
    std::memcpy(dev, host, bytes);
    ++d->uploads;
  } else {
    std::memcpy(host, dev, bytes);
    ++d->downloads;
  }
  return 0;
}
const char *fakeMessage(const void *ctx) {
  return static_cast<const FakeDevice *>(ctx)->message.c_str();
}
const stlm_device kFake = {"fake", fakeOpen, fakeClose, fakeCopy,
                           fakeMessage};

/// A training step on the fake device: w += 1 in the device's blob; the
/// gradient "grad.w" (arena offset 0) is 2. Fails with -1 (a device
/// failure) when the context is not the one opened.
int32_t deviceStep(void *ctx, void *arena, const int32_t *, const int32_t *,
                   const int32_t *, float *out) {
  auto *d = static_cast<FakeDevice *>(ctx);
  if (d != lastDevice || arena != nullptr) {
    if (lastDevice)
      lastDevice->message = "called with the wrong context";
    return -1;
  }
  for (int i = 0; i < 4; ++i) {
    d->weights[i] += 1;
    d->arena[i] = 2;
  }
  out[0] = out[1] = out[2] = 0;
  return 0;
}

const char *kDeviceManifest = R"({"format": "stlm-artifact", "version": 4,
  "model": "fake", "vocab": 16, "accumulate": 1, "spec": "{}",
  "weights_size": 64, "arena_size": 64, "inputs": [[2, 4], [2, 4]],
  "params": [{"name": "w", "dtype": "F32", "shape": [4], "offset": 0,
              "grad_offset": 0}],
  "state": [{"name": "opt.m.w", "dtype": "F32", "shape": [4], "offset": 16},
            {"name": "opt.v.w", "dtype": "F32", "shape": [4], "offset": 32},
            {"name": "step", "dtype": "I32", "shape": [], "offset": 48}]})";

TEST(RuntimeDevice, MovesTheWeightsOnlyWhenNeeded) {
  stlm_artifact a = artifact(kDeviceManifest);
  a.train_step = deviceStep;
  a.grad = deviceStep;
  a.device = &kFake;
  stlm_model *m = nullptr;
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  ASSERT_NE(lastDevice, nullptr);
  EXPECT_STREQ(stlm_param_name(m, 0), "w");
  EXPECT_EQ(stlm_param_name(m, 1), nullptr);
  EXPECT_EQ(stlm_param_name(m, -1), nullptr);

  // A host write reaches the device before the next step, once.
  float w[4] = {10, 20, 30, 40};
  ASSERT_EQ(stlm_write(m, "w", w, 4), STLM_OK);
  EXPECT_EQ(lastDevice->uploads, 0);
  std::vector<int32_t> ids(8, 1);
  stlm_step_result r;
  ASSERT_EQ(stlm_train_step(m, ids.data(), ids.data(), &r), STLM_OK)
      << stlm_error_message(m);
  EXPECT_EQ(lastDevice->uploads, 1);
  EXPECT_EQ(lastDevice->weights[0], 11);
  ASSERT_EQ(stlm_train_step(m, ids.data(), ids.data(), &r), STLM_OK);
  EXPECT_EQ(lastDevice->uploads, 1) << "nothing changed on the host";

  // A read brings the device's weights back, once; a gradient is read
  // from the device's arena.
  float got[4];
  ASSERT_EQ(stlm_read(m, "w", got, 4), STLM_OK);
  EXPECT_EQ(got[0], 12);
  EXPECT_EQ(got[3], 42);
  int downloads = lastDevice->downloads;
  ASSERT_EQ(stlm_read(m, "w", got, 4), STLM_OK);
  EXPECT_EQ(lastDevice->downloads, downloads);
  ASSERT_EQ(stlm_read(m, "grad.w", got, 4), STLM_OK);
  EXPECT_EQ(got[0], 2);

  // A copy that fails is the device's error, with its message.
  lastDevice->failCopies = true;
  ASSERT_EQ(stlm_write(m, "w", w, 4), STLM_OK); // the host is current
  EXPECT_EQ(stlm_train_step(m, ids.data(), ids.data(), &r),
            STLM_ERROR_DEVICE);
  EXPECT_NE(std::string(stlm_error_message(m)).find("lost its memory"),
            std::string::npos)
      << stlm_error_message(m);
  lastDevice->failCopies = false;
  stlm_close(m);
  EXPECT_EQ(lastDevice, nullptr) << "closing the model closes the device";
}

TEST(RuntimeDevice, ReportsADeviceThatCannotOpenOrFails) {
  stlm_artifact a = artifact(kDeviceManifest);
  a.train_step = deviceStep;
  a.device = &kFake;
  failOpen = true;
  expectRefused(a, STLM_ERROR_DEVICE,
                "cannot open 'fake' on fake: no fake device here");
  failOpen = false;

  stlm_device incomplete = kFake;
  incomplete.copy = nullptr;
  a.device = &incomplete;
  expectRefused(a, STLM_ERROR_FORMAT, "device table is incomplete");

  // An entry point's failure (-1) is the device's, with its message.
  a.device = &kFake;
  stlm_model *m = nullptr;
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK);
  FakeDevice *opened = lastDevice;
  lastDevice = nullptr; // deviceStep now sees a stranger
  std::vector<int32_t> ids(8, 1);
  stlm_step_result r;
  EXPECT_EQ(stlm_train_step(m, ids.data(), ids.data(), &r),
            STLM_ERROR_DEVICE);
  EXPECT_NE(std::string(stlm_error_message(m)).find("train step: fake failed"),
            std::string::npos)
      << stlm_error_message(m);
  lastDevice = opened;
  stlm_close(m);
}

TEST(RuntimeDevice, RefusesDataParallelTraining) {
  // A split device artifact (the fake device's 64-byte blob is enough for
  // the layout up to `step`; no step runs).
  stlm_artifact a = splitArtifact(kSplit);
  a.device = &kFake;
  stlm_model *m = nullptr;
  ASSERT_EQ(stlm_open(&a, &m), STLM_OK) << stlm_error_message(m);
  FakeRanks ranks;
  EXPECT_EQ(stlm_set_allreduce(m, 2, fakeAllreduce, &ranks),
            STLM_ERROR_ARGUMENT);
  EXPECT_NE(std::string(stlm_error_message(m))
                .find("runs on fake; data-parallel training runs host "
                      "artifacts"),
            std::string::npos)
      << stlm_error_message(m);
  stlm_close(m);
}

} // namespace
