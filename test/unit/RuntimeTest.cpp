//===- RuntimeTest.cpp - the C runtime refuses bad artifacts --------------===//
//
// stlm_open on hand-made stlm_artifact descriptors (stub entry points, a
// manifest written here): every malformed artifact is a status and a
// message, never a crash, and a model opened from a good one refuses bad
// generation requests before running anything.
//
//===----------------------------------------------------------------------===//

#include "stlm/stlm.h"

#include <gtest/gtest.h>

#include <string>

namespace {

int32_t step(void *, void *, const int32_t *, const int32_t *, float *) {
  return 0;
}
int32_t infer(void *, void *, const int32_t *, float *) { return 0; }
int32_t decode(void *, void *, const int32_t *, const int32_t *, float *) {
  return 0;
}
void *setter(void *) { return nullptr; }
int threads(int) { return 0; }

const char *kGood = R"({"format": "stlm-artifact", "version": 2,
  "model": "fake", "vocab": 16, "accumulate": 1, "spec": "{}",
  "weights_size": 64, "arena_size": 64, "inputs": [[2, 4], [2, 4]],
  "params": [{"name": "w", "dtype": "F32", "shape": [4], "offset": 0}],
  "state": []})";

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
  expectRefused(a, STLM_ERROR_FORMAT, "version 2 manifest");
  std::string outside = kGood;
  outside.replace(outside.find("\"offset\": 0"), 11, "\"offset\": 60");
  a = artifact(outside.c_str());
  expectRefused(a, STLM_ERROR_FORMAT, "places 'w' outside its buffers");
  std::string accumulating = kGood;
  accumulating.replace(accumulating.find("\"accumulate\": 1"), 15,
                       "\"accumulate\": 4");
  a = artifact(accumulating.c_str());
  expectRefused(a, STLM_ERROR_FORMAT, "does not match its training entry");
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

} // namespace
