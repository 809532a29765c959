//===- ReferenceEngine.h - train, evaluate, generate with the oracle -*- C++ -*-===//
//
// `stlm-run train|eval|generate --backend reference`: the model of a spec
// built in the dialect, its training step derived (the `train` stage of
// passes/Pipelines.h), and every function run by the reference interpreter
// (reference/Interpreter.h) in fp32. Generation recomputes the model's
// window for every token (no KV cache; the native engine keeps one).
//
//===----------------------------------------------------------------------===//

#ifndef STLM_TRAIN_REFERENCEENGINE_H
#define STLM_TRAIN_REFERENCEENGINE_H

#include "train/Entropy.h"
#include "train/Inference.h"
#include "train/Trainer.h"

#include <cstdio>
#include <memory>
#include <string>

namespace stlm {

/// The reference evaluator as a TrainEngine.
std::unique_ptr<TrainEngine> referenceEngine();

/// train() with referenceEngine().
int trainWithReference(const ModelSpec &spec, const TrainOptions &options,
                       FILE *err);

/// Prints the validation loss (and bits per byte where meaningful) of the
/// checkpoint on the validation split of `what.path`; 0, or 1 with a
/// message.
int evaluateWithReference(const std::string &checkpoint, const EvalData &what,
                          FILE *out, FILE *err);

/// `stlm-run entropy` with the reference evaluator's @logits.
int entropyWithReference(const EntropyOptions &options, FILE *out, FILE *err);

/// Writes the prompt's continuation, token by token, to `out`; a summary
/// line to `err`. The model sees the window of sampling::ContextWindow (as
/// the native KV cache does) and recomputes it for every token. 0, or 1
/// with a message.
int generateWithReference(const std::string &checkpoint,
                          const GenerateOptions &options, FILE *out,
                          FILE *err);

} // namespace stlm

#endif // STLM_TRAIN_REFERENCEENGINE_H
