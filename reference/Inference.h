//===- Inference.h - eval and generate with the reference evaluator -*- C++ -*-===//
//
// `stlm-run eval` and `stlm-run generate` on a checkpoint (its model spec
// comes from the file's metadata), run by the reference interpreter.
// Generation recomputes the whole context for every token (no KV cache; the
// native path will keep one) and streams the sampled bytes.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_REFERENCE_INFERENCE_H
#define STLM_REFERENCE_INFERENCE_H

#include "runtime/src/Sampling.h"

#include <cstdint>
#include <cstdio>
#include <string>

namespace stlm {

/// Prints the validation loss (and bits per byte where meaningful) of the
/// checkpoint on `dataPath`'s validation split; 0, or 1 with a message.
int evaluateWithReference(const std::string &checkpoint,
                          const std::string &dataPath, int64_t windows,
                          FILE *out, FILE *err);

struct GenerateOptions {
  std::string prompt = "\n";
  int64_t tokens = 200;
  runtime::SamplingOptions sampling;
  uint64_t seed = 0;
};

/// Writes the prompt's continuation, token by token, to `out`; a summary
/// line to `err`. 0, or 1 with a message.
int generateWithReference(const std::string &checkpoint,
                          const GenerateOptions &options, FILE *out,
                          FILE *err);

} // namespace stlm

#endif // STLM_REFERENCE_INFERENCE_H
