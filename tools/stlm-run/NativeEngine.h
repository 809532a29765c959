//===- NativeEngine.h - train with a compiled artifact ----------*- C++ -*-===//
//
// `stlm-run train --backend native`: compiles the spec with stlm-compile
// (into --artifact DIR, or a cache keyed by the spec and the compiler) and
// runs the artifact's lib<name>.so through the C runtime (stlm/stlm.h).
//
//===----------------------------------------------------------------------===//

#ifndef STLM_TOOLS_STLM_RUN_NATIVEENGINE_H
#define STLM_TOOLS_STLM_RUN_NATIVEENGINE_H

#include "reference/Trainer.h"

#include <cstdio>
#include <memory>
#include <string>

namespace stlm {

struct NativeOptions {
  std::string specPath;    // what stlm-compile compiles
  std::string artifactDir; // "" for the cache
  std::string compiler;    // stlm-compile to run
  int threads = 0;         // 0: all cores
  FILE *progress = stderr; // "compiling ..." notes; null for quiet
};

std::unique_ptr<TrainEngine> nativeEngine(const NativeOptions &options);

/// Why the native path cannot compile `spec` ("" when it can): the same
/// planning and lowering stlm-compile runs, without generating code.
std::string nativeUnsupported(const ModelSpec &spec);

} // namespace stlm

#endif // STLM_TOOLS_STLM_RUN_NATIVEENGINE_H
