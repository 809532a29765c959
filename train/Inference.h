//===- Inference.h - what eval and generate do on either engine -*- C++ -*-===//
//
// `stlm-run eval` and `stlm-run generate` on a checkpoint (its model spec
// comes from the file's metadata): the checks, the validation loop and the
// output both engines share. The engines' own halves are in
// train/ReferenceEngine.h and train/NativeEngine.h.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_TRAIN_INFERENCE_H
#define STLM_TRAIN_INFERENCE_H

#include "frontend/Data.h"
#include "frontend/Spec.h"
#include "support/SafeTensors.h"
#include "support/Sampling.h"
#include "train/Batches.h"

#include "support/Quantize.h"
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace stlm {

/// The checkpoint at `path` with its stored model spec (in `spec`),
/// checked against its own tensors; null with `error` set. A quantized
/// checkpoint (frontend/Quantized.h) is accepted, with its format in
/// `*quantized`, only where the caller passes `quantized` (it is reset to
/// nothing for a float one); otherwise it is refused by name.
std::unique_ptr<SafeTensorsFile>
openCheckpoint(const std::string &path, ModelSpec &spec, std::string &error,
               std::optional<quant::Format> *quantized = nullptr);
/// The same, for the spec alone.
bool checkpointSpec(const std::string &path, ModelSpec &spec,
                    std::string &error,
                    std::optional<quant::Format> *quantized = nullptr);

/// Sets a tensor of an engine by name; false with the error set.
using TensorSetter =
    std::function<bool(const std::string &name, const std::vector<int64_t> &,
                       const std::vector<float> &, std::string &error)>;
/// The distill objective of `spec`, whose teacher it learns from, or null.
const ObjectiveSpec *teacherObjective(const ModelSpec &spec);
/// Reads the teacher of a distilling `spec` from its checkpoint (which
/// must hold the model `spec` was compiled to learn from) into the frozen
/// states `teacher.<name>` through `set`; true at once without a teacher.
bool loadTeacherWeights(const ModelSpec &spec, const TensorSetter &set,
                        std::string &error);

/// What `stlm-run eval` validates on.
struct EvalData {
  std::string path;        // the text
  std::string chunkStarts; // its chunk starts (`given` chunking), else ""
  int64_t windows = 0;     // validation windows; 0: all
};

/// The validation split of `what.path` as `spec` reads it (checked before
/// any model is loaded); false with `error` set.
bool loadValidation(const ModelSpec &spec, const EvalData &what, Feed &feed,
                    TextData &data, std::string &error);
/// The mean of `loss` over the first `what.windows` validation windows,
/// printed as `stlm-run eval`'s line; false with `error` set. Both backends
/// evaluate through it.
bool reportValidation(const ModelSpec &spec, const EvalData &what,
                      const Feed &feed, const TextData &data,
                      const BatchLoss &loss, FILE *out, std::string &error);

struct GenerateOptions {
  std::string prompt = "\n";
  int64_t tokens = 200;
  sampling::SamplingOptions sampling;
  uint64_t seed = 0;
  /// Samples of the prompt (generate --batch): sample i is sampled with
  /// seed + i; above 1 they are printed by printSamples. With `prompts`,
  /// how many of them are generated together.
  int64_t batch = 1;
  /// generate --prompts FILE: one sample of each (seed + i), `prompt`
  /// unused; printed by printSamples.
  std::vector<std::string> prompts;

  /// The prompt of each sample: `prompts`, or `batch` copies of `prompt`.
  std::vector<std::string> samplePrompts() const {
    return prompts.empty()
               ? std::vector<std::string>(static_cast<size_t>(batch), prompt)
               : prompts;
  }
};

/// The lines of `path` (a file of at most 16 MiB), each one prompt
/// (`generate --prompts`; the newline, and a carriage return before it,
/// are not part of it); false with `error` set for a file that cannot be
/// read, has no lines, or has an empty one.

/// Why `spec` cannot continue `options.prompt` as asked (bad sampling
/// options, an empty prompt, a byte outside the vocabulary, a byte-pool
/// model, a batch of a byte-pool model or of more than 4096), or "" with
/// the prompt's token ids in `prompt`. Both backends check with it.
std::string generationProblem(const ModelSpec &spec,
                              const GenerateOptions &options,
                              std::vector<int32_t> &prompt);
bool readPrompts(const std::string &path, std::vector<std::string> &prompts,
                 std::string &error);
/// The samples of a generation with `batch` above 1 or `prompts`, each after a
/// line
/// `=== sample i of N (seed S) ===` and followed by a newline, on `out`.
void printSamples(const std::vector<std::string> &samples,
                  const GenerateOptions &options, FILE *out);
/// The summary line of a generation that began at `start`, on `err`.
void printGenerated(int64_t bytes, std::chrono::steady_clock::time_point start,
                    FILE *err);

} // namespace stlm

#endif // STLM_TRAIN_INFERENCE_H
