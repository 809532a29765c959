//===- Passes.h - stlm passes -----------------------------------*- C++ -*-===//
//
// Declares every stlm pass (see Passes.td) and their registration.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_PASSES_PASSES_H
#define STLM_PASSES_PASSES_H

#include "dialects/STLM/IR/STLMOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace mlir {
class OpPassManager;
class RewriterBase;
namespace stlm {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

/// Expands `repeat` in place into one copy of its body per layer (see
/// `stlm-unroll-layers`); returns the value that replaced its result.
Value unrollRepeat(RepeatOp repeat, RewriterBase &rewriter);

/// What the native path runs after stlm-autodiff to place every tensor:
/// stlm-add-decode (inference functions, KV caches), stlm-decompose
/// (composite ops as kernel ops), stlm-fuse (matmul epilogues), then
/// stlm-plan-memory.
/// `stlm-compile --emit=plan` and stlm-run's native check both use it.
void addPlanPasses(OpPassManager &pm);

} // namespace stlm
} // namespace mlir

#endif // STLM_PASSES_PASSES_H
