//===- NativeEngine.h - train, evaluate, generate with an artifact -*- C++ -*-===//
//
// `stlm-run train|eval|generate --backend native|auto`: compiles the spec
// (given, or stored in the checkpoint) with stlm-compile, run as a
// subprocess, into --artifact DIR or a cache keyed by the spec and the
// compiler, and runs the artifact's lib<name>.so through the C runtime
// (stlm/stlm.h). With `fallback` (the `auto` backend), a spec stlm-compile
// reports it cannot compile yet (exit status 3) is run by the reference
// engine instead, with a note saying why.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_TRAIN_NATIVEENGINE_H
#define STLM_TRAIN_NATIVEENGINE_H

#include "train/Entropy.h"
#include "train/Inference.h"
#include "train/Trainer.h"

#include "support/Quantize.h"

#include <cstdio>
#include <memory>
#include <optional>
#include <string>

namespace stlm {

struct NativeOptions {
  std::string specPath;    // what stlm-compile compiles; "": the spec as JSON
  std::string artifactDir; // "" for the cache
  std::string compiler;    // stlm-compile to run
  std::string device = "cpu"; // "cpu" or "cuda": stlm-compile's --target
  int threads = 0;         // 0: all cores
  FILE *progress = stderr; // "compiling ..." notes; null for quiet
  bool fallback = false;   // the reference engine for what cannot compile
  FILE *notes = stderr;    // the fallback's note; null for quiet
  bool dataParallel = false; // stlm-compile --data-parallel (the step split
                             // into accumulate and apply), for joinRanks
  /// stlm-compile --quantize: the format of a quantized checkpoint that
  /// eval, generate or entropy run (an inference-only artifact).
  std::optional<quant::Format> quantize;
  /// stlm-compile --decode-batch: batched generation of this many
  /// sequences (generate --batch); 0: without.
  int64_t decodeBatch = 0;
};

/// The engine of a training run: the artifact's, or (with `fallback`) the
/// reference engine's when stlm-compile cannot compile the spec yet.
std::unique_ptr<TrainEngine> nativeEngine(const NativeOptions &options);

/// `stlm-run eval` and `generate` with the compiled model of `spec` (the
/// checkpoint's); the same output as their reference twins in
/// train/ReferenceEngine.h (which run instead on a fallback). 0, or 1
/// with a message.
int evaluateNative(const std::string &checkpoint, const ModelSpec &spec,
                   const EvalData &what, const NativeOptions &options,
                   FILE *out, FILE *err);
/// `stlm-run entropy` with the compiled token model of `spec`.
int entropyNative(const EntropyOptions &options, const ModelSpec &spec,
                  const NativeOptions &native, FILE *out, FILE *err);
int generateNative(const std::string &checkpoint, const ModelSpec &spec,
                   const GenerateOptions &options,
                   const NativeOptions &native, FILE *out, FILE *err);

} // namespace stlm

#endif // STLM_TRAIN_NATIVEENGINE_H
