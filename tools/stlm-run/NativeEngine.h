//===- NativeEngine.h - train, evaluate, generate with an artifact -*- C++ -*-===//
//
// `stlm-run train|eval|generate --backend native`: compiles the spec (given,
// or stored in the checkpoint) with stlm-compile into --artifact DIR or a
// cache keyed by the spec and the compiler, and runs the artifact's
// lib<name>.so through the C runtime (stlm/stlm.h).
//
//===----------------------------------------------------------------------===//

#ifndef STLM_TOOLS_STLM_RUN_NATIVEENGINE_H
#define STLM_TOOLS_STLM_RUN_NATIVEENGINE_H

#include "reference/Inference.h"
#include "reference/Trainer.h"

#include <cstdio>
#include <memory>
#include <string>

namespace stlm {

struct NativeOptions {
  std::string specPath;    // what stlm-compile compiles; "": the spec as JSON
  std::string artifactDir; // "" for the cache
  std::string compiler;    // stlm-compile to run
  int threads = 0;         // 0: all cores
  FILE *progress = stderr; // "compiling ..." notes; null for quiet
};

std::unique_ptr<TrainEngine> nativeEngine(const NativeOptions &options);

/// `stlm-run eval` and `generate` with the compiled model of `spec` (the
/// checkpoint's); the same output as their reference twins in
/// reference/Inference.h. 0, or 1 with a message.
int evaluateNative(const std::string &checkpoint, const ModelSpec &spec,
                   const std::string &dataPath, int64_t windows,
                   const NativeOptions &options, FILE *out, FILE *err);
int generateNative(const std::string &checkpoint, const ModelSpec &spec,
                   const GenerateOptions &options,
                   const NativeOptions &native, FILE *out, FILE *err);

/// Why the native path cannot compile `spec` ("" when it can): the same
/// planning and lowering stlm-compile runs, without generating code.
std::string nativeUnsupported(const ModelSpec &spec);

/// The artifact of `spec` is compiled already (in options.artifactDir, or
/// the cache), so the native path can run it without planning it again.
bool nativeArtifactReady(const ModelSpec &spec, const NativeOptions &options);

} // namespace stlm

#endif // STLM_TOOLS_STLM_RUN_NATIVEENGINE_H
