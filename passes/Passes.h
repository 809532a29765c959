//===- Passes.h - stlm passes -----------------------------------*- C++ -*-===//
//
// Declares every stlm pass (see Passes.td) and their registration. The
// sequences the tools run are in passes/Pipelines.h.
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

/// Inlines every func.call in `fn` (repeatedly, through calls of calls) of
/// functions with a body in `model`; fails with a diagnostic on a call of
/// anything else or a recursion.
LogicalResult inlineCalls(func::FuncOp fn, ModelOp model);

/// Rows of a row-major ranked tensor: the product of every dimension but
/// the last (the rows a matmul on it runs).
inline int64_t rowsOf(Value v) {
  int64_t rows = 1;
  for (int64_t d :
       llvm::cast<RankedTensorType>(v.getType()).getShape().drop_back())
    rows *= d;
  return rows;
}

} // namespace stlm
} // namespace mlir

#endif // STLM_PASSES_PASSES_H
