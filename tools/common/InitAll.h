//===- InitAll.h - the one registration point for stlm tools ----*- C++ -*-===//
//
// Every stlm tool and test registers dialects and passes through these two
// functions, so `stlm-opt` can run exactly what `stlm-compile` runs.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_TOOLS_COMMON_INITALL_H
#define STLM_TOOLS_COMMON_INITALL_H

namespace mlir {
class DialectRegistry;
namespace stlm {

/// Adds the stlm dialect and the upstream dialects stlm IR is written with
/// (func, arith, tensor) to `registry`.
void registerAllDialects(DialectRegistry &registry);

/// Registers the stlm passes and pipelines and the upstream passes our
/// pipelines use (canonicalize, cse, ...) with the global pass registry.
/// Idempotent.
void registerAllPasses();

} // namespace stlm
} // namespace mlir

#endif // STLM_TOOLS_COMMON_INITALL_H
