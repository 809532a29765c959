//===- FuzzManifest.cpp - an artifact's manifest as the runtime reads it --===//
//
// Any text as the manifest of an otherwise well-formed artifact: stlm_open
// opens it or fails with STLM_ERROR_FORMAT (or STLM_ERROR_MEMORY for sizes
// it cannot allocate) and a message; no layout it accepts places a tensor
// outside its buffers, and reading every tensor stays inside them.
//
//===----------------------------------------------------------------------===//

#include "fuzz/FuzzCheck.h"
#include "stlm/artifact_format.h"
#include "stlm/stlm.h"

#include <string>
#include <vector>

namespace {

// Entry points of the right types; the target only opens the model, so
// none of the kernels runs.
int32_t withLoss(void *, void *, const int32_t *, const int32_t *,
                 const int32_t *, float *) {
  return 0;
}
int32_t apply(void *, void *, float *) { return 0; }
int32_t logits(void *, void *, const int32_t *, float *) { return 0; }
int32_t decode(void *, void *, const int32_t *, const int32_t *, float *) {
  return 0;
}
void *setter(void *) { return nullptr; }
int setThreads(int) { return 0; }

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string manifest(reinterpret_cast<const char *>(data), size);
  stlm_artifact a = {};
  a.abi_version = STLM_ABI_VERSION;
  a.manifest = manifest.c_str();
  // Both forms of training, and (a third of the inputs) none, as a
  // quantized model has: which one the manifest matches decides whether
  // it opens.
  if (size % 3 != 0) {
    if (size % 2) {
      a.accumulate = &withLoss;
      a.apply = &apply;
    } else {
      a.train_step = &withLoss;
    }
    a.grad = &withLoss;
  }
  a.eval = &withLoss;
  a.logits = a.prefill = &logits;
  a.decode_step = &decode;
  a.set_error_handler = a.set_custom_malloc = a.set_custom_free = &setter;
  a.set_num_threads = &setThreads;
  stlm_model *model = nullptr;
  stlm_status s = stlm_open(&a, &model);
  FUZZ_CHECK(s == STLM_OK || s == STLM_ERROR_FORMAT || s == STLM_ERROR_MEMORY,
             "a manifest opens or is a format (or memory) error");
  FUZZ_CHECK(s == STLM_OK || *stlm_error_message(model) != '\0',
             "a refused manifest says why");
  if (s == STLM_OK) {
    FUZZ_CHECK(stlm_batch(model) > 0 && stlm_context(model) > 0,
               "an opened model has a batch and a context");
  }
  stlm_close(model);
  return 0;
}
