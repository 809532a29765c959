//===- Inference.h - eval and generate with the reference evaluator -*- C++ -*-===//
//
// `stlm-run eval` and `stlm-run generate` on a checkpoint (its model spec
// comes from the file's metadata), run by the reference interpreter.
// Generation recomputes the model's window for every token (no KV cache;
// the native path keeps one) and streams the sampled bytes.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_REFERENCE_INFERENCE_H
#define STLM_REFERENCE_INFERENCE_H

#include "frontend/Data.h"
#include "frontend/Spec.h"
#include "reference/Batches.h"
#include "runtime/src/Sampling.h"

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace stlm {

/// The model spec stored in a checkpoint, checked against the checkpoint's
/// own tensors; false with `error` set.
bool checkpointSpec(const std::string &path, ModelSpec &spec,
                    std::string &error);

/// Prints the validation loss (and bits per byte where meaningful) of the
/// checkpoint on `dataPath`'s validation split; 0, or 1 with a message.
int evaluateWithReference(const std::string &checkpoint,
                          const std::string &dataPath, int64_t windows,
                          FILE *out, FILE *err);
/// The validation split of `dataPath` as `spec` reads it (checked before
/// any model is loaded); false with `error` set.
bool loadValidation(const ModelSpec &spec, const std::string &dataPath,
                    Feed &feed, TextData &data, std::string &error);
/// The mean of `loss` over the first `windows` validation windows (0: all),
/// printed as `stlm-run eval`'s line; false with `error` set. Both backends
/// evaluate through it.
bool reportValidation(const ModelSpec &spec, const std::string &dataPath,
                      const Feed &feed, const TextData &data, int64_t windows,
                      const BatchLoss &loss, FILE *out, std::string &error);

struct GenerateOptions {
  std::string prompt = "\n";
  int64_t tokens = 200;
  runtime::SamplingOptions sampling;
  uint64_t seed = 0;
};

/// Why `spec` cannot continue `options.prompt` as asked (bad sampling
/// options, an empty prompt, a byte outside the vocabulary, a byte-pool
/// model), or "" with the prompt's token ids in `prompt`. Both backends
/// check with it.
std::string generationProblem(const ModelSpec &spec,
                              const GenerateOptions &options,
                              std::vector<int32_t> &prompt);
/// The summary line of a generation, on `err`.
void printGenerated(int64_t bytes, double seconds, FILE *err);

/// Writes the prompt's continuation, token by token, to `out`; a summary
/// line to `err`. The model sees the window of runtime::ContextWindow (as
/// the native KV cache does) and recomputes it for every token. 0, or 1
/// with a message.
int generateWithReference(const std::string &checkpoint,
                          const GenerateOptions &options, FILE *out,
                          FILE *err);

} // namespace stlm

#endif // STLM_REFERENCE_INFERENCE_H
