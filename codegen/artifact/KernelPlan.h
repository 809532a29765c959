//===- KernelPlan.h - which kernel runs each op of a training step -*- C++ -*-===//
//
// Maps every op of the planned functions of a model (training step,
// evaluation, inference) to the Halide kernel specialisations that compute
// it — a generator of stlm-kernelgen and its shape parameters — or marks it
// as driver work (scalars, parameter reads and writes, reshapes). Ops with
// no kernel yet are reported, not skipped.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_CODEGEN_ARTIFACT_KERNELPLAN_H
#define STLM_CODEGEN_ARTIFACT_KERNELPLAN_H

#include "dialects/STLM/IR/STLMOps.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace stlm::codegen {

/// One kernel specialisation: `stlm-kernelgen -g generator key=value ...`.
struct KernelSpec {
  std::string generator;
  std::vector<std::pair<std::string, std::string>> params;

  /// "generator k1=v1 k2=v2": equal keys are the same kernel.
  std::string key() const;
};

struct KernelPlan {
  /// Unique kernels in first-use order, and how many ops use each.
  std::vector<KernelSpec> kernels;
  std::vector<int64_t> uses;
  int64_t kernelOps = 0, driverOps = 0;
  /// "<op name>: <why>" for every op with no kernel, counted.
  std::map<std::string, int64_t> unsupported;
  /// KernelSpec::key() -> position in `kernels`.
  std::map<std::string, size_t> index;

  /// "'<model>' has ops the native path cannot compile yet:" and one line
  /// per entry of `unsupported` ("  <op>: <why> (<n> ops)").
  std::string explainUnsupported(const std::string &model) const;
};

/// The kernels of one op, in the order the lowering calls them: empty for
/// driver work, empty with `why` set when no kernel computes it yet.
std::vector<KernelSpec> kernelsFor(mlir::Operation *op,
                                   std::string &why);

/// The functions of a model the native path compiles, in planning order:
/// @grad, @train_step (or @accumulate, @apply), @eval, and the inference
/// functions @logits, @prefill and @decode_step (see stlm-add-decode).
std::vector<mlir::func::FuncOp> compiledFunctions(mlir::stlm::ModelOp model);

/// Plans the compiled functions of `model` (after stlm-autodiff and the
/// plan passes). Kernels are generated for the host; they take any shape.
KernelPlan planKernels(mlir::stlm::ModelOp model);

} // namespace stlm::codegen

#endif // STLM_CODEGEN_ARTIFACT_KERNELPLAN_H
